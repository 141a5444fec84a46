"""benchmarks/lm_speed.py: the table's medians and ratios, and a smoke run.

The script imports the lm example's modules by their plain names, so it runs
in its own process here (the benchmarks' tests also import the cifar
example's modules of the same names).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_smoke_run_times_every_cell_against_adamw_in_the_same_rounds(tmp_path):
  out = tmp_path / 'speed.md'
  argv = ['--smoke', '--rounds', '3', '--steps', '1', '--out', str(out)]
  done = subprocess.run(
    [sys.executable, os.path.join(HERE, 'lm_speed.py'), *argv],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  payload = json.loads(out.with_suffix('.json').read_text())
  cells = {c['cell']: c for c in payload['cells']}
  assert set(cells) == {'adamw', 'sbs_lam0', 'sbs_p05', 'lr_dropout', 'dropout'}
  assert cells['adamw']['vs_adamw'] == 1.0
  assert all(c['tokens_per_sec'] > 0 and c['vs_adamw'] > 0 for c in cells.values())
  text = out.read_text()
  assert '- versions: ' in text and 'flax ' in text and '--smoke' in payload['command']
  assert text.count('\n| ') == 1 + len(cells)  # the head and one row per cell


def test_bad_counts_are_a_usage_error():
  done = subprocess.run(
    [sys.executable, os.path.join(HERE, 'lm_speed.py'), '--rounds', '0'],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert done.returncode == 2 and '--rounds and --steps must be at least 1' in done.stderr
