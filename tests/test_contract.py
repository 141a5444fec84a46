"""The contract Optax's contributed optimizers pass (optax/contrib/_common_test.py),
for ``sbs`` (with momentum: the wrapper; without: the chain) and
``with_stochastic_batch_size``: extra args, no recompilation, convergence in
``lax.scan`` on four targets, inject_hyperparams (also of the bare
``stochastic_batch_size``), dtypes, MultiSteps, ``optax.tree.map_params`` and
state stability under ``lax.cond``, learning-rate schedules; and for every
export: dtypes, extra args, no recompilation, MultiSteps, trees of more than
2**32 elements.
"""

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs

# Leaves of rank 3 keep their last axis.
CONV_COLUMNS = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2)
# name -> (factory of keyword hyperparameters, those hyperparameters)
FACTORIES = {
  'sbs': (optax_sbs.sbs, dict(learning_rate=1e-3, key=0, momentum=0.9)),
  'sbs_without_momentum': (optax_sbs.sbs, dict(learning_rate=1e-3, key=0)),
  'sbs_columns': (
    optax_sbs.sbs,
    dict(learning_rate=1e-3, key=0, granularity=optax_sbs.columns(CONV_COLUMNS)),
  ),
  'sbs_around_adam': (
    functools.partial(optax_sbs.with_stochastic_batch_size, optax.adam(1e-2)),
    dict(key=0),
  ),
  'sbs_around_adamw_lam0': (
    functools.partial(optax_sbs.with_stochastic_batch_size, optax.adamw(1e-2, weight_decay=1e-4)),
    dict(key=1, lam=0.0),
  ),
}


def make(name, **overrides):
  factory, hparams = FACTORIES[name]
  return factory(**dict(hparams, **overrides))


def parabola(dtype):
  target = jnp.array([1.0, -1.0, 1.0], dtype)
  return (jnp.array([-1.0, 10.0, 1.0], dtype), target, lambda w: jnp.sum((w - target) ** 2))


def rosenbrock(dtype):
  return (
    jnp.zeros(2, dtype),
    jnp.ones(2, dtype),
    lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2,
  )


def matrix_parabola(dtype):
  target = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype)
  return (jnp.zeros((2, 2), dtype), target, lambda w: jnp.sum((w - target) ** 2))


def mixed_tree(dtype):
  target = {
    'v': jnp.array([1.0, -1.0, 2.0], dtype),
    'm': jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype),
  }
  return (
    jax.tree.map(jnp.zeros_like, target),
    target,
    lambda w: sum(jnp.sum((w[k] - target[k]) ** 2) for k in target),
  )


@pytest.mark.parametrize('target', [rosenbrock, mixed_tree])
@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_extra_args_accepted_and_no_recompilation(name, target):
  tx = make(name)
  initial, _, objective = target(jnp.float32)

  @jax.jit
  def step(params, state):
    grads = jax.grad(objective)(params)
    updates, state = tx.update(grads, state, params, not_expected_by_anyone=1, value=2.0)
    return optax.apply_updates(params, updates), state

  params, state = step(initial, tx.init(initial))
  with helpers.log_compilations() as logs:
    step(params, state)
  assert not logs


# The quadratic targets: SBS without momentum reaches their minimum to 1e-3
# (each element is updated eventually); the other cases to 3e-2.
QUADRATICS = ('parabola', 'matrix_parabola', 'mixed_tree')


@pytest.mark.parametrize('target', [parabola, rosenbrock, matrix_parabola, mixed_tree])
@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_converges_in_scan(name, target):
  tx = make(name)
  initial, solution, objective = target(jnp.float32)

  def step(carry, _):
    params, state = carry
    updates, state = tx.update(jax.grad(objective)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  state = optax.tree.map_params(tx, lambda v: v, tx.init(initial))
  (params, _), _ = jax.lax.scan(step, (initial, state), length=30_000)
  tight = name == 'sbs_without_momentum' and target.__name__ in QUADRATICS
  tolerance = 1e-3 if tight else 3e-2
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(solution)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tolerance, atol=tolerance)


# The contract's factories and the bare transformation, with hyperparameters.
INJECTABLE = dict(
  FACTORIES,
  stochastic_batch_size=(optax_sbs.stochastic_batch_size, dict(key=2, alpha=0.3, lam=-2.0)),
)


