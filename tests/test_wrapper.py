"""Algorithm 2 around any optimizer: optax_sbs.with_stochastic_batch_size.

The wrapped optimizer's per-parameter state (momentum, Adam's moments) and
the parameter itself are held where an element is not released (chi = 0);
scalars such as Adam's step count advance every step.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs

import reference

# Distinct shapes, so a state leaf's parameter (and its mask) is known by
# shape alone in the checks below, independently of the library's search.
SHAPES = {
  'Conv_0': {'kernel': (3, 3, 2, 4), 'bias': (4,)},
  'Dense_0': {'kernel': (6, 5), 'bias': (5,)},
  'LayerNorm_0': {'scale': (7,)},
}
IS_SHAPE = lambda x: isinstance(x, tuple)


def make_params(rng=None):
  rng = rng or np.random.default_rng(123)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), SHAPES, is_leaf=IS_SHAPE
  )


def random_grads(rng):
  """Gradients whose scale differs from leaf to leaf (a spread of p)."""
  leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=IS_SHAPE)
  scales = np.geomspace(1e-2, 1.0, len(leaves))
  return treedef.unflatten(
    [jnp.asarray(rng.standard_normal(s) * c, jnp.float32) for s, c in zip(leaves, scales)]
  )


def f64(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def released(state):
  """chi of the last step, read back from the state (count == 1)."""
  return [np.asarray(k) == 1 for k in jax.tree.leaves(state.sbs_state.count)]


@pytest.mark.parametrize('inner_name', ['sgd_momentum', 'adam', 'adamw'])
def test_matches_numpy_reference_of_frozen_semantics(inner_name):
  """25 steps of the adaptive rule on a multi-leaf tree against a float64
  NumPy Algorithm 2 whose inner optimizer moves released elements only."""
  lr, momentum, b1, b2, eps, wd = 0.05, 0.9, 0.9, 0.999, 1e-8, 0.1
  inner = {
    'sgd_momentum': optax.sgd(lr, momentum=momentum),
    'adam': optax.adam(lr, b1=b1, b2=b2, eps=eps),
    'adamw': optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd),
  }[inner_name]
  tx = optax_sbs.with_stochastic_batch_size(inner, key=5, lam=-4.0)
  rng = np.random.default_rng(0)
  params = make_params()
  state = tx.init(params)
  update = jax.jit(tx.update)
  ref_params = f64(params)
  zeros = [np.zeros_like(w) for w in ref_params]
  ref_cma, ref_count = list(zeros), [np.ones_like(w) for w in ref_params]
  trace, mu, nu = list(zeros), list(zeros), list(zeros)
  fractions = []
  for step in range(1, 26):
    grads = random_grads(rng)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    chis = released(state)
    fractions.append(np.mean(np.concatenate([c.ravel() for c in chis])))
    sbs_out, ref_cma, ref_count = reference.sbs_step(f64(grads), ref_cma, ref_count, chis)
    if inner_name == 'sgd_momentum':
      ref_updates, trace = reference.frozen_momentum_step(sbs_out, trace, chis, lr, momentum)
      ref_inner = {'trace': trace}
      got_inner = {'trace': f64(state.inner_state[0].trace)}
    else:
      ref_updates, mu, nu = reference.frozen_adam_step(
        sbs_out,
        mu,
        nu,
        step,
        chis,
        ref_params,
        lr,
        b1,
        b2,
        eps,
        weight_decay=wd if inner_name == 'adamw' else 0.0,
      )
      ref_inner = {'mu': mu, 'nu': nu}
      adam_state = state.inner_state[0]
      got_inner = {'mu': f64(adam_state.mu), 'nu': f64(adam_state.nu)}
      assert int(adam_state.count) == step  # advances every step
    ref_params = [w + u for w, u in zip(ref_params, ref_updates)]
    for got, want in zip(f64(updates), ref_updates):
      np.testing.assert_allclose(got, want, rtol=2e-4, atol=lr * 1e-6)
    for name, want_leaves in ref_inner.items():
      for got, want in zip(got_inner[name], want_leaves):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-9, err_msg=name)
    for got, want in zip(jax.tree.leaves(state.sbs_state.count), ref_count):
      np.testing.assert_array_equal(np.asarray(got), want)
  for got, want in zip(f64(params), ref_params):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The adaptive rule was at work: some elements held, most steps.
  assert 0.05 < np.mean(fractions) < 0.95


INNERS = {
  'sgd_momentum': lambda: optax.sgd(0.1, momentum=0.9),
  'sgd_nesterov': lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
  'adam': lambda: optax.adam(1e-2),
  'adamw': lambda: optax.adamw(1e-2, weight_decay=0.1),
}


def run(tx, steps, seed=0, params=None, jit=True):
  rng = np.random.default_rng(seed)
  params = make_params() if params is None else params
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  history = []
  for _ in range(steps):
    updates, state = update(random_grads(rng), state, params)
    params = optax.apply_updates(params, updates)
    history.append((updates, params, state))
  return history


@pytest.mark.parametrize('name', sorted(INNERS))
def test_probability_one_is_the_inner_optimizer_bit_for_bit(name):
  """Op by op (eager), the wrapper at p = 1 computes exactly the inner
  optimizer's arithmetic. (Jitted as one program, XLA:CPU fuses the inner
  optimizer's arithmetic with the selects and may contract multiply-adds
  differently: Adam's nu then differs by an ulp a step, checked below.)"""
  wrapped = run(
    optax_sbs.with_stochastic_batch_size(INNERS[name](), key=0, probability=1.0),
    steps=10,
    jit=False,
  )
  alone = run(INNERS[name](), steps=10, jit=False)
  for (u_w, p_w, s_w), (u_a, p_a, s_a) in zip(wrapped, alone):
    helpers.assert_trees_equal(u_w, u_a)
    helpers.assert_trees_equal(p_w, p_a)
    helpers.assert_trees_equal(s_w.inner_state, s_a)
  jitted = run(
    optax_sbs.with_stochastic_batch_size(INNERS[name](), key=0, probability=1.0), steps=10
  )
  jitted_alone = run(INNERS[name](), steps=10)
  for (u_w, p_w, s_w), (u_a, p_a, s_a) in zip(jitted, jitted_alone):
    for x, y in zip(jax.tree.leaves((u_w, p_w, s_w.inner_state)), jax.tree.leaves((u_a, p_a, s_a))):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize('name', sorted(INNERS))
