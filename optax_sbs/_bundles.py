"""Bundles: leaves of one shape computed in one call, so compile time does not grow with the leaves.

XLA compiles every fusion of a program to machine code, and compiles a fusion
identical to one it has already compiled only once. An optimizer step over
leaves of a few shapes is then cheap to compile however many leaves there
are, as long as the kernel of each leaf is a function of that leaf's buffers
alone. The masks break that: element ``j`` of a leaf uses counter
``offset + j`` of the step's stream, and an offset written into a kernel as
a constant makes the kernel of every leaf a different one (a threefry
generator of ~130 instructions, compiled again per leaf).

So the small leaves of a bundle (``_plan``: one shape, dtype, sharding and
layer axes) are computed in one call, joined along a new leading axis: their
masks are drawn in one generator call (row ``r`` from counter ``offset_r +
j``, bit for bit the numbers of the leaf drawn alone), and every leaf reads
its row with a dynamic index whose value the compiler cannot see
(:func:`row_indices`): the per-leaf kernels stay identical and are compiled
once per shape. The joined masks are computed once, in their own kernel
(:func:`materialize`), rather than fused (and compiled) into every reader.
None of this changes a result; it only changes what XLA compiles.
"""

from collections.abc import Sequence
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _sharding

# Row indices per reduction: one variadic reduction of many operands
# compiles slowly (superlinear in the operands), many small ones add kernels.
_ROWS_PER_REDUCTION = 32


def row_indices(count: int, key: jax.Array) -> list[jax.Array]:
  """``0, 1, ..., count - 1`` as int32 scalars that are not compile-time constants.

  Each is an output of a variadic reduction whose operands depend on ``key``
  (a zero the compiler cannot prove to be zero: a population count shifted
  right by 6), so a kernel that reads row ``i`` of a joined array with
  index ``i`` is the same kernel for every ``i``. The values are exact; only
  what the compiler can fold differs.

  Args:
    count: how many indices.
    key: a PRNG key of this step (its bits make the zero opaque).

  Returns:
    ``count`` int32 scalars.
  """
  if count == 0:
    return []
  bits = jax.random.key_data(key).reshape(-1)[0]
  zero = lax.shift_right_logical(lax.population_count(bits), np.uint32(6)).astype(jnp.int32)
  out: list[jax.Array] = []
  for start in range(0, count, _ROWS_PER_REDUCTION):
    rows = range(start, min(count, start + _ROWS_PER_REDUCTION))
    operands = [jnp.stack([zero, jnp.int32(r)]) for r in rows]
    out.extend(
      lax.reduce(
        operands,
        [np.int32(0)] * len(operands),
        lambda a, b: [x + y for x, y in zip(a, b)],
        (0,),
      )
    )
  return out


def materialize(mask: jax.Array) -> jax.Array:
  """``mask`` (boolean), computed once in its own kernel.

  A reduction is the root of its fusion and is never duplicated into the
  kernels that read its result; an elementwise mask would be fused into
  (and compiled into) each of its readers. The reduction is an OR over a
  new axis of length 2 whose other entry is False.
  """
  pair = jnp.stack([mask, jnp.zeros_like(mask)], axis=-1)
  return jnp.any(pair, axis=-1)


