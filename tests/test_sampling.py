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

from optax_sbs import _bundles
from optax_sbs import _plan
from optax_sbs import _sampling

SHAPES = ((3, 3, 4, 8), (0, 5), (), (8,), (50, 20))


def draw(key, probs, shapes):
  """The masks of leaves of ``shapes`` with per-leaf ``p``: one scalar for
  all (drawn per block bundle), or arrays of the leaves' shapes (stacked per
  bundle, as the adaptive rule gives them)."""
  plan = _plan.build([jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
  if all(np.ndim(p) == 0 for p in probs):
    return _sampling.masks(plan, key, probs[0])
  p = [jnp.broadcast_to(jnp.asarray(q, jnp.float32), s) for q, s in zip(probs, shapes)]
  return _sampling.masks(plan, key, bundle_probabilities=_bundles.join(p, plan.bundles))


@pytest.mark.parametrize('impl', [None, 'rbg'])
def test_masks_are_uniform_stream_below_p(impl):
  key = jax.random.key(3, impl=impl) if impl else jax.random.key(3)
  rng = np.random.default_rng(0)
  probs = [jnp.asarray(rng.random(s), jnp.float32) for s in SHAPES]
  got = jax.jit(lambda k, p: draw(k, p, SHAPES))(key, probs)
  for a, b in zip(got, helpers.reference_masks(key, probs, SHAPES)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_probability_extremes_are_exact():
  key = jax.random.key(0)
  shapes = ((1000,), (10, 10))
  ones = draw(key, [1.0, 1.0], shapes)
  zeros = draw(key, [0.0, 0.0], shapes)
  assert all(bool(jnp.all(m)) for m in ones)
  assert not any(bool(jnp.any(m)) for m in zeros)


def test_bundled_masks_are_the_stream_below_p():
  """Leaves of repeated shapes (drawn as bundles) get exactly the masks of
  the stream cut leaf by leaf, with one scalar p and per-element p."""
  shapes = [(4, 6), (5,), (4, 6), (), (4, 6), (5,), (0, 3), ()]
  key = jax.random.key(11)
  rng = np.random.default_rng(0)
  per_element = [jnp.asarray(rng.uniform(size=s), jnp.float32) for s in shapes]
  for probs in ([0.3] * len(shapes), per_element):
    got = jax.jit(lambda k, probs=probs: draw(k, probs, shapes))(key)
    for g, w in zip(got, helpers.reference_masks(key, probs, shapes)):
      np.testing.assert_array_equal(np.asarray(g), w)


def test_blocks_of_layers_take_their_places_in_the_stream():
  """Per layer (granularity 'leaf'): one uniform per layer, leaves in order,
  the layers of a stacked leaf in row-major order over its layer axes."""
  leaves = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((3, 4), (2, 5, 6), (0,), (7,))]
  axes = [(), (0, 2), (), ()]
  plan = _plan.build(leaves, axes, block_axes=axes)
  assert [leaf.offset for leaf in plan.leaves] == [0, 1, 13, 14]
  assert [leaf.block_shape for leaf in plan.leaves] == [(), (2, 1, 6), (), ()]
  key = jax.random.key(2)
  got = _sampling.masks(plan, key, 0.4)
  stream = np.asarray(jax.random.uniform(key, (plan.num_blocks,), jnp.float32))
  want = [stream[0] < 0.4, (stream[1:13] < 0.4).reshape(2, 1, 6), stream[13] < 0.4]
  want.append(stream[14] < 0.4)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), w)


@pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices')
def test_masks_independent_of_sharding():
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  shapes = ((64, 32), (8,), (3, 3, 16, 8))
  probs = [jnp.full(s, 0.3) for s in shapes]
  key = jax.random.key(5)
  plain = jax.jit(lambda k, p: draw(k, p, shapes))(key, probs)
  out = [
    NamedSharding(mesh, P('data')),
    NamedSharding(mesh, P()),
    NamedSharding(mesh, P(None, None, 'data')),
  ]
  sharded = jax.jit(lambda k, p: draw(k, p, shapes), out_shardings=out)(key, probs)
  for a, b in zip(plain, sharded):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
