"""The paper's comparison methods in the training program, and the tables script."""

import dataclasses
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_example_train import TINY
from test_example_train import tiny_dataset

import optax_sbs

from configs.default import EMBEDDED_SAMPLE
from configs.default import Config
import input_pipeline
import models
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import paper_tables  # pylint: disable=g-import-not-at-top,wrong-import-position


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


def test_method_names_and_their_optimisers():
  config = Config(**TINY)
  key = jax.random.key(0)
  for method in train.OPTIMIZERS:
    tx = train.build_optimizer(config, method, 100, key)
    params = {'w': jnp.ones((3, 2))}
    state = tx.init(params)
    updates, _ = tx.update(
      {'w': jnp.ones((3, 2))}, state, params, value_fn=lambda p: jnp.sum(p['w'] ** 2)
    )
    assert updates['w'].shape == (3, 2)
  with pytest.raises(train.ConfigError, match='unknown optimizer'):
    train.validate(Config(**dict(TINY), optimizers=('adamw',)), 1)
  for bad, match in (
    ({'dropout_rate': 1.0}, 'dropout_rate'),
    ({'esgd_inner_steps': 0}, 'esgd_inner_steps'),
    ({'esgd_gamma': 0.0}, 'esgd_gamma'),
    ({'asgd_xi': 100.0}, 'asgd'),
  ):
    with pytest.raises(train.ConfigError, match=match):
      train.validate(Config(**dict(TINY, **bad)), 1)


def test_sbs_momentum_semantics_frozen_holds_waiting_elements_chain_moves_them():
  config = Config(**dict(TINY, momentum=0.9, probability=0.5))
  params = {'w': jnp.ones((8, 8))}
  grads = {'w': jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)}
  moved = {}
  for semantics in train.SBS_MOMENTUM:
    tx = train.build_optimizer(
      dataclasses.replace(config, sbs_momentum=semantics), 'sbs', 100, jax.random.key(0)
    )
    state = tx.init(params)
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
  with pytest.raises(train.ConfigError, match='sbs_momentum'):
    train.validate(Config(**dict(TINY, sbs_momentum='dense')), 1)


def test_entropy_sgd_outer_step_is_the_authors_lr_times_x_minus_mu():
  """The program's esgd steps by -lr (x - mu) (the authors' code), not by
  Algorithm 1's -lr gamma (x - mu)."""
  config = Config(**dict(TINY, esgd_gamma=0.05, momentum=0.0))
  key = jax.random.key(3)
  lr = train.learning_rate_schedule(config, 100)(0)
  params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)}
  value_fn = lambda p: jnp.sum(jnp.sin(p['w']) ** 2)
  grads = jax.grad(value_fn)(params)
  tx = train.build_optimizer(config, 'esgd', 100, key)
  updates, _ = tx.update(grads, tx.init(params), params, value_fn=value_fn)
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


def test_every_method_trains_on_tiny_data():
  data = tiny_dataset()
  config = Config(**dict(TINY, epochs=2), optimizers=('dropout', 'adrop', 'esgd', 'asgd'))
  rows = train.run(config, data, mesh=train.mesh_over_local_devices(1))
  for method in config.optimizers:
    mine = [r for r in rows if r['optimizer'] == method]
    assert len(mine) == 2
    assert all(np.isfinite(r['train_loss']) for r in mine), method
    assert mine[-1]['val_accuracy'] > 25, (method, mine[-1])  # chance: 25%


@pytest.mark.slow
def test_vectorized_trials_equal_sequential_for_entropy_sgd():
  """Each trial's Entropy-SGD noise key goes into its vmapped state."""
  data = tiny_dataset()
  mesh = train.mesh_over_local_devices(1)
  config = Config(**dict(TINY, epochs=1, trials=2, esgd_noise=1e-2), optimizers=('esgd',))
  seq = train.run(config, data, mesh=mesh)
  vec = train.run(config, data, mesh=mesh, vectorized=True)
  for a, b in zip(seq, vec):
    np.testing.assert_allclose(a['train_loss'], b['train_loss'], rtol=2e-3)


