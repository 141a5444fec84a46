"""The numerics of the adaptive update probability: the paper's §4.3 (eqs. 16-21).

Functions of the step's plan (``_plan``) and arrays, returning arrays. For
every layer ``l`` (a leaf, or a slice of a stacked leaf) with gradient
magnitudes ``a_j``:

* local (eq. 17): ``v_j = (a_j - mu_l) / sd_l`` with the layer's mean ``mu_l``
  and population standard deviation ``sd_l``;
* global (eq. 19): ``mu~_l = (mu_l - M) / S`` where ``M`` and ``S`` are the
  element-count-weighted mean and standard deviation of ``mu_l`` over the
  layers of the same parameter group (``global_normalization='std'``, the
  paper's); or ``mu~_l = (mu_l - M) / M``, the layer's mean magnitude relative
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

from collections.abc import Hashable
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _bundles
from optax_sbs import _layers
from optax_sbs import _plan
from optax_sbs import _sharding

# Relative size below which a standard deviation is treated as zero.
_STD_RTOL = 1e-5

GlobalNormalization = Literal['std', 'mean']
GLOBAL_NORMALIZATIONS = ('std', 'mean')


def _standardize(x, mean, std):
  """``(x - mean) / std``, or 0 where ``std`` is zero up to rounding noise."""
  degenerate = std <= _STD_RTOL * jnp.abs(mean)
  safe_std = jnp.where(degenerate, jnp.ones_like(std), std)
  return jnp.where(degenerate, jnp.zeros_like(x), (x - mean) / safe_std)


def bundle_statistics(
  joined: jax.Array, layer_axes: tuple[int, ...] = ()
) -> tuple[jax.Array, jax.Array]:
  """Per layer of a bundle, the mean and population standard deviation of its magnitudes.

  Args:
    joined: the bundle's magnitudes, joined along a new leading axis.
    layer_axes: the bundle's layer axes: the statistics are per layer.

  Returns:
    ``(mean, std)``, computed in two passes for accuracy, each a replicated
    vector with an entry per layer: leaves in order, the layers of a leaf in
    row-major order over its layer axes.
  """
  over = _bundles.row_reduced_axes(joined.ndim, layer_axes)
  mean = jnp.mean(joined, axis=over, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(joined - mean), axis=over, keepdims=True))
  return tuple(_sharding.replicated(x).reshape(-1) for x in (mean, std))  # type: ignore[return-value]


def layer_statistics(plan: _plan.Plan, joined: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Per layer of the plan, the mean and standard deviation of its magnitudes.

  Args:
    plan: the step's plan.
    joined: per bundle of the plan, its magnitudes joined (``_bundles.join``).

  Returns:
    Two vectors with an entry per layer, in the plan's order (0 for the
    layers of size-0 leaves).
  """
  dtype = jnp.result_type(*(leaf.dtype for leaf in plan.leaves)) if plan.leaves else jnp.float32
  stats = [bundle_statistics(a, plan.leaves[b[0]].layer_axes) for b, a in zip(plan.bundles, joined)]
  counts = [leaf.num_layers for leaf in plan.leaves]
  means, stds = (
    _bundles.in_position_order([(b, s[i]) for b, s in zip(plan.bundles, stats)], counts, dtype)
    for i in (0, 1)
  )
  return means, stds


def _group_index(groups: Sequence[Hashable]) -> tuple[np.ndarray, int]:
  """Per member, the index of its group (groups numbered by first appearance)."""
  index: dict[Hashable, int] = {}
  ids = [index.setdefault(group, len(index)) for group in groups]
  return np.asarray(ids, np.int32), len(index)


