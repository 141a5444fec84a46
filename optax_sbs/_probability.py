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
import math
import re
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _grouping
from optax_sbs import _layers
from optax_sbs import _paths
from optax_sbs import _sharding

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


# Convolutions: Flax's Conv_0 / ConvTranspose_0 / ConvLocal_0, conv1,
# stem_conv, downsample_conv, Mamba's conv1d.
_CONV_PATTERN = re.compile(r'conv', re.IGNORECASE)
# Dense-like projections: Flax's Dense_0 / DenseGeneral_0 / Einsum_0,
# attention's query / key / value / out (Linen MultiHeadDotProductAttention,
# NNX MultiHeadAttention), NNX Linear / LinearGeneral under the usual
# attribute names (qkv, q_proj, o_proj, wq, fc1, mlp, ffn, head, ...).
_DENSE_PATTERN = re.compile(
  r'dense|linear|einsum|attn|attention|qkv|proj|mlp|ffn|feed_?forward|head|logits|'
  r'^(query|key|value|out|q|k|v|o|kv|wq|wk|wv|wo|wi|wi_\d|fc\d*|c_fc|c_proj|c_attn|'
  r'gate|up|down|w\d|lm_head)$',
  re.IGNORECASE,
)
_BIAS_NAMES = frozenset({'bias', 'b', 'bias_hh', 'bias_ih'})


def _ndim(leaf: Any) -> int:
  shape = getattr(leaf, 'shape', None)
  return len(shape) if shape is not None else int(np.ndim(leaf))


def parameter_type(path: tuple[Any, ...], leaf: Any) -> str:
  """Default grouping: the parameter *type* of a leaf, from its path, then its shape.

  The paper normalises gradient magnitudes across layers of the same type
  (convolution, fully connected, bias, batch normalisation), because types
  have different ranges of gradient magnitudes. The type is decided in this
  order (the first rule that applies wins):

  1. ``'norm'``: every parameter of a normalisation layer, whatever its name
     or shape: a path entry (other than the leaf's own name) containing
     ``norm`` (Flax's ``LayerNorm_0``, ``BatchNorm_0``, ``RMSNorm_0``,
     ``GroupNorm_0``, NNX attributes ``norm``, ``final_norm``, Llama's
     ``input_layernorm``), or named ``bn``/``bn1``/``..._bn``, GPT-style
     ``ln_1``/``ln_f``/``ln1``, or ``gn``;
  2. ``'embedding'``: a path entry containing ``embed`` (``Embed_0``,
     ``embedding``, ``tok_embeddings``, ``pos_embedding``) or GPT-2's
     ``wte``/``wpe``;
  3. ``'bias'``: a leaf named ``bias`` (or ``b``), whatever its shape (the
     ``(heads, head_dim)`` biases of attention too), and any other leaf with
     fewer than 2 dimensions;
  4. kernels and other leaves of 2 or more dimensions: ``'conv'`` if a path
     entry contains ``conv`` (``Conv_0``, ``ConvTranspose_0``, ``conv1``,
     ``conv1d``); ``'dense'`` if one names a dense-like projection
     (``Dense_0``, ``DenseGeneral_0``, ``Einsum_0``, attention's
     ``query``/``key``/``value``/``out``, ``qkv``, ``q_proj``, ``mlp``,
     ``fc1``, ``head``, ...); otherwise by shape: ``'dense'`` for 2 dimensions
     and ``'conv'`` for 3 or more.

  Where the default guesses: the last rule. A 3-D kernel under a name it does
  not know (an ``nnx.LinearGeneral`` attribute called ``w_in``, say) is
  grouped ``'conv'``; a 2-D kernel of a convolution not named ``conv`` is
  grouped ``'dense'``. Flax Linen's automatic module names and the names of
  Flax's attention modules are all covered. To decide otherwise, pass your
  own ``group_fn`` that handles your names and falls back on this one::

    def group_fn(path, leaf):
      if 'w_in' in jax.tree_util.keystr(path):
        return 'dense'
      return optax_sbs.parameter_type(path, leaf)

  With stacked layers (``layer_axes``) the leaf given is one slice (a
  ``jax.ShapeDtypeStruct``), so a stacked Dense kernel is ``'dense'``.

  Args:
    path: the leaf's key path, as given by ``jax.tree_util`` (tuple of keys).
    leaf: the leaf, or a ``jax.ShapeDtypeStruct`` (only its number of
      dimensions is used).

  Returns:
    One of ``'norm'``, ``'embedding'``, ``'conv'``, ``'dense'``, ``'bias'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from optax_sbs import parameter_type
    >>> params = {'Conv_0': {'kernel': jnp.zeros((3, 3, 3, 8))},
    ...           'BatchNorm_0': {'scale': jnp.zeros(8)},
    ...           'attn': {'query': {'kernel': jnp.zeros((8, 2, 4)),
    ...                              'bias': jnp.zeros((2, 4))}},
    ...           'Dense_0': {'kernel': jnp.zeros((8, 10)), 'bias': jnp.zeros(10)}}
    >>> {jax.tree_util.keystr(p): parameter_type(p, x)
    ...  for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    ... # doctest: +NORMALIZE_WHITESPACE
    {"['BatchNorm_0']['scale']": 'norm', "['Conv_0']['kernel']": 'conv',
     "['Dense_0']['bias']": 'bias', "['Dense_0']['kernel']": 'dense',
     "['attn']['query']['bias']": 'bias', "['attn']['query']['kernel']": 'dense'}
  """
  names = _paths.names(path)
  if any(_NORM_PATTERN.search(name) for name in names[:-1]):
    return 'norm'
  if any(_EMBED_PATTERN.search(name) for name in names):
    return 'embedding'
  ndim = _ndim(leaf)
  if (names and names[-1].lower() in _BIAS_NAMES) or ndim < 2:
    return 'bias'
  modules = names[:-1] if len(names) > 1 else names
  if any(_CONV_PATTERN.search(name) for name in modules):
    return 'conv'
  if any(_DENSE_PATTERN.search(name) for name in modules):
    return 'dense'
  return 'dense' if ndim == 2 else 'conv'