def test_paper_tables_trial_alone_equals_trial_in_a_run():
  """A cell's trial t runs alone as seed + t: the same run as trial t of a
  multi-trial run (what the per-trial cache relies on)."""
  data = tiny_dataset()
  mesh = train.mesh_over_local_devices(1)
  config = Config(**dict(TINY, epochs=1, trials=2), optimizers=('sbs',))
  together = train.run(config, data, mesh=mesh)
  alone = train.run(
    Config(**dict(TINY, epochs=1, trials=1, seed=1), optimizers=('sbs',)), data, mesh=mesh
  )
  strip = lambda r: {k: v for k, v in r.items() if k not in ('images_per_sec', 'trial')}
  assert strip(alone[0]) == strip(together[1])


def test_paper_tables_cells_and_pairing():
  cells = paper_tables.cells(paper_tables.SCALES['cpu'], {'3', '4', '5'})
  t3 = [c for c in cells if c.table == '3']
  assert len(t3) == 17
  assert {dict(c.overrides).get('alpha') for c in t3 if 'local' in c.label} == {-0.1, 0.0, 0.1, 1.0}
  assert len([c for c in cells if c.table == '4']) == 18
  assert [c.method for c in cells if c.table == '5'] == [
    'sgd',
    'dropout',
    'adrop',
    'esgd',
    'asgd',
    'sbs',
  ]
  # Every cell is paired with the SGD cell of its data, batch and rate.
  base = Config()
  lr_cell = next(
    c
    for c in t3
    if c.label.startswith('lr check: SBS') and dict(c.overrides)['learning_rate'] == 0.2
  )
  sgd_config = lr_cell.baseline().config(base)
  assert sgd_config.optimizers == ('sgd',) and sgd_config.learning_rate == 0.2
  assert sgd_config.train_fraction == 1 / 32 and sgd_config.batch_size == 16


def test_paper_tables_momentum_cells_pair_frozen_and_chain_with_sgd():
  cells = paper_tables.cells(paper_tables.SCALES['cpu'], ['m'])
  by_label = {c.label: c for c in cells}
  assert len(cells) == 18
  chain, frozen = (by_label[f'SBS {s}, 1/32, batch 32'] for s in ('chain', 'frozen'))
  base = Config()
  assert chain.config(base).sbs_momentum == 'chain'
  assert frozen.config(base).sbs_momentum == 'frozen'
  assert chain.baseline() == frozen.baseline() == by_label['SGD, 1/32, batch 32'].baseline()
  combined = by_label['SBS combined frozen, 1/64, batch 128'].config(base)
  assert (combined.batch_size, combined.lam, combined.scale_by_count) == (128, 0.0, True)
  assert train.default_momentum(128) == 0.9


def test_cell_key_ignores_where_the_data_and_the_cache_lie():
  a = Config(dataset='/one/place/cifar10.npz', workdir='/x', data_dir='/d')
  b = Config(dataset='/elsewhere/cifar10.npz', workdir='/y')
  assert paper_tables.cell_key(a) == paper_tables.cell_key(b)
  assert paper_tables.cell_key(a) != paper_tables.cell_key(
    dataclasses.replace(a, sbs_momentum='chain')
  )


def test_a_trial_is_claimed_by_one_live_process(tmp_path):
  lock = str(tmp_path / 'cell_trial0.json.lock')
  assert paper_tables._claim(lock)  # pylint: disable=protected-access
  assert not paper_tables._claim(lock)  # held by this live process
  with open(lock, 'w') as f:  # left by a process that died
    f.write('999999999')
  assert paper_tables._claim(lock)  # pylint: disable=protected-access


