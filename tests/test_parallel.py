"""Data parallelism on 8 CPU devices: pmap, and jit with NamedSharding.

The rule: average gradients across replicas, replicate the key. Then params
and SBS state are bit-identical on every replica and equal a single-device
run. Gradients here are small dyadic rationals (multiples of 1/64), so every
mean is exact whatever the reduction order and the single-device reference
sees exactly the same numbers.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import optax_sbs

NUM_DEVICES = 8
STEPS = 8
PARAMS = {
  'conv': {'kernel': jnp.ones((3, 3, 4, 8), jnp.float32), 'bias': jnp.zeros(8, jnp.float32)},
  'dense': {'kernel': jnp.ones((16, 8), jnp.float32), 'bias': jnp.zeros(8, jnp.float32)},
}

pytestmark = pytest.mark.skipif(
  jax.device_count() < NUM_DEVICES,
  reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8',
)


def dyadic_grads(step, replicas):
  """Per-replica gradients, shape (replicas, *leaf.shape)."""
  rng = np.random.default_rng(step)
  return jax.tree.map(
    lambda p: jnp.asarray(
      np.round(rng.standard_normal((replicas,) + p.shape) * 16 * (1 + p.ndim)) / 64, jnp.float32
    ),
    PARAMS,
  )


def single_device_run(tx):
  params, state = PARAMS, tx.init(PARAMS)
  update = jax.jit(tx.update)
  for step in range(STEPS):
    grads = jax.tree.map(lambda g: jnp.mean(g, 0), dyadic_grads(step, NUM_DEVICES))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def assert_same_masks_close_params(got, want):
  (params_a, state_a), (params_b, state_b) = got, want
  a, b = optax_sbs.find_state(state_a), optax_sbs.find_state(state_b)
  for x, y in zip(jax.tree.leaves(a.count), jax.tree.leaves(b.count)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves((params_a, a.cma)), jax.tree.leaves((params_b, b.cma))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))


def replicate(tree, n=NUM_DEVICES):
  """Stacks ``n`` copies along a new leading (pmap) axis; typed keys too."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


def pmap_run(tx, states):
  @functools.partial(jax.pmap, axis_name='batch')
  def step(params, state, grads):
    grads = jax.lax.pmean(grads, 'batch')
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = replicate(PARAMS)
  for s in range(STEPS):
    params, states = step(params, states, dyadic_grads(s, NUM_DEVICES))
  return params, states


def test_pmap_replicas_identical_and_equal_single_device():
  tx = optax_sbs.sbs(0.1, key=0, momentum=0.9)
  states = replicate(tx.init(PARAMS))
  params, states = pmap_run(tx, states)
  for leaf in jax.tree.leaves((params, states)):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    leaf = np.asarray(leaf)
    for r in range(1, NUM_DEVICES):
      np.testing.assert_array_equal(leaf[r], leaf[0])
  replica0 = jax.tree.map(lambda x: x[0], (params, states))
  assert_same_masks_close_params(replica0, single_device_run(tx))


def test_pmap_pitfall_different_keys_diverge():
  """A key per replica (the documented pitfall) makes replicas drift apart."""
  tx = optax_sbs.sbs(0.1, key=0)
  per_replica = [optax_sbs.sbs(0.1, key=r).init(PARAMS) for r in range(NUM_DEVICES)]
  states = jax.tree.map(lambda *x: jnp.stack(x), *per_replica)
  params, _ = pmap_run(tx, states)
  kernel = np.asarray(params['dense']['kernel'])
  assert not np.array_equal(kernel[0], kernel[1])


def linear_loss(params, x):
  """Loss linear in params: its gradient is exactly the (dyadic) batch mean."""
  return sum(
    jnp.mean(jnp.sum(p[None] * xi, axis=tuple(range(1, xi.ndim))))
    for p, xi in zip(jax.tree.leaves(params), jax.tree.leaves(x))
  )


@pytest.mark.parametrize('shard_params', [False, True])
def test_jit_named_sharding_equals_single_device(shard_params):
  """Batch sharded over 8 devices; params replicated or sharded on an axis."""
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ('data',))
  tx = optax_sbs.sbs(0.1, key=0, momentum=0.9)

  def param_spec(path, leaf):
    if shard_params and leaf.ndim >= 2 and leaf.shape[0] % NUM_DEVICES == 0:
      return NamedSharding(mesh, P('data'))  # dense kernel: rows split
    if shard_params and leaf.ndim == 4:
      return NamedSharding(mesh, P(None, None, None, 'data'))  # conv: out ch.
    return NamedSharding(mesh, P())

  def step(params, state, x):
    grads = jax.grad(linear_loss)(params, x)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  param_sharding = jax.tree_util.tree_map_with_path(param_spec, PARAMS)
  params = jax.device_put(PARAMS, param_sharding)
  state = tx.init(params)
  for leaf, s in zip(
    jax.tree.leaves(optax_sbs.find_state(state).cma), jax.tree.leaves(param_sharding)
  ):
    assert leaf.sharding == s  # the state is laid out like the params
  batch_sharding = NamedSharding(mesh, P('data'))
  sharded_step = jax.jit(step)
  single_step = jax.jit(step)
  params_1, state_1 = PARAMS, tx.init(PARAMS)
  for s in range(STEPS):
    x = dyadic_grads(s, NUM_DEVICES)
    params, state = sharded_step(params, state, jax.device_put(x, batch_sharding))
    params_1, state_1 = single_step(params_1, state_1, x)
  assert_same_masks_close_params((params, state), (params_1, state_1))
  if shard_params:
    kernel = params['dense']['kernel']
    assert kernel.sharding.spec == P('data')
    count = optax_sbs.find_state(state).count['dense']['kernel']
    assert len(count.sharding.device_set) == NUM_DEVICES
