"""Adaptive update probabilities of the paper's §4.3 (eqs. 16-21).

For every leaf ``l`` (a "layer") with gradient magnitudes ``a_j``:

* local (eq. 17): ``v_j = (a_j - mu_l) / sd_l`` with the leaf's mean ``mu_l``
  and population standard deviation ``sd_l``;
* global (eq. 19): ``mu~_l = (mu_l - M) / S`` where ``M`` and ``S`` are the
  element-count-weighted mean and standard deviation of ``mu_l`` over the
  leaves of the same parameter group (``global_normalization='std'``, the
  paper's); or ``mu~_l = (mu_l - M) / M``, the leaf's mean magnitude relative
  to its group's (``'mean'``, ours);
* combined (eq. 21): ``p_j = sigmoid(alpha * v_j + lam * mu~_l)``.

A standard deviation that is zero, or so small against its mean that it is
only rounding noise (``sd <= 1e-5 * |mean|``), counts as zero and the
normalised value is 0 there. That keeps frozen (all-zero) layers, scalar
leaves, single-leaf groups and equal layers at ``p = sigmoid(0) = 1/2`` for
the affected term instead of dividing by zero or amplifying rounding errors.

Small groups make eq. 19 degenerate. Standardising a handful of values
stretches any spread to unit size: with two leaves in a group, ``mu~`` is
about +-1 whatever their difference, so leaves whose mean magnitudes are 1.0
and 1.001 get ``p`` = 0.99 and 0.03 at ``lam = -4`` (one is all but frozen).
Weighting by element count does not cure it: a group of 432, 4,608 and 18,432
elements in which the small leaf's mean is 5% above the others' gives that
leaf ``mu~`` = 7.3 and ``p`` = 2e-13 at ``lam = -4``: it is never updated.
``'mean'`` measures the difference itself: 5% above the group's mean gives
``mu~`` = 0.049 and ``p`` = sigmoid(-0.2) = 0.45 instead.
"""

from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Sequence
import re
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

# Relative size below which a standard deviation is treated as zero.
_STD_RTOL = 1e-5

GroupFn = Callable[[tuple[Any, ...], jax.Array], Hashable]
GlobalNormalization = Literal['std', 'mean']
GLOBAL_NORMALIZATIONS = ('std', 'mean')

# Normalisation layers: Flax's BatchNorm_0 / LayerNorm_0 / RMSNorm, Haiku's
# layer_norm, Llama's input_layernorm, torchvision-style bn1 / conv_bn, and
# GPT-style ln_1 / ln_2 / ln_f (also gn for group norm).
_NORM_PATTERN = re.compile(r'norm|(^|[_./])(bn|ln|gn)(_?(\d+|f))?($|[_./])', re.IGNORECASE)
# Embedding tables: Flax's Embed_0 / embedding, tok_embeddings, GPT-2's wte
# (tokens) and wpe (positions).
_EMBED_PATTERN = re.compile(r'embed|(^|[_./])(wte|wpe)($|[_./])', re.IGNORECASE)


