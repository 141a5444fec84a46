"""Faults and restarts of the library: Orbax round trips of the optimizer
state, masks identical across device counts, a non-finite gradient without a
guard. The training program's are in examples/cifar/reliability_test.py."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_sbs


def _params():
  return {
    'Conv_0': {'kernel': jnp.zeros((3, 3, 2, 4))},
    'Dense_0': {'kernel': jnp.zeros((8, 3)), 'bias': jnp.zeros(3)},
  }


def _grads(t):
  key = jax.random.fold_in(jax.random.key(5), t)
  leaves, treedef = jax.tree.flatten(_params())
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _train(tx, params, state, steps, start=0):
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
  for t in range(start, start + steps):
    params, state = step(params, state, _grads(t))
  return params, state


@pytest.mark.parametrize('recipe', ['orbax', 'key_data_helpers'])
@pytest.mark.parametrize('semantics', ['chain', 'wrapper'])
def test_optimizer_state_round_trips_through_orbax_and_resumes_bit_for_bit(
  tmp_path, semantics, recipe
):
  """The README's recipe: Orbax saves the state as it is (typed keys
  included) and restores it into an abstract template (jax.eval_shape); or
  the state as raw key data, wrapped back with an abstract ``like``."""
  if semantics == 'chain':
    tx = optax.chain(optax_sbs.stochastic_batch_size(3), optax.sgd(0.1, momentum=0.9))
  else:
    tx = optax_sbs.with_stochastic_batch_size(optax.adamw(1e-2, weight_decay=0.1), key=3)
  params = _params()
  whole = _train(tx, params, tx.init(params), 10)

  half = _train(tx, params, tx.init(params), 5)
  abstract = jax.eval_shape(lambda: half)
  if recipe == 'orbax':
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(tmp_path / 'ckpt', half)
    with ocp.StandardCheckpointer() as ckpt:
      restored = ckpt.restore(tmp_path / 'ckpt', abstract)
  else:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(tmp_path / 'ckpt', optax_sbs.key_data_tree(half))
    with ocp.StandardCheckpointer() as ckpt:
      raw = ckpt.restore(tmp_path / 'ckpt', optax_sbs.key_data_tree(abstract))
    restored = optax_sbs.wrap_key_data_tree(raw, like=abstract)
  sbs_state = optax_sbs.find_state(restored)
  assert jnp.issubdtype(sbs_state.key.dtype, jax.dtypes.prng_key)
  helpers.assert_trees_equal(restored, half)
  resumed = _train(tx, *restored, 5, start=5)
  helpers.assert_trees_equal(resumed, whole)


@pytest.mark.parametrize('num_devices', [2, 8])
def test_masks_bit_identical_across_device_counts_and_shardings(num_devices):
  if jax.device_count() < num_devices:
    pytest.skip(f'needs {num_devices} devices')
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  mesh = Mesh(np.array(jax.devices()[:num_devices]), ('x',))
  tx = optax_sbs.stochastic_batch_size(7)
  params = {'w': jnp.zeros((16, 24)), 'b': jnp.zeros(24)}
  grads = {
    'w': jax.random.normal(jax.random.key(0), (16, 24)),
    'b': jax.random.normal(jax.random.key(1), (24,)),
  }
  one = jax.jit(tx.update)(grads, tx.init(params), params)
  for spec in (P(), P('x')):  # replicated, and rows sharded over devices
    put = lambda t: jax.device_put(
      t, {'w': NamedSharding(mesh, spec), 'b': NamedSharding(mesh, P())}
    )
    sharded_params, sharded_grads = put(params), put(grads)
    out = jax.jit(tx.update)(sharded_grads, tx.init(sharded_params), sharded_params)
    for a, b in zip(jax.tree.leaves(one[1].count), jax.tree.leaves(out[1].count)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(out[0])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_unguarded_non_finite_gradient_freezes_its_group_as_documented():
  """README: without apply_if_finite, a NaN element makes its group's
  statistics NaN, so those leaves stop being updated (p = NaN -> chi False)
  and the NaN stays in the CMA; other groups go on; reset_accumulators
  clears it."""
  tx = optax_sbs.stochastic_batch_size(0)
  params = _params()
  state = tx.init(params)
  update = jax.jit(tx.update)
  bad = _grads(0)
  bad['Conv_0']['kernel'] = bad['Conv_0']['kernel'].at[0, 0, 0, 0].set(jnp.nan)
  updates, state = update(bad, state, params)
  for _ in range(5):
    updates, state = update(_grads(1), state, params)
  conv_count = np.asarray(state.count['Conv_0']['kernel'])
  assert np.all(conv_count == 7)  # never updated since the NaN: k = 1 + 6
  assert np.all(np.asarray(updates['Conv_0']['kernel']) == 0)
  assert np.isnan(np.asarray(state.cma['Conv_0']['kernel'])).sum() == 1
  # Another group (dense) is unaffected: finite, and updated at some steps.
  assert np.all(np.isfinite(np.asarray(updates['Dense_0']['kernel'])))
  assert np.any(np.asarray(state.count['Dense_0']['kernel']) < 7)
  # The documented recovery: reset the accumulators.
  state = optax_sbs.reset_accumulators(state)
  updates, state = update(_grads(2), state, params)
  assert np.all(np.isfinite(np.asarray(updates['Conv_0']['kernel'])))
  assert np.any(np.asarray(state.count['Conv_0']['kernel']) == 1)
