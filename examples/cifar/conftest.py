"""Test set-up of the CIFAR example: 8 virtual CPU devices, tiny data.

The example's tests run in their own pytest process
(``python -m pytest -n 2 examples/cifar``): pytest puts this folder on
``sys.path``, so they import the example's modules as ``main.py`` does.

The device flag must be set before JAX initialises its backends, so it is
set here, at collection time, for the whole run. Single-device tests are
unaffected: they run on the default device.
"""

import os

_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='session')
def process_env():
  """``process_env(devices=1) -> env`` of a training process a test starts:
  this one's, with ``devices`` virtual CPU devices (other XLA flags kept)."""

  def env(devices: int = 1) -> dict:
    flags = [f for f in os.environ.get('XLA_FLAGS', '').split() if not f.startswith(_FLAG[:-1])]
    if devices > 1:
      flags.append(f'--xla_force_host_platform_device_count={devices}')
    return dict(os.environ, XLA_FLAGS=' '.join(flags))

  return env


# The training program's options for runs of a few seconds on tiny data.
_TINY = dict(
  model='small_cnn',
  epochs=3,
  batch_size=16,
  trials=1,
  eval_batch_size=8,
  augment=False,
  learning_rate=0.05,
)


def _tiny_dataset(n_train=96, n_test=40, hw=8):
  """Four learnable classes (the class sets the mean colour) of 8x8 images."""
  import input_pipeline  # noqa: PLC0415  (after the device flag)

  return input_pipeline.synthetic(n_train, n_test, hw, name='tiny')


@pytest.fixture
def tiny():
  """Keyword options of the training program's Config for tiny runs."""
  return dict(_TINY)


@pytest.fixture(scope='session')
def tiny_data():
  """A tiny in-memory dataset (96 train / 40 test images, 4 classes)."""
  return _tiny_dataset()


@pytest.fixture
def tiny_npz(tmp_path, tiny_data):
  """The tiny dataset as an .npz file (what ``--dataset`` takes); its path."""
  path = tmp_path / 'tiny.npz'
  d = tiny_data
  np.savez(path, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
  return str(path)


@pytest.fixture
def tiny_run_flags():
  """The command line's flags for one trial on tiny batches."""
  return ['--trials', '1', '--batch-size', '16', '--eval-batch-size', '8']
