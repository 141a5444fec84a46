"""benchmarks/golden_runs.py: the examples still train as they did."""

import os
import subprocess
import sys

import pytest

import golden_runs


@pytest.mark.parametrize('example', sorted(golden_runs.RUNS))
def test_the_golden_runs_train_again_as_they_did(example):
  done = subprocess.run(
    [sys.executable, os.path.join(golden_runs.BENCHMARKS, 'golden_runs.py'), example, '--check'],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'{example}: 0 differences' in done.stdout


def test_differences_name_what_moved():
  row = {'step': 10, 'val_loss': 2.5, 'sbs_update_fraction': 0.5, 'params_sha256': 'ab'}
  expected = {'sbs p=0.5': [row], 'sbs lam=0': [row]}
  assert golden_runs.differences(expected, expected) == []
  close = dict(row, val_loss=2.5 * (1 + 1e-6))
  assert golden_runs.differences(expected, {'sbs p=0.5': [close], 'sbs lam=0': [close]}) == []
  moved = dict(row, val_loss=2.6, sbs_update_fraction=0.5 + 1e-9)
  found = {'sbs p=0.5': [moved], 'sbs lam=0': [moved]}
  assert golden_runs.differences(expected, found) == [
    'sbs p=0.5 row 0: val_loss 2.6, expected 2.5',
    'sbs p=0.5 row 0: sbs_update_fraction 0.500000001, expected exactly 0.5',
    'sbs lam=0 row 0: val_loss 2.6, expected 2.5',
  ]
  rehashed = {name: [dict(row, params_sha256='cd')] for name in expected}
  assert golden_runs.differences(expected, rehashed) == []  # a hash of floats is left out