def single_group(path: tuple[Any, ...], leaf: jax.Array) -> Hashable:
  """Puts every leaf in one group: global statistics over all leaves."""
  del path, leaf
  return 0


def _standardize(x, mean, std):
  """``(x - mean) / std``, or 0 where ``std`` is zero up to rounding noise."""
  degenerate = std <= _STD_RTOL * jnp.abs(mean)
  safe_std = jnp.where(degenerate, jnp.ones_like(std), std)
  return jnp.where(degenerate, jnp.zeros_like(x), (x - mean) / safe_std)


def stack_leaves(
  magnitudes: Sequence[jax.Array], layer_axes: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], jax.Array]:
  """Leaves of one shape, dtype, sharding and stacked axes, stacked.

  The groups are those :func:`_sampling.bernoulli_masks` draws together
  (ordered by first position), so the statistics, the probabilities and the
  masks of a group are all computed from one stacked array.

  Args:
    magnitudes: per leaf, the gradient magnitudes.
    layer_axes: per leaf, its stacked axes.

  Returns:
    Per group of positions, its leaves stacked along a new leading axis.
    Size-0 leaves are left out; a leaf larger than
    ``_grouping.MAX_STACKED_SIZE`` is a group of its own.
  """
  return _grouping.stack_groups(magnitudes, _grouping.stack_keys(magnitudes, layer_axes))


def stacked_statistics(stack: jax.Array, axes: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """Per layer, the mean and population standard deviation of its magnitudes.

  Args:
    stack: leaves of one shape stacked along a new leading axis (size >= 1).
    axes: the leaves' stacked layer axes: the statistics are per slice.

  Returns:
    ``(mean, std)``, computed in two passes for accuracy, each a replicated
    vector with an entry per layer: leaves in order, the slices of a leaf in
    row-major order over its stacked axes.
  """
  over = _layers.stack_reduced_axes(stack.ndim, axes)
  mean = jnp.mean(stack, axis=over, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(stack - mean), axis=over, keepdims=True))
  return tuple(_sharding.replicated(x).reshape(-1) for x in (mean, std))  # type: ignore[return-value]


def _group_index(groups: Sequence[Hashable]) -> tuple[np.ndarray, int]:
  """Per member, the index of its group (groups numbered by first appearance)."""
  index: dict[Hashable, int] = {}
  ids = [index.setdefault(group, len(index)) for group in groups]
  return np.asarray(ids, np.int32), len(index)


