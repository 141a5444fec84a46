"""Bernoulli update masks ``chi ~ p`` drawn from the optimizer's key.

Every step the state key is split into the key carried to the next step and
a step key. The step key defines one stream of uniform numbers in [0, 1),
one per parameter element, leaves concatenated in the order of
``jax.tree.leaves``; ``chi = u < p``. The stream is exactly
``jax.random.uniform(step_key, (total,))``: for threefry keys (JAX's default)
it is computed per leaf by the unrolled generator in ``_threefry`` (bit for
bit the same numbers, ~15x faster on XLA:CPU, nothing materialised across
leaves); for other key implementations by ``jax.random.uniform`` itself.
The masks are a pure function of the key and the leaf shapes: replicas that
share the key draw the same masks, and the counter-based stream does not
depend on how the leaves are sharded. Each mask is created sharded like its
leaf (in JAX's explicit sharding mode too), so no device draws the bits of
another device's shard. The stream has ``2**64`` elements: a model of more
than ``2**32`` parameters fills in the counter's high word, as JAX does.

The places in the stream are the plan's (``_plan``): one per block, leaves
in order, a leaf's blocks in row-major order over its block grid (with
``granularity='leaf'`` and stacked layers: over its layer axes).
"""

from collections.abc import Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp

from optax_sbs import _bundles
from optax_sbs import _plan
from optax_sbs import _sharding
from optax_sbs import _threefry


