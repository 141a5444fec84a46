"""benchmarks/lm_speed.py: a smoke run and its errors (the ratios are
harness.stats.ratios_to_baseline's, tested in harness/stats_test.py).

The script imports the lm example's modules by their plain names, so it runs
in its own process here (the benchmarks' tests also import the cifar
example's modules of the same names).
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _lm_speed(argv):
  """The script run in its own process with ``argv``."""
  return subprocess.run(
    [sys.executable, os.path.join(HERE, 'lm_speed.py'), *argv],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )


def test_smoke_run_times_every_cell_against_adamw_in_the_same_rounds(tmp_path):
  out = tmp_path / 'speed.md'
  argv = ['--smoke', '--rounds', '3', '--steps', '1', '--out', str(out)]
  done = _lm_speed(argv)
  assert done.returncode == 0, done.stderr[-3000:]
  payload = json.loads(out.with_suffix('.json').read_text())
  cells = {c['cell']: c for c in payload['cells']}
  assert set(cells) == {'adamw', 'sbs_lam0', 'sbs_p05', 'lr_dropout', 'dropout'}
  assert cells['adamw']['ratio'] == 1.0
  assert all(len(c['tokens_per_sec_per_round']) == 3 for c in cells.values())
  assert all(c['median'] > 0 and c['ratio'] > 0 for c in cells.values())
  text = out.read_text()
  assert '- versions: ' in text and 'flax ' in text and '--smoke' in payload['command']
  assert text.count('\n| ') == 1 + len(cells)  # the head and one row per cell
  assert '| dropout | adamw, dropout=0.1 |' in text


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--rounds', '0'], '--rounds and --steps must be at least 1'),
    (['--study', 'overfit'], 'study overfit trains the cifar example, not lm'),
    (['--smoke'], '--out is needed'),
  ],
)
def test_bad_input_is_a_usage_error(argv, message):
  done = _lm_speed(argv)
  assert done.returncode == 2 and message in done.stderr