def coefficient_vectors(
  plan: _plan.Plan,
  means: jax.Array,
  stds: jax.Array,
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per layer, the scalars ``(mean, scale, offset)`` of eq. 21.

  For layer ``l``, ``p = sigmoid((a - mean[l]) * scale[l] + offset[l])`` with
  ``scale = alpha / sd_l`` (0 for a degenerate ``sd_l``) and
  ``offset = lam * mu~_l``. Everything after the per-layer reductions is
  computed on one vector with an entry per layer, so the compiled program
  has a handful of scalar kernels however many leaves there are.

  Args:
    plan: the step's plan.
    means: per layer, the mean magnitude (:func:`layer_statistics`).
    stds: per layer, the standard deviation of the magnitudes.
    groups: per leaf, the (hashable) group its layers' global statistics use.
    alpha: local slope (eq. 18).
    lam: global slope (eq. 20).
    global_normalization: ``'std'`` (eq. 19) or ``'mean'``, see the module
      docstring.

  Returns:
    Three vectors with an entry per layer, in the plan's order.
  """
  if global_normalization not in GLOBAL_NORMALIZATIONS:
    raise ValueError(f"global_normalization must be 'std' or 'mean', got {global_normalization!r}.")
  dtype = means.dtype
  # Global statistics (eq. 19): element-count-weighted over each group.
  counts = [leaf.num_layers for leaf in plan.leaves]
  group_of, num_groups = _group_index([g for g, n in zip(groups, counts) for _ in range(n)])
  sizes = np.asarray(
    [leaf.size // n if n else 0 for leaf, n in zip(plan.leaves, counts) for _ in range(n)],
    np.float64,
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


def bundle_probabilities(
  plan: _plan.Plan,
  joined: Sequence[jax.Array],
  vectors: tuple[jax.Array, jax.Array, jax.Array],
) -> list[jax.Array]:
  """``p`` of eq. 21 per bundle, joined like its magnitudes.

  Args:
    plan: the step's plan.
    joined: per bundle, its magnitudes joined along a new leading axis.
    vectors: ``(mean, scale, offset)`` per layer (:func:`coefficient_vectors`).

  Returns:
    Per bundle, ``p`` of the shape of its joined magnitudes: row ``r`` is
    :func:`probability_from_coefficients` of the bundle's ``r``-th leaf. The
    coefficients of all rows come from one gather.
  """
  out = []
  for positions, a in zip(plan.bundles, joined):
    first = plan.leaves[positions[0]]
    shape = first.stats_shape or (1,) * len(first.shape)
    index = np.asarray(
      [
        np.arange(plan.leaves[i].first_layer, plan.leaves[i].first_layer + first.num_layers)
        for i in positions
      ],
      np.int32,
    ).reshape((len(positions), *shape))
    coefficients = [_sharding.replicated(v)[index] for v in vectors]
    sharding = _sharding.keep_axes(
      _sharding.explicit_sharding(a), (0, *(d + 1 for d in first.layer_axes)), a.ndim
    )
    if sharding is not None:
      coefficients = [jax.sharding.reshard(c, sharding) for c in coefficients]
    out.append(probability_from_coefficients(a, *coefficients))
  return out


def update_probability(
  magnitudes: Sequence[jax.Array],
  groups: Sequence[Hashable],
  alpha: jax.typing.ArrayLike,
  lam: jax.typing.ArrayLike,
  global_normalization: GlobalNormalization = 'std',
  layer_axes: _layers.LayerAxesFn | Sequence[tuple[int, ...]] | None = None,
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
    layer_axes: the axes of each leaf that index stacked layers, as the
      transformations take them: a callable ``(path, leaf) -> tuple[int,
      ...]`` (called with the leaf's position in ``magnitudes`` as its path,
      ``(jax.tree_util.SequenceKey(i),)``), or a list with a tuple per leaf
      (``()`` for an ordinary leaf); ``None`` for none. Every slice along them
      is a layer: its own local statistics and its own member of its group's
      global statistics, weighted by its size.

  Returns:
    Per leaf, ``p = sigmoid(alpha * v + lam * mu~)`` with the leaf's shape.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> a = jnp.array([0.0, 1.0, 2.0])
    >>> p = optax_sbs.update_probability([a], ['conv'], alpha=1.0, lam=0.0)
    >>> [round(float(x), 3) for x in p[0]]
    [0.227, 0.5, 0.773]
  """
  if callable(layer_axes):
    flat = [((jax.tree_util.SequenceKey(i),), a) for i, a in enumerate(magnitudes)]
    layer_axes = [_layers.leaf_axes(layer_axes, p, a, 'update_probability') for p, a in flat]
  elif layer_axes is not None:
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
  plan = _plan.build(magnitudes, layer_axes)
  means, stds = layer_statistics(plan, _bundles.join(magnitudes, plan.bundles))
  vectors = coefficient_vectors(plan, means, stds, groups, alpha, lam, global_normalization)
  per_leaf = [_layers.split_slices(v, magnitudes, layer_axes) for v in vectors]
  return [probability_from_coefficients(a, *c) for a, *c in zip(magnitudes, *per_leaf)]