@pytest.mark.parametrize('name', sorted(INJECTABLE))
def test_inject_hyperparams_equals_plain(name):
  """Ten steps: the same updates, params and state, and the hyperparameters
  kept by inject_hyperparams are those given."""
  factory, hparams = INJECTABLE[name]
  plain = factory(**hparams)
  injected = optax.inject_hyperparams(factory)(**hparams)
  params = params_i = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
  grads = [jnp.ones((2, 3)), -jnp.linspace(0.1, 2.0, 20).reshape(2, 5, 2)]
  state, state_i = jax.jit(plain.init)(params), jax.jit(injected.init)(params)
  update, update_i = jax.jit(plain.update), jax.jit(injected.update)
  for _ in range(10):
    updates, state = update(grads, state, params)
    updates_i, state_i = update_i(grads, state_i, params_i)
    helpers.assert_trees_equal(updates, updates_i)
    params = optax.apply_updates(params, updates)
    params_i = optax.apply_updates(params_i, updates_i)
  helpers.assert_trees_equal((params, state), (params_i, state_i.inner_state))
  for k, v in hparams.items():
    if isinstance(v, float):
      assert float(state_i.hyperparams[k]) == pytest.approx(v)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_updates_keep_the_params_dtype_and_multisteps_accumulates(name, dtype):
  tx = make(name)
  params = jnp.array([1.0, 2.0], dtype)
  grads = jax.grad(lambda x: jnp.sum(x**2))(params)
  updates, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
  assert updates.dtype == params.dtype
  multi = optax.MultiSteps(tx, every_k_schedule=4)
  updates, _ = jax.jit(multi.update)(grads, jax.jit(multi.init)(params), params)
  np.testing.assert_array_equal(np.asarray(updates), 0)
  assert updates.dtype == params.dtype


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_tree_map_params_and_state_shape_and_dtype_stable_under_cond(name, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    tx = make(name)
    initial, _, objective = mixed_tree(dtype)

    @jax.jit
    def step(params, state):
      grads = jax.grad(objective)(params)
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
      updates, state = jax.lax.cond(
        cond, lambda: tx.update(grads, state, params), lambda: (params, state)
      )
      return optax.apply_updates(params, updates), state

    params, state = initial, optax.tree.map_params(tx, lambda v: v, tx.init(initial))
    for _ in range(2):
      params, new_state = step(params, state)
      assert all(p.dtype == dtype for p in jax.tree.leaves(params))
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
      state = jax.lax.cond(cond, lambda s=state: s, lambda s=new_state: s)


def test_sbs_accepts_a_learning_rate_schedule():
  initial, _, objective = parabola(jnp.float32)
  runs = []
  for lr in (1e-3, optax.constant_schedule(1e-3)):
    tx = optax_sbs.sbs(lr, key=0, momentum=0.9)
    params, state = initial, tx.init(initial)
    update = jax.jit(tx.update)
    for _ in range(10):
      updates, state = update(jax.grad(objective)(params), state, params)
      params = optax.apply_updates(params, updates)
    runs.append(params)
  np.testing.assert_allclose(np.asarray(runs[0]), np.asarray(runs[1]), rtol=1e-6)


# Every transformation the library exports, built as a user would, with the
# state type that tells it apart from the others.
def _value_fn(params):
  return jnp.sum(params**2)


EXPORTS = {
  'sbs': (
    lambda: optax_sbs.sbs(1e-2, key=0, momentum=0.9),
    optax_sbs.WithStochasticBatchSizeState,
  ),
  'with_stochastic_batch_size': (
    lambda: optax_sbs.with_stochastic_batch_size(optax.adam(1e-2), key=0),
    optax_sbs.WithStochasticBatchSizeState,
  ),
  'stochastic_batch_size': (
    lambda: optax.chain(optax_sbs.stochastic_batch_size(0), optax.sgd(1e-2)),
    optax_sbs.StochasticBatchSizeState,
  ),
  'masked_updates': (
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0),
    optax_sbs.MaskedUpdatesState,
  ),
  'magma': (
    lambda: optax_sbs.magma(optax.adam(1e-2), key=0),
    optax_sbs.MagmaState,
  ),
  'baselines.accelerated_sgd': (
    lambda: optax_sbs.baselines.accelerated_sgd(1e-2),
    optax_sbs.baselines.AcceleratedSGDState,
  ),
  'baselines.entropy_sgd': (
    lambda: optax_sbs.baselines.entropy_sgd(1e-2, key=0, noise=0.0),
    optax_sbs.baselines.ScaleByEntropySGDState,
  ),
  'baselines.scale_by_entropy_sgd': (
    lambda: optax.chain(optax_sbs.baselines.scale_by_entropy_sgd(0), optax.sgd(1e-2)),
    optax_sbs.baselines.ScaleByEntropySGDState,
  ),
}


