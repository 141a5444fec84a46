"""optax_sbs._threefry: the unrolled threefry is JAX's random bits, at any offset
and inside leaves of more than 2**32 elements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_sbs import _threefry

SHAPES = ((3, 3, 4, 8), (0, 5), (), (8,), (50, 20))


@pytest.mark.parametrize('seed', [0, 1, 2**31 + 5])
def test_unrolled_threefry_is_jax_random_bits(seed):
  key = jax.random.key(seed)
  total = sum(int(np.prod(s)) for s in SHAPES)
  want = np.asarray(jax.random.bits(key, (total,), jnp.uint32))
  got, offset = [], 0
  for shape in SHAPES:
    bits = jax.jit(_threefry.random_bits, static_argnums=(1, 2))(key, offset, shape)
    assert bits.shape == shape and bits.dtype == jnp.uint32
    got.append(np.asarray(bits).ravel())
    offset += int(np.prod(shape))
  np.testing.assert_array_equal(np.concatenate(got), want)
  np.testing.assert_array_equal(
    np.asarray(_threefry.uniform_from_bits(jnp.asarray(want))),
    np.asarray(jax.random.uniform(key, (total,))),
  )


@pytest.mark.parametrize(
  'offsets, shape',
  [([0, 7, 100], (3, 4)), ([2**32 - 5, 5, 2**40 + 3], (2, 3)), ([1, 2, 9], ()), ([9], (5,))],
)
def test_stacked_bits_are_the_bits_of_each_block(offsets, shape):
  key = jax.random.key(3)
  stacked = jax.jit(_threefry.random_bits, static_argnums=(1, 2))(key, tuple(offsets), shape)
  assert stacked.shape == (len(offsets), *shape)
  for row, offset in enumerate(offsets):
    np.testing.assert_array_equal(stacked[row], _threefry.random_bits(key, offset, shape))


def _jax_bits_at(key, index):
  """JAX's threefry bits of stream elements ``index`` (uint64): the block
  function on the counter words (index >> 32, index & 0xFFFFFFFF), as
  ``jax.random.bits`` forms them under ``jax_threefry_partitionable``."""
  from jax.extend.random import threefry2x32_p  # noqa: PLC0415

  index = np.asarray(index, np.uint64)
  hi = jnp.asarray((index >> np.uint64(32)).astype(np.uint32))
  lo = jnp.asarray((index & np.uint64(0xFFFFFFFF)).astype(np.uint32))
  data = jax.random.key_data(key)
  a, b = threefry2x32_p.bind(data[0], data[1], hi, lo)
  return np.asarray(a ^ b)


def test_counter_reference_is_jax_random_bits_below_2_32():
  key = jax.random.key(11)
  np.testing.assert_array_equal(
    _jax_bits_at(key, np.arange(1000)), np.asarray(jax.random.bits(key, (1000,), jnp.uint32))
  )


@pytest.mark.parametrize(
  'offset,shape',
  [
    (2**32 - 5, (3, 4)),  # crosses 2**32 inside the block
    (2**32, (7,)),
    (5 * 2**32 - 3, (2, 3, 5)),
    (2**40 + 2**33 - 1, (4, 4)),
    (2**63 + 12345, (3, 2)),
  ],
)
def test_random_bits_past_2_32_fill_the_high_word(offset, shape):
  key = jax.random.key(7)
  got = jax.jit(_threefry.random_bits, static_argnums=(1, 2))(key, offset, shape)
  index = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(offset)
  np.testing.assert_array_equal(np.asarray(got).ravel(), _jax_bits_at(key, index))


@pytest.mark.parametrize(
  'offset,shape,rows,cols',
  [
    (0, (3, 2**32), slice(1, 3), slice(2**32 - 4, None)),  # a stride of 2**32
    (7, (2**16 + 2, 2**16), slice(2**16 - 1, None), slice(0, 5)),
    (2**33, (5, 2**31 + 1), slice(3, 5), slice(2**31 - 2, None)),
  ],
)
def test_random_bits_inside_a_leaf_of_more_than_2_32_elements(offset, shape, rows, cols):
  """A slice of a huge leaf's bits (XLA computes only the slice: nothing
  of the leaf's size is allocated) equals JAX's bits at those indices."""
  key = jax.random.key(3)
  f = jax.jit(lambda k: _threefry.random_bits(k, offset, shape)[rows, cols])
  assert f.lower(key).compile().memory_analysis().temp_size_in_bytes < 2**20
  got = np.asarray(f(key))
  r = np.arange(*rows.indices(shape[0]), dtype=np.uint64)
  c = np.arange(*cols.indices(shape[1]), dtype=np.uint64)
  index = np.uint64(offset) + r[:, None] * np.uint64(shape[1]) + c[None, :]
  np.testing.assert_array_equal(got, _jax_bits_at(key, index))


def test_wide_multiply_and_add_against_python_integers():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 2**32, 1000, dtype=np.uint64)
  for b in [0, 1, 3, 2**16 + 1, 2**31 + 7, 2**32 - 1]:
    hi, lo = _threefry._mul_wide(jnp.asarray(a.astype(np.uint32)), b)
    want = [int(x) * b for x in a]
    np.testing.assert_array_equal(np.asarray(lo), [w % 2**32 for w in want])
    np.testing.assert_array_equal(np.asarray(hi), [w // 2**32 for w in want])
  x = rng.integers(0, 2**32, (2, 1000), dtype=np.uint64).astype(np.uint32)
  y = rng.integers(0, 2**32, (2, 1000), dtype=np.uint64).astype(np.uint32)
  hi, lo = _threefry._add_wide((jnp.asarray(x[0]), jnp.asarray(x[1])), (y[0], y[1]))
  total = [
    ((int(a) << 32) + int(b) + (int(c) << 32) + int(d)) % 2**64
    for a, b, c, d in zip(x[0], x[1], y[0], y[1])
  ]
  np.testing.assert_array_equal(np.asarray(hi), [t >> 32 for t in total])
  np.testing.assert_array_equal(np.asarray(lo), [t % 2**32 for t in total])


def test_an_axis_longer_than_2_32_is_refused_by_name():
  with pytest.raises(NotImplementedError, match='axis of more than 2'):
    jax.eval_shape(lambda k: _threefry.random_bits(k, 0, (2**32 + 1,)), jax.random.key(0))