def test_probability_zero_never_moves_params_or_per_parameter_state(name):
  inner = INNERS[name]()
  params = make_params()
  initial = inner.init(params)
  history = run(
    optax_sbs.with_stochastic_batch_size(inner, key=0, probability=0.0), steps=6, params=params
  )
  for updates, new_params, state in history:
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(np.asarray(u), 0)
    helpers.assert_trees_equal(new_params, params)
    for new, old in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(initial)):
      if np.ndim(old):  # per-parameter: held at its initial value
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
  counts = [x for x in jax.tree.leaves(history[-1][2].inner_state) if not np.ndim(x)]
  if name.startswith('adam'):
    assert [int(c) for c in counts] == [6]  # the step count advanced


@pytest.mark.parametrize('probability', [0.5, None])
def test_with_adamw_exactly_the_released_elements_move(probability):
  tx = optax_sbs.with_stochastic_batch_size(
    optax.adamw(1e-2, weight_decay=0.5), key=3, lam=-4.0, probability=probability
  )
  for updates, _, state in run(tx, steps=12):
    for u, chi in zip(jax.tree.leaves(updates), released(state)):
      np.testing.assert_array_equal(np.asarray(u) != 0, chi)


def test_chain_moves_waiting_elements_the_wrapper_does_not():
  """The difference the two semantics make, as the docs report it."""
  for inner in (optax.sgd(0.1, momentum=0.3), optax.adam(1e-3)):
    chain = optax.chain(optax_sbs.stochastic_batch_size(0), inner)
    wrapped = optax_sbs.with_stochastic_batch_size(inner, 0, lam=-4.0)  # the chain's masks
    (u_c, _, s_c), (u_w, _, s_w) = run(chain, 5)[-1], run(wrapped, 5)[-1]
    chis = np.concatenate([c.ravel() for c in released(s_w)])
    moved = lambda u: np.mean(
      np.concatenate([np.ravel(np.asarray(x) != 0) for x in jax.tree.leaves(u)])
    )
    assert moved(u_w) == pytest.approx(np.mean(chis))
    assert moved(u_c) > 0.9 > np.mean(chis) + 0.2
    # Same masks in both: the chain's SBS state is the wrapper's.
    helpers.assert_trees_equal(optax_sbs.find_state(s_c).count, s_w.sbs_state.count)


def rosenbrock(w):
  return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


def minimise(tx, objective, w, steps=30_000):
  def step(carry, _):
    w, state = carry
    updates, state = tx.update(jax.grad(objective)(w), state, w)
    return (optax.apply_updates(w, updates), state), None

  (w, _), _ = jax.lax.scan(step, (w, tx.init(w)), length=steps)
  return w


