"""Faults and restarts, library and training program together: Orbax round
trips of the optimizer state, masks identical across device counts, a
non-finite gradient without a guard, SIGKILL mid-run and half-written
checkpoints of the training program, and bad input to it."""

import json
import os
import signal
import subprocess
import sys
import time

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_sbs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, 'examples', 'cifar', 'main.py')


def _params():
  return {
    'Conv_0': {'kernel': jnp.zeros((3, 3, 2, 4))},
    'Dense_0': {'kernel': jnp.zeros((8, 3)), 'bias': jnp.zeros(3)},
  }


def _grads(t):
  key = jax.random.fold_in(jax.random.key(5), t)
  leaves, treedef = jax.tree.flatten(_params())
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _train(tx, params, state, steps, start=0):
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
  for t in range(start, start + steps):
    params, state = step(params, state, _grads(t))
  return params, state


@pytest.mark.parametrize('recipe', ['orbax', 'key_data_helpers'])
@pytest.mark.parametrize('semantics', ['chain', 'wrapper'])
def test_optimizer_state_round_trips_through_orbax_and_resumes_bit_for_bit(
  tmp_path, semantics, recipe
):
  """The README's recipe: Orbax saves the state as it is (typed keys
  included) and restores it into an abstract template (jax.eval_shape); or
  the state as raw key data, wrapped back with an abstract ``like``."""
  if semantics == 'chain':
    tx = optax.chain(optax_sbs.stochastic_batch_size(3), optax.sgd(0.1, momentum=0.9))
  else:
    tx = optax_sbs.with_stochastic_batch_size(optax.adamw(1e-2, weight_decay=0.1), key=3)
  params = _params()
  whole = _train(tx, params, tx.init(params), 10)

  half = _train(tx, params, tx.init(params), 5)
  abstract = jax.eval_shape(lambda: half)
  if recipe == 'orbax':
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(tmp_path / 'ckpt', half)
    with ocp.StandardCheckpointer() as ckpt:
      restored = ckpt.restore(tmp_path / 'ckpt', abstract)
  else:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(tmp_path / 'ckpt', optax_sbs.key_data_tree(half))
    with ocp.StandardCheckpointer() as ckpt:
      raw = ckpt.restore(tmp_path / 'ckpt', optax_sbs.key_data_tree(abstract))
    restored = optax_sbs.wrap_key_data_tree(raw, like=abstract)
  sbs_state = optax_sbs.find_state(restored)
  assert jnp.issubdtype(sbs_state.key.dtype, jax.dtypes.prng_key)
  helpers.assert_trees_equal(restored, half)
  resumed = _train(tx, *restored, 5, start=5)
  helpers.assert_trees_equal(resumed, whole)


@pytest.mark.parametrize('num_devices', [2, 8])
def test_masks_bit_identical_across_device_counts_and_shardings(num_devices):
  if jax.device_count() < num_devices:
    pytest.skip(f'needs {num_devices} devices')
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  mesh = Mesh(np.array(jax.devices()[:num_devices]), ('x',))
  tx = optax_sbs.stochastic_batch_size(7)
  params = {'w': jnp.zeros((16, 24)), 'b': jnp.zeros(24)}
  grads = {
    'w': jax.random.normal(jax.random.key(0), (16, 24)),
    'b': jax.random.normal(jax.random.key(1), (24,)),
  }
  one = jax.jit(tx.update)(grads, tx.init(params), params)
  for spec in (P(), P('x')):  # replicated, and rows sharded over devices
    put = lambda t: jax.device_put(
      t, {'w': NamedSharding(mesh, spec), 'b': NamedSharding(mesh, P())}
    )
    sharded_params, sharded_grads = put(params), put(grads)
    out = jax.jit(tx.update)(sharded_grads, tx.init(sharded_params), sharded_params)
    for a, b in zip(jax.tree.leaves(one[1].count), jax.tree.leaves(out[1].count)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(out[0])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def _tiny_npz(path):
  rng = np.random.default_rng(0)
  y = np.arange(96) % 4
  x = np.clip(y[:, None, None, None] * 60 + 20 + rng.normal(0, 30, (96, 8, 8, 3)), 0, 255).astype(
    np.uint8
  )
  np.savez(path, x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])


