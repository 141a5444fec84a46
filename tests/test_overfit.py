"""benchmarks/overfit.py: its cells, the pairing and the learning-rate check,
the JSON it writes, from a synthetic trial cache (no training)."""

import json
import os
import sys

import numpy as np

from configs.default import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import overfit  # noqa: E402
import paper_tables  # noqa: E402


def _write_trials(workdir, base, cell, accuracies, train_accuracy=100.0):
  """Caches one trial per accuracy: constant test accuracy over epochs."""
  config = cell.config(base)
  for trial, accuracy in enumerate(accuracies):
    rows = [
      dict(
        optimizer=cell.method,
        trial=trial,
        epoch=epoch,
        train_loss=0.01,
        train_accuracy=train_accuracy,
        val_loss=2.0,
        val_accuracy=accuracy,
        images_per_sec=1.0,
      )
      for epoch in range(1, base.epochs + 1)
    ]
    path = os.path.join(workdir, f'{paper_tables.cell_key(config)}_trial{trial}.json')
    with open(path, 'w') as f:
      json.dump({'config': {}, 'trial': trial, 'rows': rows, 'seconds': 1.0}, f)


def test_cells_cover_the_issue_and_differ():
  names = [c.method for c in overfit.CELLS]
  assert names[:5] == ['sgd', 'dropout', 'adrop', 'esgd', 'asgd']
  sbs = [dict(c.options) for c in overfit.CELLS if c.method == 'sbs']
  assert {'alpha': 0.1, 'lam': -4.0} in sbs
  assert {'alpha': 0.1, 'lam': 0.0} in sbs
  assert {'alpha': 0.1, 'lam': 0.0, 'scale_by_count': True} in sbs
  assert {'alpha': 0.1, 'lam': -4.0, 'global_normalization': 'mean'} in sbs
  base = Config()
  keys = {paper_tables.cell_key(c.config(base)) for c in overfit.CELLS}
  assert len(keys) == len(overfit.CELLS)


def test_report_from_cache_pairs_cells_and_checks_rates(tmp_path, tiny_data):
  data = tiny_data
  npz = tmp_path / 'tiny.npz'
  np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  base = overfit.base_config(overfit.REGIMES['smoke'], str(npz), None, 'unused')
  workdir = tmp_path / 'cache'
  workdir.mkdir()
  sgd, dropout, *others = overfit.CELLS
  _write_trials(workdir, base, sgd, [40.0, 42.0])
  _write_trials(workdir, base, dropout, [43.0, 44.0], train_accuracy=95.0)
  for i, cell in enumerate(others):
    _write_trials(workdir, base, cell, [30.0 + i, 31.0 + i])
  best_sbs = others[-1]  # the highest of the SBS cells (the last one)
  for reference, at_half, at_double in ((sgd, 39.0, 45.0), (best_sbs, 20.0, 50.0)):
    _write_trials(workdir, base, overfit.with_rate(reference, 0.05), [at_half, at_half])
    _write_trials(workdir, base, overfit.with_rate(reference, 0.2), [at_double, at_double + 2])
  out = tmp_path / 'overfit.md'
  overfit.main(
    ['--regime', 'smoke', '--dataset', str(npz), '--workdir', str(workdir), '--out', str(out)]
    + ['--cached-only']
  )
  cells = {c['name']: c for c in json.load(open(tmp_path / 'overfit.json'))['cells']}
  assert cells['SGD']['vs_sgd'] is None and cells['SGD']['test_accuracy'] == 41.0
  drop = cells['Dropout (0.5)']
  assert drop['train_accuracy'] == 95.0 and drop['trials'] == 2
  assert drop['vs_sgd']['diff'] == 2.5 and drop['vs_sgd']['wins'] == 2
  lo, hi = drop['vs_sgd']['ci95']
  assert lo < 2.5 < hi
  assert drop['method'] == 'dropout' and drop['options'] == {}
  # A rate cell is paired with SGD at its own rate.
  sbs_double = cells[f'{best_sbs.name}, lr=0.2']
  assert sbs_double['vs_sgd']['diff'] == 5.0 and sbs_double['options']['learning_rate'] == 0.2
  assert cells['SGD, lr=0.2']['vs_sgd'] is None  # SGD at a rate is that rate's baseline
  text = out.read_text()
  assert f'{best_sbs.name} 0.05: 20.00, 0.1: ' in text
  assert 'The SBS cell at its best rate (0.2) vs SGD at its best (0.2), paired: +5.00' in text
  assert (tmp_path / 'overfit_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_unfinished_cells_are_reported_as_such(tmp_path, tiny_data):
  data = tiny_data
  npz = tmp_path / 'tiny.npz'
  np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  out = tmp_path / 'o.md'
  overfit.main(
    ['--regime', 'smoke', '--dataset', str(npz), '--workdir', str(tmp_path / 'empty')]
    + ['--out', str(out), '--cached-only']
  )
  text = out.read_text()
  assert '| SGD | not run yet (0/2 trials cached) |' in text
  assert 'Learning-rate check: not finished yet.' in text
  assert json.load(open(tmp_path / 'o.json')) == {'cells': []}