def test_rosenbrock_converges_with_momentum_as_sgd_does():
  w = minimise(optax_sbs.sbs(1e-3, key=0, momentum=0.9), rosenbrock, jnp.zeros(2))
  np.testing.assert_allclose(np.asarray(w), [1.0, 1.0], atol=3e-2)
  # The chain (momentum moving waiting elements) diverges on the same run.
  chain = optax.chain(optax_sbs.stochastic_batch_size(0), optax.sgd(1e-3, momentum=0.9))
  w_chain = np.asarray(minimise(chain, rosenbrock, jnp.zeros(2)))
  assert not np.all(np.abs(w_chain) < 10)


def held_by_shape(chis_by_shape, expected, old):
  """The expected wrapper state: per-parameter leaves (matched by shape)
  held where their mask is False; scalars as the inner optimizer says."""

  def pick(e, o):
    if not np.ndim(e):
      return np.asarray(e)
    return np.where(chis_by_shape[np.shape(e)], e, o)

  return jax.tree.map(pick, expected, old)


LABELS = {
  'Conv_0': {'kernel': 'a', 'bias': 'b'},
  'Dense_0': {'kernel': 'a', 'bias': 'b'},
  'LayerNorm_0': {'scale': 'b'},
}
MATRICES = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
COMPOSED = {
  'inject_hyperparams': lambda: optax.inject_hyperparams(optax.adamw)(
    learning_rate=optax.linear_schedule(1e-2, 1e-3, 10), weight_decay=0.1
  ),
  'masked_fn': lambda: optax.masked(optax.adam(1e-2), MATRICES),
  'chain_masked_tree': lambda: optax.chain(
    optax.masked(optax.trace(0.5), jax.tree.map(lambda lab: lab == 'a', LABELS)), optax.adam(1e-2)
  ),
  'multi_transform': lambda: optax.multi_transform(
    {'a': optax.adam(1e-2), 'b': optax.sgd(0.1, momentum=0.9)}, LABELS
  ),
}


@pytest.mark.parametrize('name', sorted(COMPOSED))
def test_composed_inner_states_are_held_per_element(name):
  """Through inject_hyperparams, masked (MaskedNode), chains and
  multi_transform: each step's inner state is the inner optimizer's step on
  the SBS output, held per element where not released."""
  inner = COMPOSED[name]()
  tx = optax_sbs.with_stochastic_batch_size(inner, key=1, probability=0.5)
  lone_sbs = optax_sbs.stochastic_batch_size(key=1, probability=0.5)
  rng = np.random.default_rng(2)
  params = make_params()
  state, sbs_state = tx.init(params), lone_sbs.init(params)
  for _ in range(6):
    grads = random_grads(rng)
    sbs_out, sbs_state = lone_sbs.update(grads, sbs_state, params)
    expected_updates, expected_inner = inner.update(sbs_out, state.inner_state, params)
    old_inner = state.inner_state
    updates, state = tx.update(grads, state, params)
    chis = {np.shape(c): c for c in released(state)}
    want = held_by_shape(chis, expected_inner, old_inner)
    helpers.assert_trees_equal(state.inner_state, want)
    helpers.assert_trees_equal(
      updates, held_by_shape(chis, expected_updates, jax.tree.map(jnp.zeros_like, params))
    )
    params = optax.apply_updates(params, updates)
  # Something was held and something moved.
  moved = np.concatenate([c.ravel() for c in chis.values()])
  assert 0 < moved.mean() < 1


def test_extra_args_are_forwarded_to_the_inner_optimizer():
  def update_fn(updates, state, params=None, *, scale, **extra):
    del params, extra
    return jax.tree.map(lambda u: u * scale, updates), state

  inner = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
  tx = optax_sbs.with_stochastic_batch_size(inner, key=0, probability=1.0)
  params = make_params()
  grads = random_grads(np.random.default_rng(0))
  updates, _ = tx.update(grads, tx.init(params), params, scale=3.0, not_for_anyone=1)
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
    np.testing.assert_array_equal(np.asarray(u), 3.0 * np.asarray(g))


def test_masks_equal_those_of_the_transform_with_the_same_key():
  options = dict(alpha=0.3, lam=-2.0, scale_by_count=True)
  wrapped = run(optax_sbs.with_stochastic_batch_size(optax.adam(1e-2), key=9, **options), steps=8)
  lone = optax_sbs.stochastic_batch_size(key=9, **options)
  lone_state = lone.init(make_params())
  rng = np.random.default_rng(0)
  for (_, params_before, _), (_, _, state) in zip(
    [(None, make_params(), None)] + wrapped[:-1], wrapped
  ):
    _, lone_state = lone.update(random_grads(rng), lone_state, params_before)
    helpers.assert_trees_equal(state.sbs_state.count, lone_state.count)
    helpers.assert_trees_equal(
      jax.random.key_data(state.sbs_state.key), jax.random.key_data(lone_state.key)
    )


