"""benchmarks/paper_slice.py (the Table 4 slice on the example's on-device loop) and
benchmarks/device_check.sh (the checks to run on an accelerator)."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import paper_slice

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'device_check.sh')


@pytest.fixture(scope='module')
def data():
  return paper_slice.synthetic_dataset(n_train=128, n_test=60, hw=8)


def config(trials, epochs=2):
  sl = dataclasses.replace(paper_slice.SLICES['smoke'], trials=trials, epochs=epochs)
  return paper_slice.make_config(sl, learning_rate=0.05)


def run(cfg, data, budget=None):
  return paper_slice.device_loop.run_on_device(
    cfg, data, budget, log=lambda s: None, methods=paper_slice.METHODS
  )


def test_report_pairs_the_trials(data, tmp_path):
  results = run(config(2, epochs=3), data)
  out = tmp_path / 'slice.md'
  cfg = config(2, epochs=3)
  paper_slice.write(str(out), ['# header', ''], results, cfg, paper_slice.SLICES['smoke'])
  text = out.read_text()
  sbs_row = next(line for line in text.splitlines() if line.startswith('| sbs |'))
  sgd = np.asarray(results['sgd']['curves']['test_accuracy'])[-1]
  sbs = np.asarray(results['sbs']['curves']['test_accuracy'])[-1]
  assert f'{np.mean(sbs - sgd):+.2f}' in sbs_row  # 3 epochs: the last 10% is the last epoch
  assert (tmp_path / 'slice.json').exists()


def test_report_says_when_the_time_budget_stopped_the_run(data, tmp_path):
  results = run(config(1, epochs=50), data, budget=1e-3)
  out = tmp_path / 'slice.md'
  paper_slice.write(str(out), [], results, config(1, epochs=50), paper_slice.SLICES['smoke'])
  assert 'Stopped by the time budget after epoch 1 of 50' in out.read_text()


def test_export_subset_is_class_balanced(data, tmp_path):
  path = tmp_path / 'subset.npz'
  paper_slice.export_subset(data, 0.25, 20, str(path))
  with np.load(path) as f:
    assert len(f['y_train']) == 32 and len(f['y_test']) == 20
    assert np.all(np.bincount(f['y_train']) == 8)
    assert f['x_train'].dtype == np.uint8


def test_bad_arguments_exit_with_a_message(capsys):
  with pytest.raises(SystemExit) as e:
    paper_slice.main(['--epochs', '0', '--smoke'])
  assert e.value.code == 2 and '--epochs' in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    paper_slice.main([])
  assert e.value.code == 2 and '--dataset is required' in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(capsys):
  with pytest.raises(SystemExit) as e:
    paper_slice.main(['--dataset', '/nonexistent/cifar.npz'])
  assert e.value.code == 2 and 'no such .npz file' in capsys.readouterr().err


def test_device_check_rejects_unknown_arguments():
  result = subprocess.run(['bash', SCRIPT, '--bogus'], capture_output=True, text=True)
  assert result.returncode == 2
  assert "unknown argument '--bogus'" in result.stderr


@pytest.mark.slow
def test_device_check_smoke_writes_every_result(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  result = subprocess.run(
    ['bash', SCRIPT, '--smoke', '--out', str(tmp_path)], capture_output=True, text=True, env=env
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  names = sorted(os.listdir(tmp_path))
  assert names == [
    'device_tests_cpu.md',
    'paper_slice_cpu.json',
    'paper_slice_cpu.md',
    'update_speed_cpu.md',
    'update_speed_leaves_cpu.md',
  ]
  assert 'passed' in (tmp_path / 'device_tests_cpu.md').read_text()
  speed = (tmp_path / 'update_speed_cpu.md').read_text()
  assert '| transformer_tiny |' in speed and 'magma(adam)' in speed
  leaves = (tmp_path / 'update_speed_leaves_cpu.md').read_text()
  assert '| 16 |' in leaves and 'all-reduce' in leaves