def split_step_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns ``(next_state_key, step_key)``."""
  next_key, step_key = jax.random.split(key)
  return next_key, step_key


def _joined_sharding(sharding: Any) -> Any:
  """The sharding of leaves of ``sharding`` joined along a new leading axis."""
  if sharding is None:
    return None
  spec = jax.sharding.PartitionSpec(None, *sharding.spec)
  return jax.sharding.NamedSharding(sharding.mesh, spec)


def masks(
  plan: _plan.Plan,
  step_key: jax.Array,
  probability: jax.typing.ArrayLike | None = None,
  bundle_probabilities: Sequence[jax.Array] | None = None,
) -> list[jax.Array]:
  """Per leaf, a boolean mask of its block grid with ``P(True) = p`` per block.

  Give either one ``probability`` for every block (the masks of a block
  bundle are drawn in one call), or, for a plan of elements,
  ``bundle_probabilities``: per bundle of the plan, ``p`` joined like its
  leaves (the bundle's masks are drawn in one call, compared with its ``p``).
  The numbers are those of each leaf drawn alone; ``p = 1`` gives all True
  and ``p = 0`` all False, exactly (uniforms lie in ``[0, 1)``).

  Args:
    plan: the step's plan.
    step_key: the key of this step.
    probability: ``p`` for every block (a scalar).
    bundle_probabilities: per bundle of the plan, its joined ``p``.

  Returns:
    Per leaf, a boolean array of its block grid's shape.
  """
  return _draw(plan, step_key, probability, bundle_probabilities, materialize_alone=False)[0]


def masks_and_kept_fractions(
  plan: _plan.Plan,
  step_key: jax.Array,
  probability: jax.typing.ArrayLike,
  shapes: Sequence[tuple[int, ...]],
  layer_axes: Sequence[tuple],
  with_fractions: bool = True,
) -> tuple[list[jax.Array], jax.Array | None]:
  """:func:`masks` with one ``probability``, and the fraction of each layer's
  elements they keep (as :func:`kept_fractions`; None without
  ``with_fractions``).

  The fractions are reduced from the masks as drawn (a bundle's joined
  masks, a large leaf's mask computed once in its own kernel), so the
  generator runs once per element and nothing is stacked again.

  Args:
    plan: the step's plan.
    step_key: the key of this step.
    probability: ``p`` for every block (a scalar).
    shapes: per leaf, its shape.
    layer_axes: per leaf, its layer axes.
    with_fractions: whether to count the kept fractions.

  Returns:
    The masks, per leaf, and the kept fractions, one float32 per layer.
  """
  if not with_fractions:
    return masks(plan, step_key, probability), None
  out, drawn = _draw(plan, step_key, probability, None, materialize_alone=True)
  if drawn is None:  # not threefry: one stream sliced per leaf
    return out, kept_fractions(out, shapes, layer_axes)
  parts = []
  alone: list[int] = []
  empty = {i for i, shape in enumerate(shapes) if math.prod(shape) == 0}  # no fraction: 0
  for positions, joined in drawn:
    if empty.intersection(positions):
      alone.extend(i for i in positions if i not in empty)
      continue
    axes = {tuple(layer_axes[i]) for i in positions}
    ranks = {len(shapes[i]) for i in positions}
    if len(axes) != 1 or (axes != {()} and ranks != {joined.ndim - 1}):
      alone.extend(positions)
      continue
    over = _bundles.row_reduced_axes(joined.ndim, axes.pop())
    kept = _bundles.kept_fraction(joined, over)
    parts.append((positions, _sharding.replicated(kept).reshape(-1)))
  if alone:
    rest = kept_fractions(
      [out[i] for i in alone], [shapes[i] for i in alone], [layer_axes[i] for i in alone]
    )
    parts.append((tuple(alone), rest))
  return out, _bundles.in_position_order(parts, _layer_counts(shapes, layer_axes), jnp.float32)


def _draw(plan, step_key, probability, bundle_probabilities, materialize_alone):
  """The masks of :func:`masks`, and per bundle drawn in one call its
  positions and joined masks (None for keys that are not threefry). With
  ``materialize_alone`` a bundle of one leaf's mask is computed once, in its
  own kernel, for more than one reader."""
  leaves = plan.leaves
  out: list[Any] = [jnp.zeros(leaf.block_shape, bool) for leaf in leaves]
  drawn: list[tuple[tuple[int, ...], jax.Array]] = []
  if plan.num_blocks == 0:
    return out, drawn
  bundles = plan.block_bundles if bundle_probabilities is None else plan.bundles
  p_of: list[Any] = (
    [probability] * len(bundles) if bundle_probabilities is None else list(bundle_probabilities)
  )

  def row_p(b: int, row: int) -> Any:
    return p_of[b] if bundle_probabilities is None else p_of[b][row]

  if not _threefry.is_threefry(step_key):
    stream = jax.random.uniform(step_key, (plan.num_blocks,), jnp.float32)
    for b, positions in enumerate(bundles):
      for row, i in enumerate(positions):
        leaf = leaves[i]
        size = int(jnp.size(out[i]))
        u = stream[leaf.offset : leaf.offset + size].reshape(leaf.block_shape)
        if leaf.block_sharding is not None:
          u = jax.sharding.reshard(u, leaf.block_sharding)
        out[i] = u < row_p(b, row)
    return out, None

  def uniform(offset, shape, sharding):
    return _threefry.uniform_from_bits(_threefry.random_bits(step_key, offset, shape, sharding))

  largest = max((len(b) for b in bundles if len(b) > 1), default=0)
  rows = _bundles.row_indices(largest, step_key)
  for b, positions in enumerate(bundles):
    first = leaves[positions[0]]
    if len(positions) == 1:
      chi = uniform(first.offset, first.block_shape, first.block_sharding) < row_p(b, 0)
      if materialize_alone:
        chi = _bundles.materialize(chi)
      out[positions[0]] = chi
      drawn.append((positions, chi[None]))
      continue
    offsets = [leaves[i].offset for i in positions]
    u = uniform(offsets, first.block_shape, _joined_sharding(first.block_sharding))
    chi = _bundles.materialize(u < p_of[b])
    drawn.append((positions, chi))
    for row, i in enumerate(positions):
      out[i] = _bundles.take_row(chi, rows[row])
  return out, drawn


def kept_fractions(
  masks: Sequence[jax.Array], shapes: Sequence[tuple[int, ...]], layer_axes: Sequence[tuple]
) -> jax.Array:
  """The fraction of each layer's elements a step's masks keep: one float32
  per layer of every leaf (an ordinary leaf is one layer), leaves in order,
  the layers of a leaf in row-major order over its layer axes; replicated.

  Every block of a layer holds as many elements, so the mean of a layer's
  blocks is the mean of its elements. The masks of leaves of one mask shape,
  sharding and layer axes are reduced in one kernel (see ``_bundles``).

  Args:
    masks: per leaf, its mask over its block grid (the leaf's rank, 1 on the
      axes a block spans; or a scalar, one block).
    shapes: per leaf, its shape.
    layer_axes: per leaf, its layer axes.
  """
  masks = [
    jnp.reshape(m, (1,) * len(shape)) if jnp.ndim(m) != len(shape) else m
    for m, shape in zip(masks, shapes)
  ]
  sizes = [math.prod(shape) for shape in shapes]
  keys = [
    (jnp.shape(m), _sharding.explicit_sharding(m), tuple(ax)) for m, ax in zip(masks, layer_axes)
  ]
  parts = []
  for positions, joined in zip(*_joined(masks, keys, sizes)):
    axes = layer_axes[positions[0]]
    over = _bundles.row_reduced_axes(joined.ndim, axes)
    kept = _bundles.kept_fraction(joined, over)
    parts.append((positions, _sharding.replicated(kept).reshape(-1)))
  return _bundles.in_position_order(parts, _layer_counts(shapes, layer_axes), jnp.float32)


def _layer_counts(shapes: Sequence[tuple[int, ...]], layer_axes: Sequence[tuple]) -> list[int]:
  """Per leaf, its number of layers (1 for a leaf without layer axes)."""
  return [math.prod(shape[a] for a in ax) for shape, ax in zip(shapes, layer_axes)]


def _joined(arrays, keys, sizes):
  bundles = _plan.bundle(keys, sizes)
  return bundles, _bundles.join(arrays, bundles)