def test_state_helpers_work_through_the_wrapper():
  tx = optax.inject_hyperparams(optax_sbs.sbs)(learning_rate=0.1, key=0, momentum=0.9)
  _, _, state = run(tx, steps=4)[-1]
  sbs_state = optax_sbs.find_state(state)
  assert isinstance(sbs_state, optax_sbs.StochasticBatchSizeState)
  wrapper_state = state.inner_state
  assert isinstance(wrapper_state, optax_sbs.WithStochasticBatchSizeState)
  helpers.assert_trees_equal(wrapper_state.update_fraction(), sbs_state.update_fraction())
  helpers.assert_trees_equal(wrapper_state.mean_count(), sbs_state.mean_count())
  assert any(float(c) > 1 for c in jax.tree.leaves(sbs_state.mean_count()))
  reset = optax_sbs.reset_accumulators(state)
  for k in jax.tree.leaves(optax_sbs.find_state(reset).count):
    np.testing.assert_array_equal(np.asarray(k), 1)
  # The momentum trace is the inner optimizer's, untouched by the reset.
  helpers.assert_trees_equal(reset.inner_state.inner_state, state.inner_state.inner_state)


def test_unsupported_inner_states_fail_at_init_with_a_clear_message():
  params = make_params()
  factored = optax_sbs.with_stochastic_batch_size(
    optax.adafactor(1e-2, min_dim_size_to_factor=2), key=0
  )
  with pytest.raises(ValueError, match='factored statistics'):
    factored.init(params)

  def init_reading_values(params):
    return {'scale': params['Dense_0']['kernel'].shape[0] * 1.0}

  reads = optax.GradientTransformation(init_reading_values, lambda u, s, p=None: (u, s))
  with pytest.raises(ValueError, match='cannot tell which leaves'):
    optax_sbs.with_stochastic_batch_size(reads, key=0).init(params)
  with pytest.raises(TypeError, match='inner must be an optax'):
    optax_sbs.with_stochastic_batch_size(lambda g: g, key=0)
  with pytest.raises(ValueError, match='probability'):
    optax_sbs.with_stochastic_batch_size(optax.sgd(0.1), key=0, probability=1.5)


def test_apply_if_finite_around_the_wrapper_leaves_its_state_on_nan():
  tx = optax.apply_if_finite(
    optax_sbs.with_stochastic_batch_size(optax.adam(1e-2), key=0), max_consecutive_errors=3
  )
  params = make_params()
  update = jax.jit(tx.update)
  rng = np.random.default_rng(0)
  _, state = update(random_grads(rng), tx.init(params), params)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), random_grads(rng))
  updates, after = update(bad, state, params)
  for u in jax.tree.leaves(updates):
    np.testing.assert_array_equal(np.asarray(u), 0)
  assert int(after.notfinite_count) == 1
  keep = lambda s: jax.tree.map(
    lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
    s.inner_state,
  )
  helpers.assert_trees_equal(keep(after), keep(state))


def test_default_lam_is_zero_around_any_optimizer_and_the_papers_in_sbs():
  """The wrapper's masks are those of lam=0 (which differ from lam=-4's on
  layers of unequal magnitude); sbs and the transform keep the paper's -4."""
  params = make_params()
  grads = random_grads(np.random.default_rng(3))  # leaves of unequal magnitude

  def chi(tx):
    _, state = tx.update(grads, tx.init(params), params)
    return [np.asarray(k == 1) for k in jax.tree.leaves(optax_sbs.find_state(state).count)]

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))

  adam = optax.adam(1e-2)
  default = chi(optax_sbs.with_stochastic_batch_size(adam, key=2))
  assert same(default, chi(optax_sbs.with_stochastic_batch_size(adam, key=2, lam=0.0)))
  assert not same(default, chi(optax_sbs.with_stochastic_batch_size(adam, key=2, lam=-4.0)))
  paper = chi(optax_sbs.with_stochastic_batch_size(optax.sgd(0.1), key=2, lam=-4.0))
  assert same(paper, chi(optax_sbs.sbs(0.1, key=2)))
  assert same(paper, chi(optax.chain(optax_sbs.stochastic_batch_size(2), optax.sgd(0.1))))