# The training program's options for one trial on tiny batches.
_TINY_RUN = ['--trials', '1', '--batch-size', '16', '--eval-batch-size', '8']


def _cli(*args):
  return [sys.executable, MAIN, '--methods', 'sbs', *_TINY_RUN, *args]


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
  """SIGKILL once a checkpoint exists; --resume finishes with the same state."""
  data = tmp_path / 'tiny.npz'
  _tiny_npz(data)
  common = ['--dataset', str(data), '--epochs', '12']
  env = dict(os.environ, XLA_FLAGS='')
  # The uninterrupted run alongside the one to be killed.
  whole_err = open(tmp_path / 'whole.err', 'w')
  whole = subprocess.Popen(
    _cli(*common, '--workdir', str(tmp_path / 'whole')),
    stdout=subprocess.DEVNULL,
    stderr=whole_err,
    env=env,
  )
  killed_dir = tmp_path / 'killed'
  ckpts = killed_dir / 'checkpoints' / 'sbs_trial0'
  proc = subprocess.Popen(
    _cli(*common, '--workdir', str(killed_dir)),
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
    _cli(*common, '--workdir', str(killed_dir), '--resume'),
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
  helpers.assert_trees_equal(finals[0], finals[1])


def test_unguarded_non_finite_gradient_freezes_its_group_as_documented():
  """README: without apply_if_finite, a NaN element makes its group's
  statistics NaN, so those leaves stop being updated (p = NaN -> chi False)
  and the NaN stays in the CMA; other groups go on; reset_accumulators
  clears it."""
  tx = optax_sbs.stochastic_batch_size(0)
  params = _params()
  state = tx.init(params)
  update = jax.jit(tx.update)
  bad = _grads(0)
  bad['Conv_0']['kernel'] = bad['Conv_0']['kernel'].at[0, 0, 0, 0].set(jnp.nan)
  updates, state = update(bad, state, params)
  for _ in range(5):
    updates, state = update(_grads(1), state, params)
  conv_count = np.asarray(state.count['Conv_0']['kernel'])
  assert np.all(conv_count == 7)  # never updated since the NaN: k = 1 + 6
  assert np.all(np.asarray(updates['Conv_0']['kernel']) == 0)
  assert np.isnan(np.asarray(state.cma['Conv_0']['kernel'])).sum() == 1
  # Another group (dense) is unaffected: finite, and updated at some steps.
  assert np.all(np.isfinite(np.asarray(updates['Dense_0']['kernel'])))
  assert np.any(np.asarray(state.count['Dense_0']['kernel']) < 7)
  # The documented recovery: reset the accumulators.
  state = optax_sbs.reset_accumulators(state)
  updates, state = update(_grads(2), state, params)
  assert np.all(np.isfinite(np.asarray(updates['Conv_0']['kernel'])))
  assert np.any(np.asarray(state.count['Conv_0']['kernel']) == 1)


def test_half_written_checkpoint_is_ignored_on_resume(tmp_path, tiny, tiny_data):
  """A save killed mid-write leaves Orbax's temporary folder; a resume reads
  the last finalised epoch and finishes like an uninterrupted run."""

  from configs.default import Config  # pylint: disable=g-import-not-at-top
  import parallel  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top

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
def test_bad_input_to_the_training_program_fails_before_training(tmp_path, capsys, override, match):
  import main as cli  # pylint: disable=g-import-not-at-top

  path = tmp_path / 'd.npz'
  _tiny_npz(path)
  args = ['--dataset', str(path), '--epochs', '1', *_TINY_RUN, '--workdir', str(tmp_path / 'w')]
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
  assert err.startswith('error: ') and __import__('re').search(match, err), err
  # Nothing was trained: no checkpoint of any run exists.
  checkpoints = tmp_path / 'w' / 'checkpoints'
  assert not checkpoints.exists() or not any(
    any(True for _ in d.iterdir()) for d in checkpoints.iterdir()
  )
