"""Threefry-2x32 written as plain ``jnp`` ops: JAX's random bits, cheaper on CPU.

``random_bits(key, offset, shape)`` equals
``jax.random.bits(key, (offset + n,), jnp.uint32)[offset:offset + n]``
reshaped to ``shape`` (n = prod(shape)), bit for bit, for threefry keys under
``jax_threefry_partitionable`` (JAX's default). XLA:CPU lowers JAX's own
threefry primitive as a rolled loop; the 20 rounds unrolled here fuse into
the elementwise code that uses them.

The counter of element ``i`` of the stream is the 64-bit integer ``i``,
split into a high and a low 32-bit word, the two inputs of the block
function, as JAX's partitionable threefry does. Below ``2**32`` the high word
is 0. The counter is built from one iota per dimension (times the
dimension's stride), so its sharding is the leaf's: under any sharding each
device computes the bits of its own shard only, and the bits do not depend
on the sharding.

Reference: Salmon et al., `Parallel random numbers: as easy as 1, 2, 3
<https://doi.org/10.1145/2063384.2063405>`_, 2011.
"""

from collections.abc import Sequence
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_WORD = 2**32
_LOW16 = np.uint32(0xFFFF)


def _rotate_left(x, r):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
  """The Threefry-2x32 block function (20 rounds) on uint32 arrays."""
  ks = (k0, k1, k0 ^ k1 ^ _PARITY)
  x0 = x0 + ks[0]
  x1 = x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = _rotate_left(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def is_threefry(key: jax.Array) -> bool:
  return jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0))


def _mul_wide(a: jax.Array, b: int) -> tuple[jax.Array, jax.Array]:
  """``a * b`` as (high, low) 32-bit words, for uint32 ``a`` and ``0 <= b < 2**32``.

  The low word is the wrapping product; the high word is assembled from
  16-bit halves so that no partial product overflows 32 bits.
  """
  a0, a1 = a & _LOW16, a >> np.uint32(16)
  b0, b1 = np.uint32(b & 0xFFFF), np.uint32(b >> 16)
  t = a0 * b0
  m1 = a1 * b0 + (t >> np.uint32(16))
  m2 = a0 * b1 + (m1 & _LOW16)
  hi = a1 * b1 + (m1 >> np.uint32(16)) + (m2 >> np.uint32(16))
  return hi, a * np.uint32(b)


def _add_wide(x: tuple[Any, Any], y: tuple[Any, Any]) -> tuple[Any, Any]:
  """Sum of two (high, low) pairs modulo ``2**64``."""
  lo = x[1] + y[1]
  carry = (lo < x[1]).astype(jnp.uint32)
  return x[0] + y[0] + carry, lo


def counters(
  offset: int | Sequence[int], shape: tuple[int, ...], sharding: Any = None
) -> tuple[jax.Array, jax.Array]:
  """The (high, low) counter words of stream elements ``offset + i``.

  ``i`` is the row-major index of each position of ``shape``; the result
  equals JAX's ``iota_2x32_shape`` shifted by ``offset``, for any
  ``offset + prod(shape) <= 2**64``. With a sequence of offsets the result
  stacks one such block per offset along a new leading axis: row ``r``
  holds the counters of ``offset[r] + i`` (leaves of one shape drawn in one
  call).

  Args:
    offset: index in the stream of the first element (a Python int), or a
      sequence of them, one per row.
    shape: the shape of the block; each axis at most ``2**32`` long.
    sharding: the sharding the counters are created with (the leaf's, in
      JAX's explicit sharding mode; with a sequence of offsets, the
      sharding of the stacked result), or ``None``.

  Returns:
    Two uint32 arrays of ``shape``, or of ``(len(offset), *shape)``.
  """
  size = math.prod(shape)
  rows = None if isinstance(offset, (int, np.integer)) else [int(o) for o in offset]
  starts = [int(offset)] if isinstance(offset, (int, np.integer)) else list(rows or [])
  for first in starts:
    if first < 0 or first + size > 2**64:
      raise ValueError(f'stream elements {first} .. {first + size} lie outside [0, 2**64).')
  if any(d > _WORD for d in shape):
    raise NotImplementedError(
      f'an axis of more than 2**32 elements (shape {shape}): reshape the leaf.'
    )
  lead = 0 if rows is None else 1
  full = tuple(shape) if rows is None else (len(rows), *shape)
  strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
  iotas = [
    lax.broadcasted_iota(jnp.uint32, full, d + lead, out_sharding=sharding)
    for d in range(len(shape))
    if shape[d] > 1
  ]
  strides = [s for s, d in zip(strides, shape) if d > 1]
  row_shape = (-1,) + (1,) * len(shape)
  start: tuple[Any, Any]
  if rows is None:
    start = (np.uint32(starts[0] // _WORD), np.uint32(starts[0] % _WORD))
  else:
    start = (
      np.asarray([o // _WORD for o in rows], np.uint32).reshape(row_shape),
      np.asarray([o % _WORD for o in rows], np.uint32).reshape(row_shape),
    )
  if max(starts) + size <= _WORD:  # every counter fits its low word
    low: Any = start[1]
    for iota, stride in zip(iotas, strides):
      low = low + (iota * np.uint32(stride) if stride > 1 else iota)
    low = jnp.broadcast_to(jnp.asarray(low, jnp.uint32), full, out_sharding=sharding)
    return jnp.zeros_like(low), low
  total: tuple[Any, Any] = start
  for iota, stride in zip(iotas, strides):
    hi, lo = _mul_wide(iota, stride % _WORD)
    total = _add_wide(total, (hi + iota * np.uint32(stride // _WORD), lo))
  hi, lo = (
    jnp.broadcast_to(jnp.asarray(w, jnp.uint32), full, out_sharding=sharding) for w in total
  )
  return hi, lo


def random_bits(
  key: jax.Array, offset: int | Sequence[int], shape: tuple[int, ...], sharding: Any = None
) -> jax.Array:
  """uint32 bits of elements ``offset .. offset + prod(shape)`` of the key's stream.

  Args:
    key: a threefry key.
    offset: index in the stream of the first element (a Python int), or a
      sequence of them: the result then stacks one block per offset along a
      new leading axis (see :func:`counters`).
    shape: the shape of the bits (of one block).
    sharding: the sharding of the result (the leaf's, in JAX's explicit
      sharding mode), or ``None``.

  Returns:
    A uint32 array of ``shape``, or of ``(len(offset), *shape)``.
  """
  data = jax.random.key_data(key)
  hi, lo = counters(offset, shape, sharding)
  out0, out1 = threefry2x32(data[0], data[1], hi, lo)
  return out0 ^ out1


def uniform_from_bits(bits: jax.Array) -> jax.Array:
  """float32 in [0, 1) from uint32 bits, exactly as ``jax.random.uniform``."""
  mantissa = (bits >> np.uint32(32 - 23)) | np.uint32(0x3F800000)
  return lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
