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

With stacked layers (``layer_axes``), ``granularity='leaf'`` draws one
uniform per slice of a leaf, in row-major order over its stacked axes.
"""

from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Sequence
import math
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _grouping
from optax_sbs import _layers
from optax_sbs import _sharding
from optax_sbs import _threefry

# Masks per parameter element, or one per parameter tensor.
Granularity = Literal['element', 'leaf']


def split_step_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns ``(next_state_key, step_key)``."""
  next_key, step_key = jax.random.split(key)
  return next_key, step_key


class _Row:
  """Leaf ``index`` of a stacked-probability callable (``p = fn([index])[0]``)."""

  def __init__(self, fn: Callable[[list[int]], jax.Array], index: int):
    self.fn, self.index = fn, index

  def value(self) -> jax.Array:
    return self.fn([self.index])[0]


def _stacked_sharding(sharding: Any) -> Any:
  """The sharding of leaves of ``sharding`` stacked along a new leading axis."""
  if sharding is None:
    return None
  spec = jax.sharding.PartitionSpec(None, *sharding.spec)
  return jax.sharding.NamedSharding(sharding.mesh, spec)


def bernoulli_masks(
  step_key: jax.Array,
  probabilities: Sequence[jax.typing.ArrayLike] | Callable[[list[int]], jax.Array],
  shapes: Sequence[tuple[int, ...]],
  shardings: Sequence[Any] | None = None,
  keys: Sequence[Hashable] | None = None,
) -> list[jax.Array]:
  """Boolean masks with ``P(chi = True) = p`` per element, one per leaf.

  Leaves of one shape and sharding, of up to
  ``_grouping.MAX_STACKED_SIZE`` elements, are drawn in one generator call,
  stacked, and each reads its row (see ``_grouping``); the numbers are those
  of the leaf drawn alone.

  Args:
    step_key: the key of this step.
    probabilities: per leaf, ``p`` broadcastable to the leaf's shape; or a
      callable that, given the positions of leaves of one shape, returns
      their ``p`` stacked: broadcastable to ``(len(positions), *shape)``.
    shapes: per leaf, the shape of its mask.
    shardings: per leaf, the sharding its mask is created with (see
      ``_sharding.explicit_sharding``), or ``None`` for all.
    keys: per leaf, what else must agree for leaves to be drawn together
      (e.g. the dtype their ``p`` is computed in), or ``None``.

  Returns:
    Per leaf, a boolean mask of its shape. ``p = 1`` gives all True and
    ``p = 0`` all False, exactly (uniforms lie in ``[0, 1)``).
  """
  shapes = [tuple(shape) for shape in shapes]
  sizes = [math.prod(shape) for shape in shapes]
  total = sum(sizes)
  if shardings is None:
    shardings = [None] * len(shapes)
  if total == 0:
    return [jnp.zeros(shape, bool) for shape in shapes]
  offsets = np.cumsum([0] + sizes[:-1]).tolist()
  if callable(probabilities):
    p_fn = probabilities
    probabilities = [_Row(p_fn, i) for i in range(len(shapes))]  # type: ignore[misc]
  if keys is None:
    keys = [None] * len(shapes)
  if not _threefry.is_threefry(step_key):
    stream = jax.random.uniform(step_key, (total,), jnp.float32)
    masks: list[Any] = []
    for p, shape, offset, sharding in zip(probabilities, shapes, offsets, shardings):
      if isinstance(p, _Row):
        p = p.value()
      u = stream[offset : offset + math.prod(shape)].reshape(shape)
      masks.append((u if sharding is None else jax.sharding.reshard(u, sharding)) < p)
    return masks

  def uniform(offset, shape, sharding):
    return _threefry.uniform_from_bits(_threefry.random_bits(step_key, offset, shape, sharding))

  masks = [None] * len(shapes)
  # Size-0 and large leaves (None) are drawn alone, by the fused per-leaf path.
  group_keys = [
    (shape, sharding, key, _Row if isinstance(p, _Row) else jnp.result_type(p))
    if 0 < size <= _grouping.MAX_STACKED_SIZE
    else None
    for shape, size, sharding, key, p in zip(shapes, sizes, shardings, keys, probabilities)
  ]
  groups = _grouping.group_indices(group_keys)
  rows = _grouping.row_indices(max((len(g) for g in groups if len(g) > 1), default=0), step_key)
  for group in groups:
    first = group[0]
    shape, sharding = shapes[first], shardings[first]
    if group_keys[first] is None or len(group) == 1:
      for i in group:
        p = probabilities[i]
        p = p.value() if isinstance(p, _Row) else p
        masks[i] = uniform(offsets[i], shapes[i], shardings[i]) < p
      continue
    stacked = _stacked_sharding(sharding)
    ps = [probabilities[i] for i in group]
    p_stacked: Any
    if isinstance(ps[0], _Row):
      p_stacked = ps[0].fn(group)
    elif all(np.ndim(p) == 0 for p in ps) and all(p is ps[0] for p in ps):
      p_stacked = ps[0]
    else:
      p_stacked = jnp.stack(
        [
          jnp.broadcast_to(jnp.asarray(p), shape)
          if sharding is None
          else jnp.broadcast_to(jnp.asarray(p), shape, out_sharding=sharding)
          for p in ps
        ]
      )
    chi = _grouping.materialize(uniform([offsets[i] for i in group], shape, stacked) < p_stacked)
    for row, i in enumerate(group):
      masks[i] = _grouping.take_row(chi, rows[row])
  return masks


def block_masks(
  step_key: jax.Array,
  leaves: Sequence[jax.Array],
  probability: jax.typing.ArrayLike,
  granularity: Granularity,
  axes: Sequence[tuple[int, ...]] | None = None,
) -> list[jax.Array]:
  """Per leaf, a boolean mask with ``P(True) = probability``, from the same
  stream as :func:`bernoulli_masks`: of the leaf's shape
  (``granularity='element'``), or one draw per parameter tensor (``'leaf'``):
  a scalar, or for a leaf with stacked ``axes`` one per slice, in the
  leaf's statistics shape (1 on the other axes)."""
  if axes is None:
    axes = [()] * len(leaves)
  shapes, shardings = [], []
  for x, ax in zip(leaves, axes):
    sharding = _sharding.explicit_sharding(x)
    if granularity == 'element':
      shapes.append(x.shape)
      shardings.append(sharding)
    elif ax:
      shapes.append(_layers.stat_shape(x.shape, ax))
      shardings.append(_sharding.keep_axes(sharding, ax, x.ndim))
    else:
      shapes.append(())
      shardings.append(None)
  return bernoulli_masks(step_key, [probability] * len(leaves), shapes, shardings)
