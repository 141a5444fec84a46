"""optax_sbs._sampling: the masks are the uniform stream below p, leaf by leaf,
with leaves of one shape drawn stacked and whatever the sharding."""

import helpers
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from optax_sbs import _sampling

SHAPES = ((3, 3, 4, 8), (0, 5), (), (8,), (50, 20))


@pytest.mark.parametrize('impl', [None, 'rbg'])
def test_masks_are_uniform_stream_below_p(impl):
  key = jax.random.key(3, impl=impl) if impl else jax.random.key(3)
  rng = np.random.default_rng(0)
  probs = [jnp.asarray(rng.random(s), jnp.float32) for s in SHAPES]
  got = jax.jit(_sampling.bernoulli_masks, static_argnums=2)(key, probs, SHAPES)
  for a, b in zip(got, helpers.reference_masks(key, probs, SHAPES)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_probability_extremes_are_exact():
  key = jax.random.key(0)
  shapes = ((1000,), (10, 10))
  ones = _sampling.bernoulli_masks(key, [1.0, 1.0], shapes)
  zeros = _sampling.bernoulli_masks(key, [0.0, 0.0], shapes)
  assert all(bool(jnp.all(m)) for m in ones)
  assert not any(bool(jnp.any(m)) for m in zeros)


def test_grouped_masks_are_the_stream_below_p():
  """Leaves of repeated shapes (drawn stacked) get exactly the masks of the
  stream cut leaf by leaf, with scalar, per-element and stacked-callable p."""
  shapes = [(4, 6), (5,), (4, 6), (), (4, 6), (5,), (0, 3), ()]
  key = jax.random.key(11)
  rng = np.random.default_rng(0)
  per_element = [jnp.asarray(rng.uniform(size=s), jnp.float32) for s in shapes]

  def stacked(positions):
    return jnp.stack([per_element[i] for i in positions])

  cases = [([0.3] * len(shapes), [0.3] * len(shapes)), (per_element, per_element)]
  cases.append((stacked, per_element))
  for probs, want_p in cases:
    got = jax.jit(lambda k, probs=probs: _sampling.bernoulli_masks(k, probs, shapes))(key)
    for g, w in zip(got, helpers.reference_masks(key, want_p, shapes)):
      np.testing.assert_array_equal(np.asarray(g), w)


@pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices')
def test_masks_independent_of_sharding():
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  shapes = ((64, 32), (8,), (3, 3, 16, 8))
  probs = [jnp.full(s, 0.3) for s in shapes]
  key = jax.random.key(5)
  plain = jax.jit(_sampling.bernoulli_masks, static_argnums=2)(key, probs, shapes)
  out = [
    NamedSharding(mesh, P('data')),
    NamedSharding(mesh, P()),
    NamedSharding(mesh, P(None, None, 'data')),
  ]
  sharded = jax.jit(_sampling.bernoulli_masks, static_argnums=2, out_shardings=out)(
    key, probs, shapes
  )
  for a, b in zip(plain, sharded):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