def kept_fraction(mask: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """The fraction of True entries of a boolean ``mask`` over ``axes``, float32.

  The entries are counted exactly (int32, below ``2**31`` per count). When
  the last axis is reduced and not explicitly sharded, it is first cut into
  chunks of at most 255 entries counted in uint8: XLA:CPU writes the
  converted mask out before a large reduction, and a byte per entry, not
  four, keeps that copy small (on a ResNet-18-shaped tree, a 4-byte copy
  made ``masked_updates(adam)``'s step 1.5x slower).
  """
  if not axes:
    return mask.astype(jnp.float32)
  size = math.prod(mask.shape[a] for a in axes)
  last = mask.ndim - 1
  sharding = _sharding.explicit_sharding(mask)
  sharded_last = sharding is not None and len(sharding.spec) > last and sharding.spec[last]
  length = mask.shape[last]
  chunk = max((d for d in range(1, min(length, 255) + 1) if length % d == 0), default=1)
  if last not in axes or sharded_last or chunk == 1:
    count = jnp.sum(mask, axis=axes, dtype=jnp.int32)
  else:
    cut = mask.reshape(*mask.shape[:last], length // chunk, chunk)
    partial = lax.reduce(cut.astype(jnp.uint8), np.uint8(0), lax.add, (last + 1,))
    count = jnp.sum(partial, axis=axes, dtype=jnp.int32)
  return count.astype(jnp.float32) / np.float32(size)


def row_reduced_axes(ndim: int, layer_axes: tuple[int, ...]) -> tuple[int, ...]:
  """The axes of a bundle's joined array (``ndim`` axes: the rows, then the
  leaves' axes) that one layer's statistics reduce over: all but the rows
  and the leaves' layer axes."""
  return tuple(1 + d for d in range(ndim - 1) if d not in layer_axes)


def join(arrays: Sequence[jax.Array], bundles: Sequence[tuple[int, ...]]) -> list[jax.Array]:
  """Per bundle, its arrays joined along a new leading axis, one row per
  leaf (a bundle of one is a reshape, not a copy)."""
  return [arrays[b[0]][None] if len(b) == 1 else jnp.stack([arrays[i] for i in b]) for b in bundles]


def in_position_order(
  parts: Sequence[tuple[tuple[int, ...], jax.Array]], counts: Sequence[int], dtype: Any
) -> jax.Array:
  """Per-bundle vectors joined into one vector in position order.

  Args:
    parts: per bundle, its positions and a vector holding ``counts[i]``
      entries for each position ``i``, consecutive, positions in the bundle's
      order.
    counts: per position, its number of entries.
    dtype: dtype of the result.

  Returns:
    The entries of position 0, then those of position 1, and so on;
    positions in no group get zeros. Where the groups already lie in
    position order this is a concatenation, else one gather more.
  """
  vectors: list[jax.Array] = []
  order: list[int] = []
  for positions, vector in parts:
    vectors.append(vector.astype(dtype))
    order.extend(positions)
  seen = set(order)
  missing = [i for i in range(len(counts)) if i not in seen]
  if any(counts[i] for i in missing):
    vectors.append(jnp.zeros((sum(counts[i] for i in missing),), dtype))
  order.extend(missing)
  if not vectors:
    return jnp.zeros((0,), dtype)
  joined = jnp.concatenate(vectors)
  starts = dict(zip(order, np.cumsum([0] + [counts[i] for i in order[:-1]]).tolist()))
  index = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in range(len(counts))])
  if np.array_equal(index, np.arange(index.size)):
    return joined
  return joined[index.astype(np.int32)]


def take_row(joined: jax.Array, row: jax.Array) -> jax.Array:
  """Row ``row`` (an int32 scalar) of ``joined`` along its leading axis."""
  return lax.dynamic_index_in_dim(joined, row, axis=0, keepdims=False)


def split_blocks(vector: jax.Array, plan: Any, key: jax.Array) -> list[jax.Array]:
  """Per leaf, its consecutive entries of ``vector`` (one per block of a
  per-layer plan: ``vector[offset : offset + blocks]``), shaped and sharded
  like its block grid.

  The leaves of a block bundle take their entries from one gather (a kernel
  per shape) and read their row with an opaque index, so the kernels that
  use them are the same for every leaf of the shape.

  Args:
    vector: a 1-D array holding all the blocks, in leaf order.
    plan: the step's ``_plan.Plan``.
    key: a PRNG key of this step (see :func:`row_indices`).

  Returns:
    Per leaf, its block grid.
  """
  out: list[Any] = [None] * len(plan.leaves)
  placed = set()

  def place(i, block):
    leaf = plan.leaves[i]
    out[i] = (
      block if leaf.block_sharding is None else jax.sharding.reshard(block, leaf.block_sharding)
    )

  largest = max((len(b) for b in plan.block_bundles if len(b) > 1), default=0)
  rows = row_indices(largest, key)
  for positions in plan.block_bundles:
    placed.update(positions)
    first = plan.leaves[positions[0]]
    size = math.prod(first.block_shape)
    if len(positions) == 1:
      place(positions[0], vector[first.offset : first.offset + size].reshape(first.block_shape))
      continue
    index = np.asarray(
      [np.arange(plan.leaves[i].offset, plan.leaves[i].offset + size) for i in positions], np.int32
    )
    blocks = vector[index]
    for row, i in enumerate(positions):
      place(i, take_row(blocks, rows[row]).reshape(first.block_shape))
  for i, leaf in enumerate(plan.leaves):
    if i not in placed:  # no blocks
      place(i, jnp.zeros(leaf.block_shape, vector.dtype))
  return out
