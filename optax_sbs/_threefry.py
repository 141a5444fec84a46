"""Threefry-2x32 written as plain ``jnp`` ops: JAX's random bits, cheaper on CPU.

``random_bits(key, offset, shape)`` equals
``jax.random.bits(key, (offset + n,), jnp.uint32)[offset:offset + n]``
reshaped to ``shape`` (n = prod(shape)), bit for bit, for threefry keys under
``jax_threefry_partitionable`` (JAX's default). XLA:CPU lowers JAX's own
threefry primitive as a rolled loop; the 20 rounds unrolled here fuse into
the elementwise code that uses them. The counter of each element is its
index (plus ``offset``), so the bits of a leaf are computed where the leaf
lives: any sharding of the leaf gives the same bits.

Reference: Salmon et al., `Parallel random numbers: as easy as 1, 2, 3
<https://doi.org/10.1145/2063384.2063405>`_, 2011.
"""

import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


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


def random_bits(key: jax.Array, offset: int, shape: tuple[int, ...]) -> jax.Array:
  """uint32 bits of elements ``offset .. offset + prod(shape)`` of the key's stream."""
  size = math.prod(shape)
  if offset + size >= 2**32:
    raise NotImplementedError('more than 2**32 random elements per step')
  data = jax.random.key_data(key)
  k0, k1 = data[0], data[1]
  counter = lax.iota(jnp.uint32, size).reshape(shape) + np.uint32(offset)
  hi, lo = threefry2x32(k0, k1, jnp.zeros_like(counter), counter)
  return hi ^ lo


def uniform_from_bits(bits: jax.Array) -> jax.Array:
  """float32 in [0, 1) from uint32 bits, exactly as ``jax.random.uniform``."""
  mantissa = (bits >> np.uint32(32 - 23)) | np.uint32(0x3F800000)
  return lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
