"""optax_sbs._sampling and _threefry: the masks' random stream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_sbs import _sampling
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


def reference_masks(key, probs, shapes):
  total = sum(int(np.prod(s)) for s in shapes)
  u = np.asarray(jax.random.uniform(key, (total,)))
  out, offset = [], 0
  for p, shape in zip(probs, shapes):
    n = int(np.prod(shape))
    out.append(u[offset : offset + n].reshape(shape) < np.asarray(p))
    offset += n
  return out


@pytest.mark.parametrize('impl', [None, 'rbg'])
def test_masks_are_uniform_stream_below_p(impl):
  key = jax.random.key(3, impl=impl) if impl else jax.random.key(3)
  rng = np.random.default_rng(0)
  probs = [jnp.asarray(rng.random(s), jnp.float32) for s in SHAPES]
  got = jax.jit(_sampling.bernoulli_masks, static_argnums=2)(key, probs, SHAPES)
  for a, b in zip(got, reference_masks(key, probs, SHAPES)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_probability_extremes_are_exact():
  key = jax.random.key(0)
  shapes = ((1000,), (10, 10))
  ones = _sampling.bernoulli_masks(key, [1.0, 1.0], shapes)
  zeros = _sampling.bernoulli_masks(key, [0.0, 0.0], shapes)
  assert all(bool(jnp.all(m)) for m in ones)
  assert not any(bool(jnp.any(m)) for m in zeros)
