"""train.py and its modules: training runs, devices, trials, resuming, throughput."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import Config
from configs.default import ConfigError
import models
import parallel
import steps
import train
import trials


def test_default_momentum_is_the_paper_pairing():
  assert [train.default_momentum(b) for b in (16, 32, 64, 128)] == [0, 0.3, 0.6, 0.9]
  assert train.default_momentum(256) == 0.9 and train.default_momentum(8) == 0.0


def test_single_vs_eight_devices_same_result(tiny, tiny_data):
  """Batch sharded over 8 devices (BatchNorm over the global batch) == 1."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  data = tiny_data
  config = Config(**tiny, methods=('sgd', 'sbs'))
  one = train.run(config, data, mesh=parallel.mesh_over_local_devices(1))
  eight = train.run(config, data, mesh=parallel.mesh_over_local_devices(8))
  assert len(one) == len(eight) == 6
  for a, b in zip(one, eight):
    for key in ('train_loss', 'val_loss', 'val_accuracy'):
      np.testing.assert_allclose(a[key], b[key], rtol=2e-3, atol=1e-3, err_msg=key)


def test_training_learns_and_sbs_probability_one_equals_sgd(tiny, tiny_data):
  data = tiny_data
  mesh = parallel.mesh_over_local_devices(1)
  sgd = train.run(Config(**tiny, methods=('sgd',)), data, mesh=mesh)
  assert sgd[-1]['val_accuracy'] > 60  # chance is 25%
  assert sgd[-1]['train_loss'] < sgd[0]['train_loss']
  p1 = train.run(Config(**tiny, methods=('sbs',), probability=1.0), data, mesh=mesh)
  for a, b in zip(sgd, p1):
    np.testing.assert_allclose(a['train_loss'], b['train_loss'], rtol=1e-5)
    assert b['sbs_update_fraction'] == 1.0 and b['sbs_mean_count'] == 1.0


def test_trials_differ_and_methods_are_paired(tiny, tiny_data):
  data = tiny_data
  config = Config(**dict(tiny, epochs=1, trials=2), methods=('sgd', 'sbs'), probability=1.0)
  rows = train.run(config, data, mesh=parallel.mesh_over_local_devices(1))
  by = {(r['method'], r['trial']): r for r in rows}
  # p = 1 SBS is SGD: same trial seed -> same run; other seed -> other run.
  assert by['sgd', 0]['train_loss'] == pytest.approx(by['sbs', 0]['train_loss'], rel=1e-5)
  assert by['sgd', 0]['train_loss'] != by['sgd', 1]['train_loss']


class Interrupt(Exception):
  pass


def test_resume_equals_uninterrupted(tmp_path, tiny, tiny_data):
  """Stop after epoch 2 of the SBS run, resume: same rows, same final state."""
  data = tiny_data
  mesh = parallel.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=3), methods=('sgd', 'sbs'), workdir=str(tmp_path / 'a'))
  whole = train.run(config, data, mesh=mesh, checkpoint=True)

  interrupted = dataclasses.replace(config, workdir=str(tmp_path / 'b'))

  def stop_in_sbs(method, trial):
    def progress(row):
      if method == 'sbs' and row['epoch'] == 2:
        raise Interrupt

    return progress

  with pytest.raises(Interrupt):
    train.run(interrupted, data, mesh=mesh, checkpoint=True, progress_factory=stop_in_sbs)
  resumed = train.run(interrupted, data, mesh=mesh, resume=True)
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]
  assert strip(resumed) == strip(whole)

  import checkpointing  # pylint: disable=g-import-not-at-top

  template = steps.create_state(
    models.create_model('small_cnn', 4),
    train.build_tx(config, 'sbs', 1),
    (8, 8, 3),
    jax.random.key(0),
    jax.random.key(0),
  )
  finals = []
  for workdir in (config.workdir, interrupted.workdir):
    ckpt = checkpointing.RunCheckpointer(workdir, 'sbs', 0)
    finals.append(ckpt.restore(template)[0])
    ckpt.close()
  for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # kept out of the default run for time; run with -m slow
