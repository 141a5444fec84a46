"""Adaptive update probabilities of the paper's §4.3 (eqs. 16-21).

For every leaf ``l`` (a "layer") with gradient magnitudes ``a_j``:

* local (eq. 17): ``v_j = (a_j - mu_l) / sd_l`` with the leaf's mean ``mu_l``
  and population standard deviation ``sd_l``;
* global (eq. 19): ``mu~_l = (mu_l - M) / S`` where ``M`` and ``S`` are the
  element-count-weighted mean and standard deviation of ``mu_l`` over the
  leaves of the same parameter group;
* combined (eq. 21): ``p_j = sigmoid(alpha * v_j + lam * mu~_l)``.

A standard deviation that is zero, or so small against its mean that it is
only rounding noise (``sd <= 1e-5 * |mean|``), counts as zero and the
normalised value is 0 there. That keeps frozen (all-zero) layers, scalar
leaves, single-leaf groups and equal layers at ``p = sigmoid(0) = 1/2`` for
the affected term instead of dividing by zero or amplifying rounding errors.
"""

from collections.abc import Callable, Hashable, Sequence
import re
from typing import Any

import jax
import jax.numpy as jnp

# Relative size below which a standard deviation is treated as zero.
_STD_RTOL = 1e-5

GroupFn = Callable[[tuple[Any, ...], jax.Array], Hashable]

_NORM_PATTERN = re.compile(r'norm|(^|_)bn\d*($|_)', re.IGNORECASE)
_EMBED_PATTERN = re.compile(r'embed', re.IGNORECASE)


def _key_name(entry: Any) -> str:
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
    (contains ``norm``, case-insensitive, e.g. Flax's ``BatchNorm_0`` or
    ``LayerNorm``; or is ``bn``/``bn1``/``..._bn``), whatever its shape;
  * ``'embedding'``: a leaf whose path mentions ``embed``;
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
  names = [_key_name(entry) for entry in path]
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


def update_probability(
    magnitudes: Sequence[jax.Array],
    groups: Sequence[Hashable],
    alpha: jax.typing.ArrayLike,
    lam: jax.typing.ArrayLike,
) -> list[jax.Array]:
  """Combined adaptive update probability (eq. 21) for a list of leaves.

  Args:
    magnitudes: per leaf, the gradient magnitudes ``a = |g~|`` (float).
    groups: per leaf, the (hashable) group its global statistics use.
    alpha: local slope (eq. 18); 0 disables the local term.
    lam: global slope (eq. 20); 0 disables the global term.

  Returns:
    Per leaf, ``p = sigmoid(alpha * v + lam * mu~)`` with the leaf's shape.
  """
  stats = []
  for a in magnitudes:
    if a.size == 0:
      zero = jnp.zeros((), a.dtype)
      stats.append((zero, zero))
    else:
      stats.append(layer_statistics(a))

  # Global statistics: element-count-weighted over the leaves of each group.
  mu_tilde = [None] * len(magnitudes)
  members: dict[Hashable, list[int]] = {}
  for i, group in enumerate(groups):
    members.setdefault(group, []).append(i)
  for index in members.values():
    sizes = [magnitudes[i].size for i in index]
    total = sum(sizes)
    means = [stats[i][0] for i in index]
    if total == 0:
      for i in index:
        mu_tilde[i] = jnp.zeros((), magnitudes[i].dtype)
      continue
    weights = [n / total for n in sizes]
    group_mean = sum(w * m for w, m in zip(weights, means))
    group_std = jnp.sqrt(
        sum(w * jnp.square(m - group_mean) for w, m in zip(weights, means))
    )
    for i, m in zip(index, means):
      mu_tilde[i] = _standardize(m, group_mean, group_std)

  probabilities = []
  for a, (mean, std), mt in zip(magnitudes, stats, mu_tilde):
    v = _standardize(a, mean, std)
    probabilities.append(jax.nn.sigmoid(alpha * v + lam * mt).astype(a.dtype))
  return probabilities
