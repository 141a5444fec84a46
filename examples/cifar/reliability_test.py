"""Faults and restarts of the training program: SIGKILL mid-run, a
half-written checkpoint, and bad input that must fail before training."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs.default import Config
import main as cli
import parallel
import train

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'main.py')


def _assert_trees_equal(a, b):
  """Equal structure and bit-identical leaves (keys by their data)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _cli(flags, *args):
  return [sys.executable, MAIN, '--methods', 'sbs', *flags, *args]


def test_sigkill_mid_run_then_resume_equals_uninterrupted(
  tmp_path, tiny_npz, tiny_run_flags, process_env
):
  """SIGKILL once a checkpoint exists; --resume finishes with the same state."""
  data = tiny_npz
  common = ['--dataset', str(data), '--epochs', '12']
  env = process_env()
  # The uninterrupted run alongside the one to be killed.
  whole_err = open(tmp_path / 'whole.err', 'w')
  whole = subprocess.Popen(
    _cli(tiny_run_flags, *common, '--workdir', str(tmp_path / 'whole')),
    stdout=subprocess.DEVNULL,
    stderr=whole_err,
    env=env,
  )
  killed_dir = tmp_path / 'killed'
  ckpts = killed_dir / 'checkpoints' / 'sbs_trial0'
  proc = subprocess.Popen(
    _cli(tiny_run_flags, *common, '--workdir', str(killed_dir)),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    env=env,
  )
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpts.is_dir() and any(d.isdigit() for d in os.listdir(ckpts)):
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'finished before it was killed'
  whole.wait(timeout=600)
  whole_err.close()
  assert whole.returncode == 0, (tmp_path / 'whole.err').read_text()[-2000:]
  finished = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert finished and finished[-1] < 12

  resumed = subprocess.run(
    _cli(tiny_run_flags, *common, '--workdir', str(killed_dir), '--resume'),
    capture_output=True,
    text=True,
    timeout=600,
    env=env,
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]

  def rows(workdir):
    with open(workdir / 'history.json') as f:
      return [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in json.load(f)['rows']]

  assert rows(killed_dir) == rows(tmp_path / 'whole')
  # The final checkpoints hold the same train state, bit for bit.
  finals = []
  for workdir in (tmp_path / 'whole', killed_dir):
    path = workdir / 'checkpoints' / 'sbs_trial0' / '12' / 'state'
    with ocp.StandardCheckpointer() as ckpt:
      finals.append(ckpt.restore(path))
  _assert_trees_equal(finals[0], finals[1])


def test_half_written_checkpoint_is_ignored_on_resume(tmp_path, tiny, tiny_data):
  """A save killed mid-write leaves Orbax's temporary folder; a resume reads
  the last finalised epoch and finishes like an uninterrupted run."""

  data = tiny_data
  mesh = parallel.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=3), methods=('sbs',), workdir=str(tmp_path / 'a'))
  whole = train.run(config, data, mesh=mesh, checkpoint=True)

  class Stop(Exception):
    pass

  def stop_after_2(method, trial):
    def progress(row):
      if row['epoch'] == 2:
        raise Stop

    return progress

  cut = Config(**dict(tiny, epochs=3), methods=('sbs',), workdir=str(tmp_path / 'b'))
  with pytest.raises(Stop):
    train.run(cut, data, mesh=mesh, checkpoint=True, progress_factory=stop_after_2)
  run_dir = tmp_path / 'b' / 'checkpoints' / 'sbs_trial0'
  # What a SIGKILL during the save of epoch 3 leaves behind.
  partial = run_dir / '3.orbax-checkpoint-tmp-1234567890'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_bytes(b'\x00' * 100)
  resumed = train.run(cut, data, mesh=mesh, resume=True)
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]
  assert strip(resumed) == strip(whole)


@pytest.mark.parametrize(
  'override,match',
  [
    ('truncated', 'not a readable .npz'),
    (dict(x_train=np.zeros((96, 8, 8), np.uint8)), r'must have shape \(N, H, W, C\)'),
    (dict(y_train=np.full(96, -3)), 'negative labels'),
    (dict(y_test=np.full(40, 7)), 'never occur in y_train'),
    (dict(x_test=np.full((40, 8, 8, 3), np.nan, np.float32)), 'NaN or Inf'),
    ('fraction 0.001', 'leaves no training examples'),
    ('fraction 0.1', 'fewer than one batch'),
  ],
)
def test_bad_input_to_the_training_program_fails_before_training(
  tmp_path, capsys, tiny_npz, tiny_run_flags, override, match
):
  path = pathlib.Path(tiny_npz)
  args = [
    '--dataset',
    str(path),
    '--epochs',
    '1',
    *tiny_run_flags,
    '--workdir',
    str(tmp_path / 'w'),
  ]
  if override == 'truncated':
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])
  elif isinstance(override, str):
    args += ['--train-fraction', override.split()[1]]
  else:
    with np.load(path) as f:
      arrays = dict(f)
    arrays.update(override)
    np.savez(path, **arrays)
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and re.search(match, err), err
  # Nothing was trained: no checkpoint of any run exists.
  checkpoints = tmp_path / 'w' / 'checkpoints'
  assert not checkpoints.exists() or not any(
    any(True for _ in d.iterdir()) for d in checkpoints.iterdir()
  )