def test_pmap_train_state_script_eight_vs_one_device(tiny_data):
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  import pmap_train  # pylint: disable=g-import-not-at-top

  data = tiny_data
  losses_1, state_1 = pmap_train.train(data, 1, steps=12, batch_size=16)
  losses_8, state_8 = pmap_train.train(data, 8, steps=12, batch_size=16)
  np.testing.assert_allclose(losses_1, losses_8, rtol=1e-3)
  for leaf in jax.tree.leaves(state_8.params):  # replicas identical
    for r in range(1, 8):
      np.testing.assert_array_equal(np.asarray(leaf[r]), np.asarray(leaf[0]))
  for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_8.params)):
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), rtol=1e-3, atol=1e-4)
  c1 = optax_sbs_counts(state_1)
  c8 = optax_sbs_counts(state_8)
  mismatch = np.mean([np.mean(a != b) for a, b in zip(c1, c8)])
  assert mismatch < 0.01  # masks agree up to rare rounding flips of p


def optax_sbs_counts(state):
  import optax_sbs  # pylint: disable=g-import-not-at-top

  sbs = optax_sbs.find_state(state.opt_state)
  return [np.asarray(k[0]) for k in jax.tree.leaves(sbs.count)]


@pytest.mark.slow  # kept out of the default run for time; run with -m slow
def test_vectorized_trials_equal_sequential_trials(tiny, tiny_data):
  data = tiny_data
  mesh = parallel.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=2, trials=2, augment=True), methods=('sgd', 'sbs'))
  sequential = train.run(config, data, mesh=mesh)
  vectorized = train.run(config, data, mesh=mesh, vectorized=True)
  key = lambda r: (r['method'], r['trial'], r['epoch'])
  sequential, vectorized = sorted(sequential, key=key), sorted(vectorized, key=key)
  assert [key(r) for r in sequential] == [key(r) for r in vectorized]
  for a, b in zip(sequential, vectorized):
    for name in ('train_loss', 'val_loss', 'val_accuracy', 'sbs_mean_count'):
      if name in a:
        np.testing.assert_allclose(
          a[name], b[name], rtol=2e-3, atol=1e-3, err_msg=f'{name} {key(a)}'
        )
  with pytest.raises(ConfigError, match='do not checkpoint'):
    train.run(config, data, mesh=mesh, vectorized=True, checkpoint=True)


def test_throughput_leaves_out_the_compiling_step(monkeypatch):
  clock = iter([0.0, 10.0, 11.0])  # start, after the compiling step, end
  monkeypatch.setattr(trials.time, 'perf_counter', lambda: next(clock))
  throughput = trials.Throughput(compiles=True)
  for _ in range(3):
    throughput.step(jnp.zeros(()), 16)
  assert throughput.per_second() == 32.0  # 2 steps x 16 images in 1 s
  clock = iter([0.0, 10.0, 12.0])
  only = trials.Throughput(compiles=True)
  only.step(jnp.zeros(()), 16)
  assert only.per_second() == 16 / 12.0  # one step: compile included
  clock = iter([0.0, 4.0])
  later = trials.Throughput(compiles=False)
  later.step(jnp.zeros(()), 16)
  later.step(jnp.zeros(()), 16)
  assert later.per_second() == 8.0


@pytest.mark.parametrize(
  'field,value,match',
  [
    ('sbs_momentum', 'both', 'sbs_momentum must be one of frozen, chain'),
    ('group', 'layer', "group must be 'type' or 'single'"),
    ('global_normalization', 'median', "global_normalization must be 'std' or 'mean'"),
    ('model', 'vgg19', "unknown model 'vgg19'"),
    ('methods', ('adam',), 'unknown method adam'),
  ],
)
def test_validate_names_a_bad_programmatic_config(field, value, match):
  """Configs built in Python (not from flags) are checked before training."""
  with pytest.raises(ConfigError, match=match):
    train.validate(dataclasses.replace(Config(), **{field: value}), 1)