def _state_types(state):
  """The NamedTuple types anywhere in an optimizer state."""
  found = set()

  def visit(node):
    if isinstance(node, tuple):
      if hasattr(node, '_fields'):
        found.add(type(node))
      for child in node:
        visit(child)

  visit(state)
  return found


def test_every_exported_transformation_is_in_the_contract():
  exported = {n for n in optax_sbs.__all__ if callable(getattr(optax_sbs, n))}
  exported |= {f'baselines.{n}' for n in optax_sbs.baselines.__all__}
  states = {n for n in exported if n.endswith('State')}
  helpers = {
    'columns',
    'rows',
    'find_state',
    'key_data_tree',
    'layer_statistics',
    'layers_from_axis_names',
    'layers_under',
    'maxtext_slice_names',
    'parameter_type',
    'reset_accumulators',
    'sigmoid_schedule',
    'single_group',
    'slice_names',
    'update_probability',
    'wrap_key_data_tree',
  }
  assert exported - states - helpers == set(EXPORTS)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
@pytest.mark.parametrize('name', sorted(EXPORTS))
def test_every_export_keeps_dtypes_accepts_extra_args_and_does_not_recompile(name, dtype):
  make, state_type = EXPORTS[name]
  tx = make()
  params = jnp.array([1.0, -2.0, 0.5], dtype)

  @jax.jit
  def step(params, state):
    grads = jax.grad(_value_fn)(params)
    updates, state = tx.update(grads, state, params, value_fn=_value_fn, not_for_anyone=1)
    return updates, optax.apply_updates(params, updates), state

  state = tx.init(params)
  updates, params, state = step(params, state)
  assert updates.dtype == params.dtype == jnp.dtype(dtype)
  with helpers.log_compilations() as logs:
    step(params, state)
  assert not logs
  # Methods are told apart by their state, not only by shapes: each holds
  # its own state type and no other export's (the wrapper holds SBS's).
  distinctive = {t for _, t in EXPORTS.values()}
  want = {state_type}
  if state_type is optax_sbs.WithStochasticBatchSizeState:
    want.add(optax_sbs.StochasticBatchSizeState)
  assert _state_types(state) & distinctive == want


@pytest.mark.parametrize('name', sorted(EXPORTS))
def test_every_export_inside_multisteps_accumulates_first(name):
  make, _ = EXPORTS[name]
  multi = optax.MultiSteps(make(), every_k_schedule=3)
  params = jnp.array([1.0, -2.0, 0.5])
  grads = jax.grad(_value_fn)(params)
  updates, _ = jax.jit(lambda g, s, p: multi.update(g, s, p, value_fn=_value_fn))(
    grads, multi.init(params), params
  )
  np.testing.assert_array_equal(np.asarray(updates), 0)


@pytest.mark.parametrize(
  'name',
  sorted(EXPORTS) + ['masked_updates_leaf', 'magma_element', 'sbs_fixed'],
)
def test_every_export_traces_on_a_tree_of_more_than_2_32_elements(name):
  """init and update of each family member on an abstract 6.4B-parameter tree
  with one leaf of 2**32 + 2**16 elements (jax.eval_shape: nothing allocated)."""
  extra = {
    'masked_updates_leaf': lambda: optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity='leaf'),
    'magma_element': lambda: optax_sbs.magma(optax.adam(1e-3), 0, granularity='element'),
    'sbs_fixed': lambda: optax_sbs.sbs(0.1, key=0, probability=0.5),
  }
  tx = extra[name]() if name in extra else EXPORTS[name][0]()
  params = {
    'huge': jax.ShapeDtypeStruct((2**16 + 1, 2**16), jnp.bfloat16),
    'big': jax.ShapeDtypeStruct((2**15, 2**16), jnp.bfloat16),
    'bias': jax.ShapeDtypeStruct((2**16,), jnp.bfloat16),
  }
  state = jax.eval_shape(tx.init, params)
  updates, new_state = jax.eval_shape(
    lambda g, s, p: tx.update(g, s, p, value_fn=lambda w: 0.0), params, state, params
  )
  assert jax.tree.map(lambda x: x.shape, updates) == jax.tree.map(lambda x: x.shape, params)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
