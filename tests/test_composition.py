"""SBS inside Optax's combinators and wrappers (chain, inject_hyperparams,
MultiSteps, apply_if_finite, masked) and under vmap: what the transformation
does when another transformation holds it or feeds it.

The contract Optax's own optimizers pass is in test_contract.py.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs

PARAMS = {
  'conv': {'kernel': jnp.full((3, 3, 2, 4), 0.5, jnp.float32), 'bias': jnp.zeros(4)},
  'dense': {'kernel': jnp.full((8, 3), -0.5, jnp.float32), 'bias': jnp.zeros(3)},
}


def grads_at(step):
  rng = np.random.default_rng(step)
  return jax.tree.map(
    lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype) * (1 + p.ndim),
    PARAMS,
  )


def run(tx, steps):
  return helpers.run_steps(tx, PARAMS, [grads_at(i) for i in range(steps)])


def test_momentum_accumulates_only_emitted_updates():
  """With momentum, the SGD trace sees chi * g~ (zeros where not updated)."""
  tx = optax.chain(optax_sbs.stochastic_batch_size(key=0), optax.trace(decay=0.9))
  state = tx.init(PARAMS)
  trace = jax.tree.map(jnp.zeros_like, PARAMS)
  for i in range(5):
    updates, state = tx.update(grads_at(i), state, PARAMS)
  # Recompute: SBS alone with the same key, then the momentum trace by hand.
  sbs_alone = optax_sbs.stochastic_batch_size(key=0)
  s = sbs_alone.init(PARAMS)
  for i in range(5):
    u, s = sbs_alone.update(grads_at(i), s, PARAMS)
    trace = jax.tree.map(lambda t, x: 0.9 * t + x, trace, u)
  for x, y in zip(jax.tree.leaves(trace), jax.tree.leaves(updates)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_inject_hyperparams_changes_take_effect_without_recompiling():
  tx = optax.inject_hyperparams(optax_sbs.stochastic_batch_size)(
    key=0, alpha=0.0, lam=0.0, probability=0.5
  )
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  _, state = update(grads_at(0), state, PARAMS)
  state.hyperparams['probability'] = jnp.asarray(1.0, jnp.float32)
  with helpers.log_compilations() as logs:
    _, state = update(grads_at(1), state, PARAMS)
  assert not logs
  for k in jax.tree.leaves(state.inner_state.count):
    np.testing.assert_array_equal(np.asarray(k), 1)


def test_inject_schedule_for_lam():
  tx = optax.inject_hyperparams(optax_sbs.stochastic_batch_size)(
    key=0, lam=optax.linear_schedule(0.0, -4.0, 10)
  )
  _, state = run(tx, steps=3)
  # inject_hyperparams keeps the value used by the last (third) update.
  assert float(state.hyperparams['lam']) == pytest.approx(-4.0 * 2 / 10)


def test_multisteps():
  """MultiSteps averages k micro-batches, then SBS sees the mean."""
  every = 3
  inner = optax_sbs.sbs(0.1, key=1)
  multi = optax.MultiSteps(inner, every_k_schedule=every)
  state_m = multi.init(PARAMS)
  state_i = inner.init(PARAMS)
  params_m = params_i = PARAMS
  update_m = jax.jit(multi.update)
  for outer in range(3):
    micro = [grads_at(10 * outer + j) for j in range(every)]
    for j, g in enumerate(micro):
      updates, state_m = update_m(g, state_m, params_m)
      if j < every - 1:
        for u in jax.tree.leaves(updates):
          np.testing.assert_array_equal(np.asarray(u), 0)
      params_m = optax.apply_updates(params_m, updates)
    mean = jax.tree.map(lambda *x: sum(x) / every, *micro)
    updates, state_i = inner.update(mean, state_i, params_i)
    params_i = optax.apply_updates(params_i, updates)
  for x, y in zip(jax.tree.leaves(params_m), jax.tree.leaves(params_i)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5)
  helpers.assert_trees_equal(
    optax_sbs.find_state(state_m).count, optax_sbs.find_state(state_i).count
  )


def test_apply_if_finite_leaves_state_untouched_on_nan():
  tx = optax.apply_if_finite(optax_sbs.sbs(0.1, key=0), max_consecutive_errors=3)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  updates, state = update(grads_at(0), state, PARAMS)
  before = optax_sbs.find_state(state)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads_at(1))
  updates, state = update(bad, state, PARAMS)
  after = optax_sbs.find_state(state)
  helpers.assert_trees_equal(before, after)
  for u in jax.tree.leaves(updates):
    np.testing.assert_array_equal(np.asarray(u), 0)
  assert int(state.notfinite_count) == 1


def test_vmap_over_keys_runs_independent_trials():
  num_trials = 4

  def trial(key):
    tx = optax_sbs.stochastic_batch_size(key)
    state = tx.init(PARAMS)
    for i in range(3):
      _, state = tx.update(grads_at(i), state, PARAMS)
    return state

  keys = jax.random.split(jax.random.key(0), num_trials)
  batched = jax.jit(jax.vmap(trial))(keys)
  for t in range(num_trials):
    single = trial(keys[t])
    helpers.assert_trees_equal(
      jax.tree.map(lambda x: x[t], (batched.cma, batched.count)),
      (single.cma, single.count),
    )
  counts = [np.asarray(k) for k in jax.tree.leaves(batched.count)]
  assert any(not np.array_equal(k[0], k[1]) for k in counts)


def test_vmap_over_update_with_batched_state():
  tx = optax_sbs.stochastic_batch_size(key=0)
  keys = jnp.arange(3)
  states = jax.vmap(lambda k: optax_sbs.stochastic_batch_size(k).init(PARAMS))(keys)
  grads = jax.tree.map(lambda g: jnp.stack([g] * 3), grads_at(0))
  updates, states = jax.vmap(tx.update)(grads, states)
  for t in range(3):
    single_tx = optax_sbs.stochastic_batch_size(t)
    u, _ = single_tx.update(grads_at(0), single_tx.init(PARAMS))
    helpers.assert_trees_equal(jax.tree.map(lambda x: x[t], updates), u)


def test_reset_accumulators_inside_wrappers():
  tx = optax.MultiSteps(
    optax.inject_hyperparams(optax_sbs.sbs)(learning_rate=0.1, key=0),
    every_k_schedule=1,
  )
  _, state = run(tx, steps=3)
  before = optax_sbs.find_state(state)
  reset = optax_sbs.find_state(optax_sbs.reset_accumulators(state))
  for c, k in zip(jax.tree.leaves(reset.cma), jax.tree.leaves(reset.count)):
    np.testing.assert_array_equal(np.asarray(c), 0)
    np.testing.assert_array_equal(np.asarray(k), 1)
  helpers.assert_trees_equal(before.key, reset.key)
  assert any(np.any(np.asarray(k) > 1) for k in jax.tree.leaves(before.count))


def test_inject_hyperparams_with_static_group_fn_and_typed_key():
  key = jax.random.key(3)
  plain = optax_sbs.stochastic_batch_size(
    key, group_fn=optax_sbs.single_group, cma_dtype='bfloat16'
  )
  injected = optax.inject_hyperparams(optax_sbs.stochastic_batch_size, static_args=('group_fn',))(
    key, group_fn=optax_sbs.single_group, cma_dtype='bfloat16'
  )
  params_p, state_p = run(plain, steps=3)
  params_i, state_i = run(injected, steps=3)
  helpers.assert_trees_equal((params_p, state_p), (params_i, state_i.inner_state))
  assert jax.tree.leaves(state_p.cma)[0].dtype == jnp.bfloat16


def test_under_optax_masked():
  params = {'a': jnp.ones(3), 'b': jnp.ones(4)}
  tx = optax.masked(
    optax_sbs.stochastic_batch_size(key=0, probability=0.0),
    {'a': True, 'b': False},
  )
  state = tx.init(params)
  updates, state = tx.update({'a': jnp.ones(3), 'b': jnp.ones(4)}, state, params)
  np.testing.assert_array_equal(np.asarray(updates['a']), 0)
  np.testing.assert_array_equal(np.asarray(updates['b']), 1)