def key_name(entry: Any) -> str:
  """The name of one key-path entry (dict key, attribute name or index)."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def parameter_type(path: tuple[Any, ...], leaf: jax.Array) -> str:
  """Default grouping: the parameter *type* of a leaf, from its path and shape.

  The paper normalises gradient magnitudes across layers of the same type
  (convolution, fully connected, bias, batch normalisation), because types
  have different ranges of gradient magnitudes. The type is inferred as:

  * ``'norm'``: any leaf under a path entry that names a normalisation layer
    (contains ``norm``, case-insensitive, e.g. Flax's ``BatchNorm_0``,
    ``LayerNorm_0``, ``RMSNorm``, Haiku's ``layer_norm``; or is
    ``bn``/``bn1``/``..._bn``, GPT-style ``ln_1``/``ln_f``/``ln1``, or
    ``gn``), whatever its shape;
  * ``'embedding'``: a leaf whose path mentions ``embed`` or is GPT-2's
    ``wte``/``wpe``;
  * ``'conv'``: a leaf with 3 or more dimensions (convolution kernels);
  * ``'dense'``: a 2-D leaf (fully connected kernels);
  * ``'bias'``: every other leaf (1-D and scalar leaves).

  Args:
    path: the leaf's key path, as given by ``jax.tree_util`` (tuple of keys).
    leaf: the leaf (only its ``ndim`` is used).

  Returns:
    One of ``'norm'``, ``'embedding'``, ``'conv'``, ``'dense'``, ``'bias'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from optax_sbs import parameter_type
    >>> params = {'Conv_0': {'kernel': jnp.zeros((3, 3, 3, 8))},
    ...           'BatchNorm_0': {'scale': jnp.zeros(8)},
    ...           'Dense_0': {'kernel': jnp.zeros((8, 10)), 'bias': jnp.zeros(10)}}
    >>> {jax.tree_util.keystr(p): parameter_type(p, x)
    ...  for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    ... # doctest: +NORMALIZE_WHITESPACE
    {"['BatchNorm_0']['scale']": 'norm', "['Conv_0']['kernel']": 'conv',
     "['Dense_0']['bias']": 'bias', "['Dense_0']['kernel']": 'dense'}
  """
  names = [key_name(entry) for entry in path]
  if any(_NORM_PATTERN.search(name) for name in names[:-1]):
    return 'norm'
  if any(_EMBED_PATTERN.search(name) for name in names):
    return 'embedding'
  ndim = jnp.ndim(leaf)
  if ndim >= 3:
    return 'conv'
  if ndim == 2:
    return 'dense'
  return 'bias'


def single_group(path: tuple[Any, ...], leaf: jax.Array) -> Hashable:
  """Puts every leaf in one group: global statistics over all leaves."""
  del path, leaf
  return 0


def _standardize(x, mean, std):
  """``(x - mean) / std``, or 0 where ``std`` is zero up to rounding noise."""
  degenerate = std <= _STD_RTOL * jnp.abs(mean)
  safe_std = jnp.where(degenerate, jnp.ones_like(std), std)
  return jnp.where(degenerate, jnp.zeros_like(x), (x - mean) / safe_std)


def layer_statistics(magnitude: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and population standard deviation of one leaf's magnitudes.

  Args:
    magnitude: non-negative array (any shape, size >= 1).

  Returns:
    ``(mean, std)`` as scalars, computed in two passes for accuracy.
  """
  mean = jnp.mean(magnitude)
  std = jnp.sqrt(jnp.mean(jnp.square(magnitude - mean)))
  return mean, std


def _group_index(groups: Sequence[Hashable]) -> tuple[np.ndarray, int]:
  """Per leaf, the index of its group (groups numbered by first appearance)."""
  index: dict[Hashable, int] = {}
  ids = [index.setdefault(group, len(index)) for group in groups]
  return np.asarray(ids, np.int32), len(index)


def probability_coefficients(
  magnitudes: Sequence[jax.Array],
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-leaf scalars ``(mean, scale, offset)`` of eq. 21.

  For leaf ``l``, ``p = sigmoid((a - mean[l]) * scale[l] + offset[l])`` with
  ``scale = alpha / sd_l`` (0 for a degenerate ``sd_l``) and
  ``offset = lam * mu~_l``. Everything after the per-leaf reductions is
  computed on vectors of length ``len(magnitudes)``, so the compiled program
  has a handful of scalar kernels however many leaves there are.

  Args:
    magnitudes: per leaf, the gradient magnitudes ``a`` (float).
    groups: per leaf, the (hashable) group its global statistics use.
    alpha: local slope (eq. 18).
    lam: global slope (eq. 20).
    global_normalization: ``'std'`` (eq. 19) or ``'mean'``, see the module
      docstring.

  Returns:
    Three float vectors of length ``len(magnitudes)``.
  """
  if global_normalization not in GLOBAL_NORMALIZATIONS:
    raise ValueError(f"global_normalization must be 'std' or 'mean', got {global_normalization!r}.")
  if not magnitudes:  # an empty tree (no leaves, or only None leaves)
    empty = jnp.zeros((0,), jnp.float32)
    return empty, empty, empty
  dtype = jnp.result_type(*magnitudes)
  stats = [layer_statistics(a) if a.size else (jnp.zeros((), a.dtype),) * 2 for a in magnitudes]
  means = jnp.stack([m for m, _ in stats]).astype(dtype)
  stds = jnp.stack([s for _, s in stats]).astype(dtype)

  # Global statistics (eq. 19): element-count-weighted over each group.
  group_of, num_groups = _group_index(groups)
  sizes = np.asarray([a.size for a in magnitudes], np.float64)
  totals = np.zeros(num_groups)
  np.add.at(totals, group_of, sizes)
  weights = np.divide(
    sizes,
    totals[group_of],
    out=np.zeros_like(sizes),
    where=totals[group_of] > 0,
  ).astype(dtype)

  def group_sum(x):
    return jax.ops.segment_sum(weights * x, group_of, num_groups)[group_of]

  group_mean = group_sum(means)
  if global_normalization == 'std':
    group_std = jnp.sqrt(group_sum(jnp.square(means - group_mean)))
    mu_tilde = _standardize(means, group_mean, group_std)
  else:  # relative to the group's mean; 0 for a group without gradient
    empty = group_mean <= 0
    mu_tilde = jnp.where(empty, 0, (means - group_mean) / jnp.where(empty, 1, group_mean))

  degenerate = stds <= _STD_RTOL * jnp.abs(means)
  scale = jnp.where(degenerate, 0, alpha / jnp.where(degenerate, 1, stds)).astype(dtype)
  offset = (lam * mu_tilde).astype(dtype)
  return means, scale, offset


def probability_from_coefficients(
  magnitude: jax.Array,
  mean: jax.Array,
  scale: jax.Array,
  offset: jax.Array,
) -> jax.Array:
  """``sigmoid((magnitude - mean) * scale + offset)`` in the magnitude's dtype."""
  z = (magnitude - mean) * scale + offset
  return jax.nn.sigmoid(z).astype(magnitude.dtype)


def update_probability(
  magnitudes: Sequence[jax.Array],
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
) -> list[jax.Array]:
  """Combined adaptive update probability (eq. 21) for a list of leaves.

  Args:
    magnitudes: per leaf, the gradient magnitudes ``a = |g~|`` (float).
    groups: per leaf, the (hashable) group its global statistics use.
    alpha: local slope (eq. 18); 0 disables the local term.
    lam: global slope (eq. 20); 0 disables the global term.
    global_normalization: how a leaf's mean magnitude ``mu_l`` is compared
      with its group's (element-count-weighted) mean ``M``: ``'std'`` (the
      paper's eq. 19, ``(mu_l - M) / S`` with the group's standard deviation
      ``S``) or ``'mean'`` (``(mu_l - M) / M``, relative). ``'std'`` turns
      any spread into unit size in small groups, see the module docstring.

  Returns:
    Per leaf, ``p = sigmoid(alpha * v + lam * mu~)`` with the leaf's shape.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> a = jnp.array([0.0, 1.0, 2.0])
    >>> p = optax_sbs.update_probability([a], ['conv'], alpha=1.0, lam=0.0)
    >>> [round(float(x), 3) for x in p[0]]
    [0.227, 0.5, 0.773]
  """
  means, scales, offsets = probability_coefficients(
    magnitudes, groups, alpha, lam, global_normalization
  )
  return [
    probability_from_coefficients(a, means[i], scales[i], offsets[i])
    for i, a in enumerate(magnitudes)
  ]
