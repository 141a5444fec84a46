"""Leaves of one shape computed in one call: compile time that does not grow with the leaves.

XLA compiles every fusion of a program to machine code, and compiles a fusion
identical to one it has already compiled only once. An optimizer step over
leaves of a few shapes is then cheap to compile however many leaves there
are, as long as the kernel of each leaf is a function of that leaf's buffers
alone. The masks break that: element ``j`` of a leaf uses counter
``offset + j`` of the step's stream, and an offset written into a kernel as
a constant makes the kernel of every leaf a different one (a threefry
generator of ~130 instructions, compiled again per leaf).

So the masks of the small leaves that share a shape (and sharding) are
drawn in one generator call, stacked along a new leading axis (row ``r`` from counter
``offset_r + j``, bit for bit the numbers of the leaf drawn alone), and every
leaf reads its row with a dynamic index whose value the compiler cannot see
(:func:`row_indices`): the per-leaf kernels stay identical and are compiled
once per shape. The stacked masks are computed once, in their own kernel
(:func:`materialize`), rather than fused (and compiled) into every reader.
None of this changes a result; it only changes what XLA compiles.
"""

from collections.abc import Hashable
from collections.abc import Sequence
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _sharding

# Leaves of at most this many elements are stacked with the others of their
# shape. A larger leaf is computed alone: a stack is a copy (and a temporary
# as large as the leaves), which costs more step time than the leaf's own
# kernels cost to compile.
MAX_STACKED_SIZE = 1 << 16

# Row indices per reduction: one variadic reduction of many operands
# compiles slowly (superlinear in the operands), many small ones add kernels.
_ROWS_PER_REDUCTION = 32


def group_indices(keys: Sequence[Hashable]) -> list[list[int]]:
  """Positions with equal keys, grouped; groups ordered by first position."""
  groups: dict[Hashable, list[int]] = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def row_indices(count: int, key: jax.Array) -> list[jax.Array]:
  """``0, 1, ..., count - 1`` as int32 scalars that are not compile-time constants.

  Each is an output of a variadic reduction whose operands depend on ``key``
  (a zero the compiler cannot prove to be zero: a population count shifted
  right by 6), so a kernel that reads row ``i`` of a stacked array with
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


def stack_keys(
  arrays: Sequence[jax.Array], layer_axes: Sequence[tuple[int, ...]]
) -> list[Hashable | None]:
  """Per array, the key :func:`stack_groups` groups it by.

  Shape, dtype, sharding and stacked layer axes for an array of up to
  ``MAX_STACKED_SIZE`` elements; its own position for a larger one (a group
  of one: a stack of one is a reshape, not a copy); ``None`` for size 0.
  """
  keys: list[Hashable | None] = []
  for i, (a, ax) in enumerate(zip(arrays, layer_axes)):
    if not a.size:
      keys.append(None)
    elif a.size > MAX_STACKED_SIZE:
      keys.append(i)
    else:
      keys.append((a.shape, a.dtype, _sharding.explicit_sharding(a), tuple(ax)))
  return keys


def stack_groups(
  arrays: Sequence[jax.Array], keys: Sequence[Hashable | None]
) -> dict[tuple[int, ...], jax.Array]:
  """Arrays of equal keys stacked along a new leading axis.

  Args:
    arrays: arrays; those of one key must have one shape and dtype.
    keys: per array, its key, or ``None`` to leave it out.

  Returns:
    Per group of positions (groups ordered by first position, as
    :func:`group_indices`), its arrays stacked.
  """
  stacks = {}
  for group in group_indices(keys):
    if keys[group[0]] is None:
      continue
    if len(group) == 1:
      stacks[tuple(group)] = arrays[group[0]][None]
    else:
      stacks[tuple(group)] = jnp.stack([arrays[i] for i in group])
  return stacks


def in_position_order(
  parts: Sequence[tuple[tuple[int, ...], jax.Array]], counts: Sequence[int], dtype: Any
) -> jax.Array:
  """Per-group vectors joined into one vector in position order.

  Args:
    parts: per group, its positions and a vector holding ``counts[i]``
      entries for each position ``i``, consecutive, positions in the group's
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


def take_row(stacked: jax.Array, row: jax.Array) -> jax.Array:
  """Row ``row`` (an int32 scalar) of ``stacked`` along its leading axis."""
  return lax.dynamic_index_in_dim(stacked, row, axis=0, keepdims=False)


def split_vector(
  vector: jax.Array,
  shapes: Sequence[tuple[int, ...]],
  key: jax.Array,
  shardings: Sequence[Any] | None = None,
) -> list[jax.Array]:
  """Consecutive entries of ``vector``, one block per leaf, each of ``shapes[i]``.

  Equals ``vector[start_i : start_i + prod(shapes[i])].reshape(shapes[i])``
  with ``start_i`` the sum of the sizes before leaf ``i``. Leaves of one
  shape take their blocks from one gather (a kernel per shape) and read
  their row with an opaque index, so the kernels that use a block are the
  same for every leaf of the shape.

  Args:
    vector: a 1-D array holding all the blocks, in leaf order.
    shapes: per leaf, the shape of its block (``()`` for one entry).
    key: a PRNG key of this step (see :func:`row_indices`).
    shardings: per leaf, the sharding of its block, or ``None``.

  Returns:
    Per leaf, its block.
  """
  shapes = [tuple(s) for s in shapes]
  if shardings is None:
    shardings = [None] * len(shapes)
  sizes = [math.prod(s) for s in shapes]
  starts = np.cumsum([0] + sizes[:-1]).tolist()
  groups = group_indices([(s, sh) for s, sh in zip(shapes, shardings)])
  rows = row_indices(max((len(g) for g in groups if len(g) > 1), default=0), key)
  out: list[Any] = [None] * len(shapes)
  for group in groups:
    shape, sharding = shapes[group[0]], shardings[group[0]]
    size = sizes[group[0]]
    if len(group) == 1:
      i = group[0]
      block = vector[starts[i] : starts[i] + size].reshape(shape)
      out[i] = block if sharding is None else jax.sharding.reshard(block, sharding)
      continue
    index = np.asarray([np.arange(starts[i], starts[i] + size) for i in group], np.int32)
    blocks = vector[index]
    for row, i in enumerate(group):
      block = take_row(blocks, rows[row]).reshape(shape)
      out[i] = block if sharding is None else jax.sharding.reshard(block, sharding)
  return out