def coefficient_vectors(
  magnitudes: Sequence[jax.Array],
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
  layer_axes: Sequence[tuple[int, ...]] | None = None,
  stacks: dict[tuple[int, ...], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per layer, the scalars ``(mean, scale, offset)`` of eq. 21.

  A layer is a leaf, or one slice of a leaf along its stacked axes. For
  layer ``l``, ``p = sigmoid((a - mean[l]) * scale[l] + offset[l])`` with
  ``scale = alpha / sd_l`` (0 for a degenerate ``sd_l``) and
  ``offset = lam * mu~_l``. Everything after the per-layer reductions is
  computed on one vector with an entry per layer, so the compiled program
  has a handful of scalar kernels however many leaves there are.

  Args:
    magnitudes: per leaf, the gradient magnitudes ``a`` (float).
    groups: per leaf, the (hashable) group its layers' global statistics
      use.
    alpha: local slope (eq. 18).
    lam: global slope (eq. 20).
    global_normalization: ``'std'`` (eq. 19) or ``'mean'``, see the module
      docstring.
    layer_axes: per leaf, its stacked axes (``()`` for an ordinary leaf);
      ``None`` for none.
    stacks: the leaves stacked by :func:`stack_leaves`, or ``None`` to stack
      them here. The statistics of a group are row reductions of its stack.

  Returns:
    Three vectors with an entry per layer, leaves in order and the slices of
    a stacked leaf in row-major order over its stacked axes.
  """
  if global_normalization not in GLOBAL_NORMALIZATIONS:
    raise ValueError(f"global_normalization must be 'std' or 'mean', got {global_normalization!r}.")
  if not magnitudes:  # an empty tree (no leaves, or only None leaves)
    empty = jnp.zeros((0,), jnp.float32)
    return empty, empty, empty
  if layer_axes is None:
    layer_axes = [()] * len(magnitudes)
  dtype = jnp.result_type(*magnitudes)
  stat_shapes = [
    _layers.stat_shape(a.shape, ax) if ax else () for a, ax in zip(magnitudes, layer_axes)
  ]
  counts = [math.prod(shape) for shape in stat_shapes]
  if stacks is None:
    stacks = stack_leaves(magnitudes, layer_axes)
  stats = {group: stacked_statistics(a, layer_axes[group[0]]) for group, a in stacks.items()}
  means, stds = (
    _grouping.in_position_order([(g, s[i]) for g, s in stats.items()], counts, dtype)
    for i in (0, 1)
  )

  # Global statistics (eq. 19): element-count-weighted over each group.
  group_of, num_groups = _group_index([g for g, n in zip(groups, counts) for _ in range(n)])
  sizes = np.asarray(
    [a.size // n if n else 0 for a, n in zip(magnitudes, counts) for _ in range(n)], np.float64
  )
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


def stacked_probabilities(
  magnitudes: Sequence[jax.Array],
  vectors: tuple[jax.Array, jax.Array, jax.Array],
  layer_axes: Sequence[tuple[int, ...]],
  stacks: dict[tuple[int, ...], jax.Array] | None = None,
) -> Callable[[list[int]], jax.Array]:
  """``p`` of eq. 21 for leaves of one shape, stacked along a new leading axis.

  Args:
    magnitudes: per leaf, the gradient magnitudes.
    vectors: ``(mean, scale, offset)`` per layer, from
      :func:`coefficient_vectors`.
    layer_axes: per leaf, its stacked axes.
    stacks: the leaves stacked by :func:`stack_leaves` (a group's stack is
      used as it is), or ``None``.

  Returns:
    A callable: given the positions of leaves of one shape and stacked axes,
    their probabilities as one array of shape ``(len(positions), *shape)``,
    each row equal to :func:`probability_from_coefficients` of its leaf. The
    coefficients of all rows come from one gather.
  """
  counts = [_layers.num_slices(a.shape, ax) if ax else 1 for a, ax in zip(magnitudes, layer_axes)]
  starts = np.cumsum([0] + counts[:-1]).tolist()

  def probabilities(positions: list[int]) -> jax.Array:
    first = magnitudes[positions[0]]
    ax = layer_axes[positions[0]]
    shape = _layers.stat_shape(first.shape, ax) if ax else (1,) * first.ndim
    index = np.asarray(
      [np.arange(starts[i], starts[i] + counts[i]) for i in positions], np.int32
    ).reshape((len(positions), *shape))
    a = stacks.get(tuple(positions)) if stacks else None
    if a is None:
      a = jnp.stack([magnitudes[i] for i in positions])
    coefficients = [_sharding.replicated(v)[index] for v in vectors]
    sharding = _sharding.keep_axes(
      _sharding.explicit_sharding(a), (0, *(d + 1 for d in ax)), a.ndim
    )
    if sharding is not None:
      coefficients = [jax.sharding.reshard(c, sharding) for c in coefficients]
    return probability_from_coefficients(a, *coefficients)

  return probabilities


def update_probability(
  magnitudes: Sequence[jax.Array],
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
  layer_axes: Sequence[tuple[int, ...]] | None = None,
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
    layer_axes: per leaf, the axes that index stacked layers (``()`` for an
      ordinary leaf), as the ``layer_axes`` callable of
      :func:`stochastic_batch_size` returns them; ``None`` for none. Every
      slice along them is a layer: its own local statistics and its own
      member of its group's global statistics, weighted by its size.

  Returns:
    Per leaf, ``p = sigmoid(alpha * v + lam * mu~)`` with the leaf's shape.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> a = jnp.array([0.0, 1.0, 2.0])
    >>> p = optax_sbs.update_probability([a], ['conv'], alpha=1.0, lam=0.0)
    >>> [round(float(x), 3) for x in p[0]]
    [0.227, 0.5, 0.773]
  """
  if layer_axes is not None:
    if len(layer_axes) != len(magnitudes):
      raise ValueError(
        f'update_probability: layer_axes has {len(layer_axes)} entries for '
        f'{len(magnitudes)} leaves.'
      )
    layer_axes = [
      _layers.normalize_axes(ax, tuple(a.shape), f'leaf {i}', 'update_probability')
      for i, (a, ax) in enumerate(zip(magnitudes, layer_axes))
    ]
  if not magnitudes:
    return []
  if layer_axes is None:
    layer_axes = [()] * len(magnitudes)
  vectors = coefficient_vectors(magnitudes, groups, alpha, lam, global_normalization, layer_axes)
  means, scales, offsets = (_layers.split_slices(v, magnitudes, layer_axes) for v in vectors)
  return [
    probability_from_coefficients(a, m, sc, o)
    for a, m, sc, o in zip(magnitudes, means, scales, offsets)
  ]