def test_paired_difference_confidence_interval():
  a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.0, 2.5, 2.0])
  mean, lo, hi, wins = paper_tables.paired_difference(a, b)
  d = a - b  # 0.5, 1, 0.5, 2: mean 1, sd 0.7071, t(0.975, 3) = 3.1824
  half = 3.1824463 * np.std(d, ddof=1) / 2
  assert mean == pytest.approx(1.0)
  assert (lo, hi) == pytest.approx((1 - half, 1 + half), rel=1e-6)
  assert wins == 4


def test_paper_tables_smoke_run_writes_table_and_caches(tmp_path):
  out = tmp_path / 'tables.md'
  argv = [
    '--scale',
    'smoke',
    '--tables',
    '4',
    '--dataset',
    EMBEDDED_SAMPLE,
    '--workdir',
    str(tmp_path / 'work'),
    '--out',
    str(out),
  ]
  paper_tables.main(argv)
  text = out.read_text()
  assert '| SGD, 1/100, batch 16 | ' in text and '(baseline)' in text
  sbs_row = next(r for r in text.splitlines() if r.startswith('| SBS, 1/100'))
  cols = sbs_row.split(' | ')
  assert cols[-3].endswith('/2')  # paired over the 2 trials
  assert float(cols[-2]) > 0  # final train loss
  # SBS's update fraction and mean count, from the logged rows.
  fraction, count = (float(v) for v in cols[-1].rstrip(' |').split(' / '))
  assert 0 < fraction < 1 and count >= 1
  sgd_row = next(r for r in text.splitlines() if r.startswith('| SGD, 1/100'))
  assert sgd_row.endswith('|  |')  # no SBS statistics for SGD
  assert 'class-balanced subset of 100 test images' in text
  assert 'JPEG' not in text  # only said of the shared cifar10.npz
  assert (tmp_path / 'tables_curves.png').exists()
  cached = sorted(os.listdir(tmp_path / 'work'))
  assert '| SBS combined, 1/100, batch 16 | ' in text
  assert len(cached) == 6  # 3 cells x 2 trials, one file per finished trial
  # A second run reads the cache (no training): same table.
  paper_tables.main(argv)
  assert out.read_text().split('- training time')[1] == text.split('- training time')[1]
  # --cached-only trains nothing and lists an unfinished cell as such.
  sgd_trial1 = next(
    f
    for f in cached
    if f.endswith('_trial1.json') and 'sgd' in (tmp_path / 'work' / f).read_text()[:400]
  )
  os.remove(tmp_path / 'work' / sgd_trial1)
  paper_tables.main(argv + ['--cached-only'])
  partial = out.read_text()
  assert len(os.listdir(tmp_path / 'work')) == 5
  assert '| SGD, 1/100, batch 16 | not run yet (trials cached, cell and its SGD: 1/2) |' in partial
  assert (
    '| SBS, 1/100, batch 16 | not run yet (trials cached, cell and its SGD: 2/2, 1/2) |' in partial
  )


def test_balanced_test_subset_takes_every_class_equally():
  # Class-major order, as in the shared CIFAR-10 copy: a prefix would hold
  # one class only.
  y = np.repeat(np.arange(10), 30).astype(np.int32)
  x = np.arange(300).reshape(300, 1, 1, 1) * np.ones((1, 2, 2, 3), np.int64)
  data = input_pipeline.Dataset('t', x, y, x, y, 10, True)
  sub = paper_tables.balanced_test_subset(data, 50)
  np.testing.assert_array_equal(np.bincount(sub.y_test), [5] * 10)
  # The first five of each class, in the split's order, images with labels.
  np.testing.assert_array_equal(
    sub.x_test[:, 0, 0, 0], (np.arange(10)[:, None] * 30 + np.arange(5)).ravel()
  )
  np.testing.assert_array_equal(sub.y_test, np.repeat(np.arange(10), 5))
  assert len(sub.y_train) == 300


