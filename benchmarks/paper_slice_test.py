"""benchmarks/paper_slice.py (the on-device Table 4 slice) and
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


def test_vmapped_trials_equal_trials_run_alone(data):
  """Trial t of the one vmapped program is the run of seed + t on its own:
  the trials share nothing but the program."""

  def sbs(cfg):
    return paper_slice.run_methods(cfg, data, None, log=lambda s: None, methods=('sbs',))['sbs']

  both, second = sbs(config(2)), sbs(dataclasses.replace(config(1), seed=1))
  for name, values in both['curves'].items():
    values = np.asarray(values)
    np.testing.assert_allclose(
      values[:, 1], np.asarray(second['curves'][name])[:, 0], rtol=2e-4, atol=1e-4, err_msg=name
    )
    assert not np.allclose(values[:, 0], values[:, 1]), f'{name}: trials 0 and 1 identical'


def test_training_learns_and_report_pairs_the_trials(data, tmp_path):
  written = []
  results = paper_slice.run_methods(
    config(2, epochs=3), data, None, log=lambda s: None, on_epoch=written.append
  )
  assert len(written) == 3 and sorted(results) == sorted(paper_slice.METHODS)
  for r in results.values():
    train = np.asarray(r['curves']['train_loss'])
    assert np.all(train[-1] < train[0]), train
    assert r['steps_per_epoch'] == 32 // 16 and r['step_ms'] > 0
  out = tmp_path / 'slice.md'
  cfg = config(2, epochs=3)
  paper_slice.write(str(out), ['# header', ''], results, cfg, paper_slice.SLICES['smoke'])
  text = out.read_text()
  sbs_row = next(line for line in text.splitlines() if line.startswith('| sbs |'))
  sgd = np.asarray(results['sgd']['curves']['test_accuracy'])[-1]
  sbs = np.asarray(results['sbs']['curves']['test_accuracy'])[-1]
  assert f'{np.mean(sbs - sgd):+.2f}' in sbs_row  # 3 epochs: the last 10% is the last epoch
  assert (tmp_path / 'slice.json').exists()


def test_time_budget_stops_both_methods_after_the_same_epoch(data, tmp_path):
  results = paper_slice.run_methods(config(1, epochs=50), data, 1e-3, log=lambda s: None)
  assert {r['epochs'] for r in results.values()} == {1}
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
