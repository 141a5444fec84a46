"""examples/cifar: models, optimizers, training, summaries, CLI errors, 8 devices."""

import dataclasses
import json
import os
import subprocess
import sys
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from configs.default import Config
import main as cli
import methods
import models
import results
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
  'name,num_params',
  [
    ('small_cnn', 24_346),
    ('wide_cnn', 175_402),
    ('vgg11', 9_228_362),
    ('resnet18', 11_173_962),
    ('resnet50', 23_520_842),
  ],
)
def test_model_shapes_and_sizes(name, num_params):
  model = models.create_model(name, num_classes=10)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert sum(v.size for v in jax.tree.leaves(variables['params'])) == num_params
  assert 'batch_stats' in variables
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out.shape == (2, 10)
  # CIFAR variants: a 3x3 stem on the RGB input.
  stem = variables['params'].get('stem_conv') or variables['params']['Conv_0']
  assert stem['kernel'].shape[:3] == (3, 3, 3)


def test_model_parameter_types_for_sbs_grouping():
  import optax_sbs  # pylint: disable=g-import-not-at-top

  variables = jax.eval_shape(
    lambda: models.ResNet18().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  kinds = {
    optax_sbs.parameter_type(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  }
  assert kinds == {'conv', 'norm', 'dense', 'bias'}


def test_unknown_model():
  with pytest.raises(ValueError, match="unknown model 'vgg19'"):
    models.create_model('vgg19', 10)


def test_default_momentum_is_the_paper_pairing():
  assert [train.default_momentum(b) for b in (16, 32, 64, 128)] == [0, 0.3, 0.6, 0.9]
  assert train.default_momentum(256) == 0.9 and train.default_momentum(8) == 0.0


def test_summarize_last_ten_percent_and_max():
  rows = []
  for trial, accs in enumerate(
    [[10, 50, 40, 30, 20, 25, 30, 35, 40, 60, 62], [20, 30, 40, 50, 60, 70, 80, 90, 10, 20, 30]]
  ):
    rows += [
      dict(optimizer='sgd', trial=trial, epoch=e + 1, val_accuracy=a) for e, a in enumerate(accs)
    ]
  s = train.summarize(rows, epochs=11)['sgd']
  assert s['last_epochs'] == 2  # ceil(10% of 11)
  assert s['per_trial_last'] == [61.0, 25.0]
  assert s['last_mean'] == 43.0
  assert s['last_std'] == pytest.approx(np.std([61, 25], ddof=1))
  assert s['max_mean'] == 76.0


def test_single_vs_eight_devices_same_result(tiny, tiny_data):
  """Batch sharded over 8 devices (BatchNorm over the global batch) == 1."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  data = tiny_data
  config = Config(**tiny, optimizers=('sgd', 'sbs'))
  one = train.run(config, data, mesh=train.mesh_over_local_devices(1))
  eight = train.run(config, data, mesh=train.mesh_over_local_devices(8))
  assert len(one) == len(eight) == 6
  for a, b in zip(one, eight):
    for key in ('train_loss', 'val_loss', 'val_accuracy'):
      np.testing.assert_allclose(a[key], b[key], rtol=2e-3, atol=1e-3, err_msg=key)


def test_training_learns_and_sbs_probability_one_equals_sgd(tiny, tiny_data):
  data = tiny_data
  mesh = train.mesh_over_local_devices(1)
  sgd = train.run(Config(**tiny, optimizers=('sgd',)), data, mesh=mesh)
  assert sgd[-1]['val_accuracy'] > 60  # chance is 25%
  assert sgd[-1]['train_loss'] < sgd[0]['train_loss']
  p1 = train.run(Config(**tiny, optimizers=('sbs',), probability=1.0), data, mesh=mesh)
  for a, b in zip(sgd, p1):
    np.testing.assert_allclose(a['train_loss'], b['train_loss'], rtol=1e-5)
    assert b['sbs_update_fraction'] == 1.0 and b['sbs_mean_count'] == 1.0


def test_trials_differ_and_optimizers_are_paired(tiny, tiny_data):
  data = tiny_data
  config = Config(**dict(tiny, epochs=1, trials=2), optimizers=('sgd', 'sbs'), probability=1.0)
  rows = train.run(config, data, mesh=train.mesh_over_local_devices(1))
  by = {(r['optimizer'], r['trial']): r for r in rows}
  # p = 1 SBS is SGD: same trial seed -> same run; other seed -> other run.
  assert by['sgd', 0]['train_loss'] == pytest.approx(by['sbs', 0]['train_loss'], rel=1e-5)
  assert by['sgd', 0]['train_loss'] != by['sgd', 1]['train_loss']


def test_results_files(tmp_path, tiny, tiny_data):
  data = tiny_data
  config = Config(
    **dict(tiny, epochs=2, trials=2), optimizers=('sgd', 'sbs'), workdir=str(tmp_path)
  )
  rows = train.run(config, data, mesh=train.mesh_over_local_devices(1))
  summary = train.summarize(rows, config.epochs)
  paths = results.write(str(tmp_path), config, rows, summary)
  history = json.load(open(paths['history.json']))
  assert len(history['rows']) == 8
  assert open(paths['history.csv']).read().count('\n') == 9
  md = open(paths['summary.md']).read()
  assert '| sgd |' in md and '| sbs |' in md and 'paired by trial' in md
  assert open(paths['curves.png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert json.load(open(paths['config.json']))['trials'] == 2


@pytest.mark.parametrize(
  'args,match',
  [
    (['--dataset', 'imagenet2012'], "unknown dataset 'imagenet2012'"),
    (['--dataset', '/nonexistent/d.npz'], 'no such .npz file'),
    (['--train-fraction', '0'], r'train fraction must lie in \(0, 1\]'),
    (['--train-fraction', '1.5'], r'train fraction must lie in \(0, 1\]'),
    (['--batch-size', '12'], 'not divisible by the 8 devices'),
  ],
)
def test_cli_errors_exit_2_with_message(args, match, capsys):
  if 'divisible' in match and jax.device_count() != 8:
    pytest.skip('needs 8 devices')
  assert cli.main(args + ['--workdir', '/tmp/unused']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ')
  assert __import__('re').search(match, err)


@pytest.mark.parametrize(
  'args,match',
  [
    (['--optimizers', 'adam'], "invalid choice 'adam' for argument '--optimizers'"),
    (['--model', 'vgg19'], "invalid choice 'vgg19' for argument '--model'"),
    (['--sbs-momentum', 'both'], "invalid choice 'both'"),
    (['--epochs', 'many'], "'many'"),
    (['--coordinator-address', 'h:1'], 'multi-host runs need'),
  ],
)
def test_cli_rejects_malformed_flags_with_status_2(args, match, capsys):
  """Flags are generated from Config: choices come from Literal types and
  the method registry; a bad value exits with status 2 and names the problem."""
  assert cli.main(args) == 2
  assert __import__('re').search(match, ' '.join(capsys.readouterr().err.split()))


def test_cli_help_lists_every_config_field_with_default_and_choices(capsys):
  assert cli.main(['--help']) == 0
  out = ' '.join(capsys.readouterr().out.split())
  for field in dataclasses.fields(Config):
    assert '--' + field.name.replace('_', '-') in out, field.name
  for name, method in methods.METHODS.items():
    assert f'{name}: {method.description}' in out
  assert '{frozen,chain}' in out and '(default: frozen)' in out
  assert '--resume' in out and '--no-checkpoint' in out


def test_cli_flags_become_the_config():
  run, config = cli.parse_args(
    ['--optimizers', 'sgd', 'dropout', '--no-augment', '--momentum', '0.5', '--no-checkpoint']
  )
  assert config == Config(optimizers=('sgd', 'dropout'), augment=False, momentum=0.5)
  assert type(config) is Config
  assert not run.checkpoint and not run.resume
  assert typing.get_args(default_config.ModelName) == tuple(models.MODELS)


def test_cli_npz_without_arrays(tmp_path, capsys):
  path = tmp_path / 'bad.npz'
  np.savez(path, images=np.zeros((2, 8, 8, 3)))
  assert cli.main(['--dataset', str(path)]) == 2
  assert 'missing arrays x_train, y_train, x_test, y_test' in capsys.readouterr().err


@pytest.mark.slow  # kept out of the default run for time; run with -m slow
def test_cli_end_to_end_subprocess(tmp_path, tiny_data):
  """The entry point as a user runs it, on a tiny .npz, 1 device."""
  data = tiny_data
  path = tmp_path / 'tiny.npz'
  np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  env = dict(os.environ, XLA_FLAGS='')
  out = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'examples', 'cifar', 'main.py'),
      '--dataset',
      str(path),
      '--epochs',
      '2',
      '--trials',
      '2',
      '--batch-size',
      '16',
      '--eval-batch-size',
      '8',
      '--workdir',
      str(tmp_path / 'out'),
    ],
    capture_output=True,
    text=True,
    timeout=600,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert '| sgd |' in out.stdout and '| sbs |' in out.stdout
  assert sorted(os.listdir(tmp_path / 'out')) == [
    'checkpoints',
    'config.json',
    'curves.png',
    'history.csv',
    'history.json',
    'summary.md',
  ]
  assert sorted(os.listdir(tmp_path / 'out' / 'checkpoints')) == [
    'sbs_trial0',
    'sbs_trial1',
    'sgd_trial0',
    'sgd_trial1',
  ]


class Interrupt(Exception):
  pass


def test_resume_equals_uninterrupted(tmp_path, tiny, tiny_data):
  """Stop after epoch 2 of the SBS run, resume: same rows, same final state."""
  data = tiny_data
  mesh = train.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=3), optimizers=('sgd', 'sbs'), workdir=str(tmp_path / 'a'))
  whole = train.run(config, data, mesh=mesh, checkpoint=True)

  interrupted = dataclasses.replace(config, workdir=str(tmp_path / 'b'))

  def stop_in_sbs(optimizer, trial):
    def progress(row):
      if optimizer == 'sbs' and row['epoch'] == 2:
        raise Interrupt

    return progress

  with pytest.raises(Interrupt):
    train.run(interrupted, data, mesh=mesh, checkpoint=True, progress_factory=stop_in_sbs)
  resumed = train.run(interrupted, data, mesh=mesh, resume=True)
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]
  assert strip(resumed) == strip(whole)

  import checkpointing  # pylint: disable=g-import-not-at-top

  template = train.create_state(
    models.create_model('small_cnn', 4),
    train.build_optimizer(config, 'sbs', 1, jax.random.key(0)),
    (8, 8, 3),
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


def test_resume_with_other_config_is_refused(tmp_path, capsys, tiny_data):
  data = tiny_data
  path = tmp_path / 'tiny.npz'
  np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  common = [
    '--dataset',
    str(path),
    '--epochs',
    '1',
    '--trials',
    '1',
    '--batch-size',
    '16',
    '--eval-batch-size',
    '8',
    '--workdir',
    str(tmp_path / 'w'),
  ]
  assert cli.main(common + ['--resume']) == 2
  assert 'has no config.json' in capsys.readouterr().err
  assert cli.main(common + ['--optimizers', 'sgd']) == 0
  assert cli.main(common + ['--optimizers', 'sgd', '--lam', '-2', '--resume']) == 2
  err = capsys.readouterr().err
  assert 'different configuration' in err and 'lam: -4.0 (saved) vs -2.0 (now)' in err
  # Same configuration: finished runs are restored, not retrained.
  assert cli.main(common + ['--optimizers', 'sgd', '--resume']) == 0


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


def test_two_processes_equal_one_process(tmp_path, tiny_data):
  """jax.distributed over 2 processes x 2 CPU devices == 1 process x 4."""
  import socket  # pylint: disable=g-import-not-at-top

  data = tiny_data
  path = tmp_path / 'tiny.npz'
  np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  main_py = os.path.join(ROOT, 'examples', 'cifar', 'main.py')
  args = [
    sys.executable,
    main_py,
    '--dataset',
    str(path),
    '--epochs',
    '1',
    '--trials',
    '1',
    '--batch-size',
    '16',
    '--eval-batch-size',
    '8',
    '--no-checkpoint',
    '--optimizers',
    'sbs',  # the method whose replicas must draw identical masks
  ]

  def env(devices):
    return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')

  procs = [
    subprocess.Popen(
      args
      + [
        '--workdir',
        str(tmp_path / 'multi'),
        '--coordinator-address',
        f'127.0.0.1:{port}',
        '--num-processes',
        '2',
        '--process-id',
        str(i),
      ],
      env=env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  single = subprocess.run(
    args + ['--workdir', str(tmp_path / 'single')],
    env=env(4),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert single.returncode == 0, single.stderr[-2000:]
  multi_rows = json.load(open(tmp_path / 'multi' / 'history.json'))['rows']
  single_rows = json.load(open(tmp_path / 'single' / 'history.json'))['rows']
  assert len(multi_rows) == len(single_rows) == 1
  # Both processes end with bit-identical params (SBS included). The
  # single process equals them up to rounding: the cross-process reduction
  # (Gloo) adds in another order, so its digest differs; the metrics below
  # agree to 1e-5.
  for run in multi_rows:
    name = f'{run["optimizer"]} trial {run["trial"]} final params sha256 '
    printed = [next(r for r in out.splitlines() if name in r).split()[-1] for out, _ in outs]
    assert printed[0] == printed[1] == run['params_sha256']
  for a, b in zip(multi_rows, single_rows):
    for key in ('train_loss', 'val_loss', 'val_accuracy'):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


SHARED_CIFAR10 = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'cifar10.npz')


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(SHARED_CIFAR10), reason='needs ../shared/data/cifar10.npz')
def test_real_cifar10_accuracy_rises_well_above_chance(tmp_path):
  """End to end on real CIFAR-10 (1/5 of the training set), SGD and SBS."""
  env = dict(os.environ, XLA_FLAGS='')
  out = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'examples', 'cifar', 'main.py'),
      '--dataset',
      SHARED_CIFAR10,
      '--train-fraction',
      '0.2',
      '--epochs',
      '4',
      '--trials',
      '1',
      '--workdir',
      str(tmp_path),
      '--no-checkpoint',
    ],
    capture_output=True,
    text=True,
    timeout=1800,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  rows = json.load(open(tmp_path / 'history.json'))['rows']
  # Chance is 10%. Measured here: SGD above 40%, SBS (paper defaults) 36.2%.
  for opt, floor in (('sgd', 40.0), ('sbs', 30.0)):
    final = [r for r in rows if r['optimizer'] == opt][-1]
    assert final['val_accuracy'] > floor, (opt, final)


@pytest.mark.slow  # kept out of the default run for time; run with -m slow
def test_vectorized_trials_equal_sequential_trials(tiny, tiny_data):
  data = tiny_data
  mesh = train.mesh_over_local_devices(1)
  config = Config(**dict(tiny, epochs=2, trials=2, augment=True), optimizers=('sgd', 'sbs'))
  sequential = train.run(config, data, mesh=mesh)
  vectorized = train.run(config, data, mesh=mesh, vectorized=True)
  key = lambda r: (r['optimizer'], r['trial'], r['epoch'])
  sequential, vectorized = sorted(sequential, key=key), sorted(vectorized, key=key)
  assert [key(r) for r in sequential] == [key(r) for r in vectorized]
  for a, b in zip(sequential, vectorized):
    for name in ('train_loss', 'val_loss', 'val_accuracy', 'sbs_mean_count'):
      if name in a:
        np.testing.assert_allclose(
          a[name], b[name], rtol=2e-3, atol=1e-3, err_msg=f'{name} {key(a)}'
        )
  with pytest.raises(train.ConfigError, match='do not checkpoint'):
    train.run(config, data, mesh=mesh, vectorized=True, checkpoint=True)


def test_summary_of_one_trial_shows_no_spread():
  rows = [
    dict(optimizer=o, trial=0, epoch=e, val_accuracy=40.0 + e)
    for o in ('sgd', 'sbs')
    for e in (1, 2)
  ]
  text = results.summary_markdown(train.summarize(rows, 2), Config(epochs=2))
  assert '±' not in text.split('|---|')[1]
  assert '| sgd | 42.00 | 42.00 | 42.00 |' in text
  two = rows + [dict(r, trial=1, val_accuracy=r['val_accuracy'] + 2) for r in rows]
  assert '| sgd | 43.00 ± 1.41 |' in results.summary_markdown(
    train.summarize(two, 2), Config(epochs=2)
  )


def test_throughput_leaves_out_the_compiling_step(monkeypatch):
  clock = iter([0.0, 10.0, 11.0])  # start, after the compiling step, end
  monkeypatch.setattr(train.time, 'perf_counter', lambda: next(clock))
  throughput = train.Throughput(compiles=True)
  for _ in range(3):
    throughput.step(jnp.zeros(()), 16)
  assert throughput.per_second() == 32.0  # 2 steps x 16 images in 1 s
  clock = iter([0.0, 10.0, 12.0])
  only = train.Throughput(compiles=True)
  only.step(jnp.zeros(()), 16)
  assert only.per_second() == 16 / 12.0  # one step: compile included
  clock = iter([0.0, 4.0])
  later = train.Throughput(compiles=False)
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
    ('optimizers', ('adam',), 'unknown optimizer adam'),
  ],
)
def test_validate_names_a_bad_programmatic_config(field, value, match):
  """Configs built in Python (not from flags) are checked before training."""
  with pytest.raises(train.ConfigError, match=match):
    train.validate(dataclasses.replace(Config(), **{field: value}), 1)