def test_final_train_loss_is_each_trials_last_epoch():
  rows = [{'trial': t, 'epoch': e, 'train_loss': 10 * t + e} for t in range(3) for e in (2, 1, 3)]
  np.testing.assert_array_equal(paper_tables.final_train_loss(rows), [3, 13, 23])


def test_sbs_statistics_average_over_epochs_and_trials():
  rows = [
    {'trial': t, 'epoch': e, 'sbs_update_fraction': 0.1 * (t + e), 'sbs_mean_count': 1.0 + t * e}
    for t in range(2)
    for e in (1, 2)
  ]
  # fractions 0.1, 0.2, 0.2, 0.3 -> 0.2; counts 1, 1, 2, 3 -> 1.75
  assert paper_tables.sbs_statistics(rows) == '0.200 / 1.75'
  assert paper_tables.sbs_statistics([{'trial': 0, 'epoch': 1}]) == ''


def test_best_rates_compares_each_method_at_its_own_best_rate():
  scale = paper_tables.SCALES['cpu']
  todo = paper_tables.cells(scale, ['3'])
  base = Config()
  # Fabricated accuracies: SGD best at 0.1, SBS (paper setting) best at 0.2;
  # every other SBS reading at 99 must not count (it is not the paper
  # setting at another rate).
  acc = {
    ('sgd', 0.05): 40.0,
    ('sgd', 0.1): 45.0,
    ('sgd', 0.2): 42.0,
    ('sbs', 0.05): 30.0,
    ('sbs', 0.1): 35.0,
    ('sbs', 0.2): 44.0,
  }
  results = {}
  for cell in todo + [c.baseline() for c in todo]:
    config = cell.config(base)
    value = acc.get((cell.method, config.learning_rate), 99.0)
    if cell.method == 'sbs' and (
      config.alpha,
      config.lam,
      config.group,
      config.magnitude,
      config.scale_by_count,
    ) != (0.1, -4.0, 'type', 'cma', False):
      value = 99.0
    results[paper_tables.cell_key(config)] = [
      {'optimizer': cell.method, 'trial': t, 'epoch': 1, 'val_accuracy': value + t}
      for t in range(3)
    ]
  (line,) = paper_tables.best_rates(todo, results, base, epochs=1)
  assert 'SGD 0.05: 41.00, 0.1: 46.00, 0.2: 43.00' in line
  assert 'SBS (alpha 0.1, lam -4) 0.05: 31.00, 0.1: 36.00, 0.2: 45.00' in line
  assert 'best rate (0.2) vs SGD at its best (0.1)' in line
  assert '-1.00 points' in line and 'better in 0/3' in line


def test_frozen_vs_chain_pairs_cells_that_differ_only_in_semantics():
  scale = paper_tables.SCALES['cpu']
  todo = paper_tables.cells(scale, ['m'])
  base = Config()
  results = {}
  for cell in todo + [c.baseline() for c in todo]:
    config = cell.config(base)
    # Fabricated: frozen = chain + 1 + t/2 for the combined reading at
    # 1/64 only; every other pair ties.
    bump = (
      config.sbs_momentum == 'frozen' and config.scale_by_count and config.train_fraction == 1 / 64
    )
    results[paper_tables.cell_key(config)] = [
      {
        'optimizer': cell.method,
        'trial': t,
        'epoch': 1,
        'val_accuracy': 40.0 + t + (1 + t / 2 if bump else 0),
      }
      for t in range(3)
    ]
  lines = paper_tables.frozen_vs_chain(todo, results, base, epochs=1)
  assert lines[0] == 'Frozen vs chain, paired by trial:'
  assert len(lines) == 1 + 7  # batch 32 paper setting + 3 fractions x 2
  (bumped,) = [line for line in lines if 'combined, 1/64' in line]
  assert 'frozen - chain +1.50 points' in bumped and 'in 3/3 trials' in bumped
  assert all('+0.00 points' in line for line in lines[1:] if line != bumped)
