"""results.py: the summary over trials and the results files."""

import json

import numpy as np
import pytest

from configs.default import Config
import parallel
import results
import train


def test_summarize_last_ten_percent_and_max():
  rows = []
  for trial, accs in enumerate(
    [[10, 50, 40, 30, 20, 25, 30, 35, 40, 60, 62], [20, 30, 40, 50, 60, 70, 80, 90, 10, 20, 30]]
  ):
    rows += [
      dict(method='sgd', trial=trial, epoch=e + 1, val_accuracy=a) for e, a in enumerate(accs)
    ]
  s = results.summarize(rows, epochs=11)['sgd']
  assert s['last_epochs'] == 2  # ceil(10% of 11)
  assert s['per_trial_last'] == [61.0, 25.0]
  assert s['last_mean'] == 43.0
  assert s['last_std'] == pytest.approx(np.std([61, 25], ddof=1))
  assert s['max_mean'] == 76.0


def test_results_files(tmp_path, tiny, tiny_data):
  data = tiny_data
  config = Config(**dict(tiny, epochs=2, trials=2), methods=('sgd', 'sbs'), workdir=str(tmp_path))
  rows = train.run(config, data, mesh=parallel.mesh_over_local_devices(1))
  summary = results.summarize(rows, config.epochs)
  paths = results.write(str(tmp_path), config, rows, summary)
  history = json.load(open(paths['history.json']))
  assert len(history['rows']) == 8
  assert open(paths['history.csv']).read().count('\n') == 9
  md = open(paths['summary.md']).read()
  assert '| sgd |' in md and '| sbs |' in md and 'paired by trial' in md
  assert open(paths['curves.png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert json.load(open(paths['config.json']))['trials'] == 2


def test_summary_of_one_trial_shows_no_spread():
  rows = [
    dict(method=o, trial=0, epoch=e, val_accuracy=40.0 + e) for o in ('sgd', 'sbs') for e in (1, 2)
  ]
  text = results.summary_markdown(results.summarize(rows, 2), Config(epochs=2))
  assert '±' not in text.split('|---|')[1]
  assert '| sgd | 42.00 | 42.00 | 42.00 |' in text
  two = rows + [dict(r, trial=1, val_accuracy=r['val_accuracy'] + 2) for r in rows]
  assert '| sgd | 43.00 ± 1.41 |' in results.summary_markdown(
    results.summarize(two, 2), Config(epochs=2)
  )
