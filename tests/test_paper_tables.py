"""benchmarks/paper_tables.py: cells, pairing, statistics, cache, the table."""

import dataclasses
import os
import sys

import numpy as np
import pytest

from configs.default import EMBEDDED_SAMPLE
from configs.default import Config
import input_pipeline
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import paper_tables  # noqa: E402
import trial_cache  # noqa: E402


def test_paper_tables_trial_alone_equals_trial_in_a_run(tiny, tiny_data):
  """A cell's trial t runs alone as seed + t: the same run as trial t of a
  multi-trial run (what the per-trial cache relies on)."""
  data = tiny_data
  mesh = train.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=1, trials=2), optimizers=('sbs',))
  together = train.run(config, data, mesh=mesh)
  alone = train.run(
    Config(**dict(tiny, epochs=1, trials=1, seed=1), optimizers=('sbs',)), data, mesh=mesh
  )
  strip = lambda r: {k: v for k, v in r.items() if k not in ('images_per_sec', 'trial')}
  assert strip(alone[0]) == strip(together[1])


def test_paper_tables_cells_and_pairing():
  cells = paper_tables.cells(paper_tables.SCALES['cpu'], {'3', '4', '5'})
  t3 = [c for c in cells if c.table == '3']
  assert len(t3) == 18
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
  assert trial_cache._claim(lock)  # pylint: disable=protected-access
  assert not trial_cache._claim(lock)  # held by this live process
  with open(lock, 'w') as f:  # left by a process that died
    f.write('999999999')
  assert trial_cache._claim(lock)  # pylint: disable=protected-access


def test_paired_difference_confidence_interval():
  a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.0, 2.5, 2.0])
  mean, lo, hi, wins = trial_cache.paired_difference(a, b)
  d = a - b  # 0.5, 1, 0.5, 2: mean 1, sd 0.7071, t(0.975, 3) = 3.1824
  half = 3.1824463 * np.std(d, ddof=1) / 2
  assert mean == pytest.approx(1.0)
  assert (lo, hi) == pytest.approx((1 - half, 1 + half), rel=1e-6)
  assert wins == 4
  # Losses: a wins where it is lower.
  assert trial_cache.paired_difference(a, b, better='lower')[3] == 0
  assert trial_cache.paired_difference(b, a, better='lower')[:3] == pytest.approx((-1, -hi, -lo))
  with pytest.raises(ValueError, match='better'):
    trial_cache.paired_difference(a, b, better='smaller')


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


def test_paired_interval_is_scipys_and_one_trial_has_none():
  from scipy import stats  # noqa: PLC0415

  rng = np.random.default_rng(0)
  a, b = rng.normal(45, 1, 5), rng.normal(44, 1, 5)
  mean, lo, hi, _ = trial_cache.paired_difference(a, b)
  d = a - b
  half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)  # by hand
  assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-12)
  assert np.isnan(trial_cache.paired_difference(a[:1], b[:1])[1])
  assert trial_cache.mean_std(np.array([41.0])) == '41.00'
  assert trial_cache.mean_std(np.array([41.0, 43.0])) == '42.00 ± 1.41'


@pytest.mark.parametrize('dataset', ['/nonexistent/cifar10.npz', 'imagenet2012'])
def test_an_unusable_dataset_is_an_error_with_status_2(dataset, capsys, tmp_path):
  with pytest.raises(SystemExit) as exit_info:
    paper_tables.main(['--dataset', dataset, '--workdir', str(tmp_path), '--cached-only'])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith('error: ')


def test_tfds_failures_become_data_errors(monkeypatch):
  import tensorflow_datasets as tfds  # noqa: PLC0415

  def offline(*args, **kwargs):
    raise ConnectionError('no network')

  monkeypatch.setattr(tfds, 'data_source', offline)
  with pytest.raises(input_pipeline.DataError, match='TFDS could not load it'):
    input_pipeline.load('cifar10')


def test_cells_filter_runs_only_the_matching_cells_and_rejects_bad_patterns(
  tmp_path, tiny_data, capsys
):
  data = tiny_data
  npz = tmp_path / 'tiny.npz'
  np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  common = ['--scale', 'smoke', '--dataset', str(npz), '--workdir', str(tmp_path), '--cached-only']
  out = tmp_path / 't3.md'
  paper_tables.main(common + ['--tables', '3', '--cells', 'relative', '--out', str(out)])
  rows = [line for line in out.read_text().splitlines() if line.startswith('| ')]
  assert len(rows) == 2 and 'relative (mu - M) / M | not run yet' in rows[1]
  for pattern, message in (('(', 'not a regular expression'), ('nothing', 'matches no cell')):
    with pytest.raises(SystemExit) as exit_info:
      paper_tables.main(common + ['--tables', '3', '--cells', pattern])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
