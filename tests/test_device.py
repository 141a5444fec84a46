"""The update on the default backend (a GPU or TPU when there is one) against
the CPU: the same masks bit for bit, the same numbers up to float rounding,
determinism, donation, sharding and pmap over the backend's own devices.

On a CPU-only machine the default backend is the CPU, and these tests check
the properties on it; ``benchmarks/device_check.sh`` runs them on a GPU.
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

CPU = jax.devices('cpu')[0]
DEVICE = jax.devices()[0]

# A small tree with the shapes of real layers: conv, dense, bias, norm.
SHAPES = {
  'Conv_0': {'kernel': (3, 3, 16, 32), 'bias': (32,)},
  'BatchNorm_0': {'scale': (32,), 'bias': (32,)},
  'Dense_0': {'kernel': (512, 10), 'bias': (10,)},
}

OPTIMIZERS = {
  'sbs': lambda p=None: optax_sbs.sbs(0.1, key=3, probability=p),
  'with_sbs(adam)': lambda p=None: optax_sbs.with_stochastic_batch_size(
    optax.adam(1e-3), key=3, probability=p
  ),
  'masked_updates(adam)': lambda p=None: optax_sbs.masked_updates(
    optax.adam(1e-3), key=3, probability=0.5 if p is None else p
  ),
  'magma(adam)': lambda p=None: optax_sbs.magma(
    optax.adam(1e-3), key=3, probability=0.5 if p is None else p
  ),
}


def host_tree(seed):
  leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
  rng = np.random.default_rng(seed)
  return treedef.unflatten([rng.normal(0, 1, shape).astype(np.float32) for shape in leaves])


def tree(seed, device):
  return jax.device_put(host_tree(seed), device)


def run(tx, device, steps=4, jit=True):
  """Params after ``steps`` updates on ``device``, and the final state.

  The update is jitted alone: fused with ``apply_updates`` XLA may contract
  ``w - lr * g`` into one FMA in one program and not in another, which is
  rounding, not a different update.
  """
  params = tree(0, device)
  state = jax.device_put(tx.init(params), device)
  update = jax.jit(tx.update) if jit else tx.update
  for i in range(steps):
    updates, state = update(tree(i + 1, device), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def released(state):
  """chi of the last step, per leaf (SBS: count == 1)."""
  return jax.tree.map(lambda k: np.asarray(k) == 1, optax_sbs.find_state(state).count)


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_fixed_probability_masks_equal_cpu_bit_for_bit(name):
  # With a fixed probability the mask depends on the key alone: the device's
  # bits must be the CPU's bits exactly, so which elements move is identical.
  p_dev, _ = run(OPTIMIZERS[name](0.5), DEVICE)
  p_cpu, _ = run(OPTIMIZERS[name](0.5), CPU)
  p0 = tree(0, CPU)
  for a, b, x0 in zip(jax.tree.leaves(p_dev), jax.tree.leaves(p_cpu), jax.tree.leaves(p0)):
    a, b, x0 = np.asarray(a), np.asarray(b), np.asarray(x0)
    np.testing.assert_array_equal(a != x0, b != x0)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_adaptive_masks_agree_with_cpu():
  # p comes from float reductions whose rounding may differ between backends:
  # masks may differ only where u is within rounding of p (a tiny fraction).
  _, s_dev = run(optax_sbs.sbs(0.1, key=3), DEVICE)
  _, s_cpu = run(optax_sbs.sbs(0.1, key=3), CPU)
  agree = [
    np.mean(a == b)
    for a, b in zip(jax.tree.leaves(released(s_dev)), jax.tree.leaves(released(s_cpu)))
  ]
  assert min(agree) > 0.999, agree


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_probability_one_is_the_inner_optimizer_on_device(name):
  inner = optax.sgd(0.1) if name == 'sbs' else optax.adam(1e-3)
  p_wrapped, _ = run(OPTIMIZERS[name](1.0), DEVICE)
  p_inner, _ = run(inner, DEVICE)
  p0 = jax.tree.leaves(host_tree(0))
  for a, b, x0 in zip(jax.tree.leaves(p_wrapped), jax.tree.leaves(p_inner), p0):
    a, b = np.asarray(a), np.asarray(b)
    if name == 'magma(adam)':  # every block kept, scaled by its score in (0, 1)
      assert np.all(np.isfinite(a)) and np.all(a != x0)
    elif name == 'with_sbs(adam)':
      # Jitted, XLA fuses Adam's arithmetic with the wrapper's selects and may
      # contract multiply-adds differently: an ulp (test_wrapper, eager: exact).
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    else:
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_deterministic_and_jit_equals_eager(name):
  a, _ = run(OPTIMIZERS[name](), DEVICE)
  b, _ = run(OPTIMIZERS[name](), DEVICE)
  c, _ = run(OPTIMIZERS[name](), DEVICE, jit=False)
  for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), rtol=1e-5, atol=1e-6)


def test_donated_step_matches_undonated():
  tx = optax_sbs.sbs(0.1, key=3)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = tree(0, DEVICE)
  state = tx.init(params)
  expected, _ = jax.jit(step)(params, state, tree(1, DEVICE))
  donated = jax.jit(step, donate_argnums=(0, 1))
  got, state = donated(
    jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state), tree(1, DEVICE)
  )
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_named_sharding_over_the_backends_devices_equals_one_device():
  devices = jax.devices()
  mesh = Mesh(np.array(devices), ('data',))
  tx = optax_sbs.sbs(0.1, key=3)
  params = tree(0, DEVICE)
  state = tx.init(params)
  grads = tree(1, DEVICE)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  expected, _ = jax.jit(step)(params, state, grads)

  # Shard every leaf's first axis that divides by the device count.
  def spec(x):
    if x.ndim and x.shape[0] % len(devices) == 0:
      return NamedSharding(mesh, P('data'))
    return NamedSharding(mesh, P())

  sharded = jax.tree.map(lambda x: jax.device_put(x, spec(x)), (params, grads))
  got, _ = jax.jit(step)(sharded[0], tx.init(sharded[0]), sharded[1])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pmap_replicas_identical():
  n = jax.local_device_count()
  tx = optax_sbs.sbs(0.1, key=3)
  # Uncommitted host data: pmap places one copy on each local device.
  params = host_tree(0)
  state = tx.init(params)
  grads = host_tree(1)

  @functools.partial(jax.pmap, axis_name='data')
  def step(params, state, grads):
    grads = jax.lax.pmean(grads, 'data')
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rep = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), t)
  got, new_state = step(rep(params), rep(state), rep(grads))
  for leaf in jax.tree.leaves(got) + jax.tree.leaves(optax_sbs.find_state(new_state).count):
    leaf = np.asarray(leaf)
    for i in range(1, n):
      np.testing.assert_array_equal(leaf[i], leaf[0])
