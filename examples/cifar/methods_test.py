"""The paper's comparison methods in the training program."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_sbs

from configs.default import Config
from configs.default import ConfigError
import methods
import models
import parallel
import steps
import train


def test_depth_rates_are_linear_in_depth():
  assert models.depth_rates(4, 0.5) == [0.125, 0.25, 0.375, 0.5]
  assert models.depth_rates(3, 0.0) == [0.0, 0.0, 0.0]


def _init(model, x):
  return model.init(jax.random.key(0), x, train=False)


def _perturbed(variables):
  """Params moved off their init (ResNets zero-init each block's last BN
  scale, which makes a dropped residual branch invisible at init)."""
  leaves, treedef = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(9), len(leaves))
  params = treedef.unflatten(
    [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  return dict(variables, params=params)


def _apply(model, x, seed):
  variables = _perturbed(_init(model, x))
  out, _ = model.apply(
    variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(seed)}
  )
  return out


# A two-block ResNet runs the ResNet code path at a fraction of the cost.
TINY_RESNET = dict(stage_sizes=(1, 1), block=models.BasicBlock)


@pytest.mark.parametrize(
  'make',
  [
    # The plain-CNN paths also train in test_every_method_trains_on_tiny_data.
    pytest.param(lambda **kw: models.SmallCNN(**kw), marks=pytest.mark.slow),
    lambda **kw: models.ResNet(**TINY_RESNET, **kw),
  ],
  ids=['small_cnn', 'resnet'],
)
def test_regularised_models_keep_params_and_are_identity_at_test_time(make):
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  plain = make()
  for kwargs in ({'dropout_rate': 0.5}, {'depth_dropout': 0.5}):
    model = make(**kwargs)
    v_plain, v = _init(plain, x), _init(model, x)
    assert jax.tree.structure(v) == jax.tree.structure(v_plain)
    # Test time: no dropout, the same function as the plain model.
    test_time = lambda m, v: m.apply(v, x, train=False)
    np.testing.assert_allclose(test_time(model, v), test_time(plain, v), rtol=1e-6)
    # Training: random, depending on the dropout key.
    a, b = _apply(model, x, seed=1), _apply(model, x, seed=2)
    assert not np.allclose(a, b)


def test_stochastic_depth_drops_whole_residual_branches():
  """A block with drop rate r outputs relu(x) (branch dropped) for about r of
  the examples, and relu(x + y / (1 - r)) for the others."""

  class Probe(nn.Module):
    @nn.compact
    def __call__(self, x):
      norm = lambda **kw: lambda z: z  # identity "norm"
      return models.BasicBlock(4, norm, 1, 0.3, True)(x)

  x = jax.random.normal(jax.random.key(0), (4000, 2, 2, 4))
  probe = Probe()
  v = probe.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)}, x)
  out = probe.apply(v, x, rngs={'dropout': jax.random.key(3)})
  dropped = np.all(np.isclose(out, jax.nn.relu(x)), axis=(1, 2, 3))
  assert abs(dropped.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 4000)


def test_method_names_and_their_txs(tiny):
  config = Config(**tiny)
  key = jax.random.key(0)
  for method in methods.METHODS:
    tx = train.build_tx(config, method, 100)
    params = {'w': jnp.ones((3, 2))}
    state = steps.with_tx_key(tx.init(params), key)
    updates, _ = tx.update(
      {'w': jnp.ones((3, 2))}, state, params, value_fn=lambda p: jnp.sum(p['w'] ** 2)
    )
    assert updates['w'].shape == (3, 2)
    if not methods.METHODS[method].takes_value_fn:  # the train step passes none
      updates, _ = tx.update({'w': jnp.ones((3, 2))}, state, params)
      assert updates['w'].shape == (3, 2)
  assert [m for m, e in methods.METHODS.items() if e.takes_value_fn] == ['esgd']
  with pytest.raises(ConfigError, match='unknown method'):
    train.validate(Config(**dict(tiny), methods=('adamw',)), 1)
  for bad, match in (
    ({'dropout_rate': 1.0}, 'dropout_rate'),
    ({'esgd_inner_steps': 0}, 'esgd_inner_steps'),
    ({'esgd_gamma': 0.0}, 'esgd_gamma'),
    ({'asgd_xi': 100.0}, 'asgd'),
  ):
    with pytest.raises(ConfigError, match=match):
      train.validate(Config(**dict(tiny, **bad)), 1)


def test_sbs_momentum_semantics_frozen_holds_waiting_elements_chain_moves_them(tiny):
  config = Config(**dict(tiny, momentum=0.9, probability=0.5))
  params = {'w': jnp.ones((8, 8))}
  grads = {'w': jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)}
  moved = {}
  for semantics in train.SBS_MOMENTUM:
    tx = train.build_tx(dataclasses.replace(config, sbs_momentum=semantics), 'sbs', 100)
    state = steps.with_tx_key(tx.init(params), jax.random.key(0))
    for _ in range(4):
      updates, state = tx.update(grads, state, params)
    released = np.asarray(optax_sbs.find_state(state).count['w']) == 1
    moved[semantics] = np.asarray(updates['w']) != 0
    if semantics == 'frozen':
      np.testing.assert_array_equal(moved['frozen'], released)
      assert any(
        isinstance(x, optax_sbs.WithStochasticBatchSizeState)
        for x in jax.tree.leaves(
          state, is_leaf=lambda x: isinstance(x, optax_sbs.WithStochasticBatchSizeState)
        )
      )
  assert moved['chain'].mean() > moved['frozen'].mean() + 0.2
  with pytest.raises(ConfigError, match='sbs_momentum'):
    train.validate(Config(**dict(tiny, sbs_momentum='dense')), 1)


def test_entropy_sgd_outer_step_is_the_authors_lr_times_x_minus_mu(tiny):
  """The program's esgd steps by -lr (x - mu) (the authors' code), not by
  Algorithm 1's -lr gamma (x - mu)."""
  config = Config(**dict(tiny, esgd_gamma=0.05, momentum=0.0))
  key = jax.random.key(3)
  lr = train.learning_rate_schedule(config, 100)(0)
  params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)}
  value_fn = lambda p: jnp.sum(jnp.sin(p['w']) ** 2)
  grads = jax.grad(value_fn)(params)
  tx = train.build_tx(config, 'esgd', 100)
  state = steps.with_tx_key(tx.init(params), key)
  updates, _ = tx.update(grads, state, params, value_fn=value_fn)
  scaled = optax_sbs.baselines.scale_by_entropy_sgd(
    key,
    num_inner_steps=config.esgd_inner_steps,
    inner_learning_rate=config.esgd_inner_learning_rate,
    gamma=0.05,
    noise=config.esgd_noise,
  )
  gamma_x_minus_mu, _ = scaled.update(grads, scaled.init(params), params, value_fn=value_fn)
  np.testing.assert_allclose(updates['w'], -lr * gamma_x_minus_mu['w'] / 0.05, rtol=1e-5)
  assert np.abs(updates['w']).max() > 1e-4


def test_every_method_trains_on_tiny_data(tiny, tiny_data):
  data = tiny_data
  config = Config(**dict(tiny, epochs=2), methods=('dropout', 'adrop', 'esgd', 'asgd'))
  rows = train.run(config, data, mesh=parallel.mesh_over_local_devices(1))
  for method in config.methods:
    mine = [r for r in rows if r['method'] == method]
    assert len(mine) == 2
    assert all(np.isfinite(r['train_loss']) for r in mine), method
    assert mine[-1]['val_accuracy'] > 25, (method, mine[-1])  # chance: 25%


@pytest.mark.slow
def test_vectorized_trials_equal_sequential_for_entropy_sgd(tiny, tiny_data):
  """Each trial's Entropy-SGD noise key goes into its vmapped state."""
  data = tiny_data
  mesh = parallel.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=1, trials=2, esgd_noise=1e-2), methods=('esgd',))
  seq = train.run(config, data, mesh=mesh)
  vec = train.run(config, data, mesh=mesh, vectorized=True)
  for a, b in zip(seq, vec):
    np.testing.assert_allclose(a['train_loss'], b['train_loss'], rtol=2e-3)
