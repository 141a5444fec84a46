"""The on-device loop: every trial of a method in one program."""

import device_loop
import numpy as np

from configs.default import Config


def config(tiny, trials, epochs=2, **fields):
  options = dict(tiny, trials=trials, epochs=epochs, train_fraction=1 / 3)
  return Config(**{**options, **fields})


def quiet(*args):
  del args


def test_vmapped_trials_equal_trials_run_alone(tiny, tiny_data):
  """Trial t of the one vmapped program is the run of seed + t on its own:
  the trials share nothing but the program."""

  def sbs(cfg):
    return device_loop.run_on_device(cfg, tiny_data, None, log=quiet, methods=('sbs',))['sbs']

  both, second = sbs(config(tiny, 2)), sbs(config(tiny, 1, seed=1))
  for name, values in both['curves'].items():
    values = np.asarray(values)
    np.testing.assert_allclose(
      values[:, 1], np.asarray(second['curves'][name])[:, 0], rtol=2e-4, atol=1e-4, err_msg=name
    )
    assert not np.allclose(values[:, 0], values[:, 1]), f'{name}: trials 0 and 1 identical'


def test_training_learns_and_reports_after_every_epoch(tiny, tiny_data):
  written = []
  results = device_loop.run_on_device(
    config(tiny, 2, epochs=3), tiny_data, None, log=quiet, on_epoch=written.append
  )
  assert len(written) == 3 and sorted(results) == ['sbs', 'sgd']
  for r in results.values():
    assert r['epochs'] == 3 and r['train_examples'] == 32
    train = np.asarray(r['curves']['train_loss'])
    assert train.shape == (3, 2) and np.all(train[-1] < train[0]), train
    assert r['steps_per_epoch'] == 32 // 16 and r['step_ms'] > 0


def test_time_budget_stops_every_method_after_the_same_epoch(tiny, tiny_data):
  results = device_loop.run_on_device(config(tiny, 1, epochs=50), tiny_data, 1e-3, log=quiet)
  assert {r['epochs'] for r in results.values()} == {1}
