"""The character-level transformer example (examples/lm).

examples/cifar has modules of the same names (main, train, models, ...) and
conftest.py puts it on sys.path, so the LM modules are imported in
isolation: the ``lm`` fixture takes the CIFAR entries out of ``sys.modules``
and ``sys.path``, imports the LM modules, and puts everything back after the
last test of this file.
"""

import dataclasses
import importlib
import importlib.util
import json
import os
import sys
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_sbs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LM_DIR = os.path.join(ROOT, 'examples', 'lm')
SHARED_TEXT = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'tinyshakespeare.txt')
# Module names the LM example shares with the CIFAR example.
SHARED_NAMES = (
  'main',
  'train',
  'models',
  'input_pipeline',
  'methods',
  'checkpointing',
  'results',
  'configs',
  'configs.default',
)


# A model and run of a few seconds (the LM study's smoke scale).
SMOKE = dict(
  num_layers=1,
  num_heads=2,
  embed_dim=16,
  context_length=16,
  batch_size=8,
  steps=20,
  warmup_steps=2,
  eval_interval=10,
  eval_batches=2,
)


@pytest.fixture(scope='module')
def lm():
  """The LM example's modules."""
  saved_path = list(sys.path)
  saved = {name: sys.modules.pop(name) for name in SHARED_NAMES if name in sys.modules}
  sys.path.insert(0, LM_DIR)
  try:
    mods = {
      name.replace('configs.default', 'default_config'): importlib.import_module(name)
      for name in SHARED_NAMES
      if name != 'configs'
    }
    yield types.SimpleNamespace(**mods, Config=mods['default_config'].Config)
  finally:
    for name in SHARED_NAMES:
      sys.modules.pop(name, None)
    sys.modules.update(saved)
    sys.path[:] = saved_path


def _corpus(n: int = 4000) -> str:
  """A small learnable text: a few lines repeated in a random order."""
  lines = [
    'to be or not to be, that is the question.\n',
    'all the world is a stage.\n',
    'now is the winter of our discontent.\n',
    'what light through yonder window breaks?\n',
  ]
  rng = np.random.default_rng(0)
  text = ''
  while len(text) < n:
    text += lines[rng.integers(len(lines))]
  return text[:n]


@pytest.fixture(scope='module')
def corpus_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('lm') / 'corpus.txt'
  path.write_text(_corpus(), encoding='utf-8')
  return str(path)


def tiny(lm, **overrides):
  """A Config for runs of a few seconds (so runs of the same method and rate
  share one compiled step), one trial, rate 1e-2."""
  base = lm.Config(dataset='unused.txt', workdir='', **SMOKE)
  return dataclasses.replace(base, **{'learning_rate': 1e-2, 'trials': 1, **overrides})


def without_timing(rows):
  return [{k: v for k, v in r.items() if k != 'tokens_per_sec'} for r in rows]


# Model.


def test_changing_a_future_token_leaves_earlier_logits_unchanged(lm):
  model = lm.models.create_model(tiny(lm, num_layers=2), 11, nnx.Rngs(0))
  tokens = np.random.default_rng(0).integers(0, 11, (3, 12))
  changed = tokens.copy()
  changed[:, 7] = (tokens[:, 7] + 1) % 11
  forward = nnx.jit(lambda model, tokens: model(tokens))
  before, after = np.asarray(forward(model, tokens)), np.asarray(forward(model, changed))
  assert before.shape == (3, 12, 11)
  np.testing.assert_allclose(after[:, :7], before[:, :7], rtol=0, atol=1e-6)
  # Position 7 and later see the change.
  assert np.abs(after[:, 7:] - before[:, 7:]).min(axis=-1).max() > 1e-4
  with pytest.raises(ValueError, match='exceed the context length'):
    model(np.zeros((1, 17), np.int32))


def test_parameters_group_by_type_and_tied_head_reuses_the_embedding(lm):
  model = lm.models.create_model(tiny(lm), 11, nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  types_ = {
    jax.tree_util.keystr(p): optax_sbs.parameter_type(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  assert types_["['token_embed']['embedding']"] == 'embedding'
  assert types_["['position_embed']['embedding']"] == 'embedding'
  assert types_["['blocks'][0]['ln_1']['scale']"] == 'norm'
  assert types_["['ln_f']['bias']"] == 'norm'
  assert types_["['blocks'][0]['attention']['qkv']['kernel']"] == 'dense'
  assert types_["['blocks'][0]['mlp']['fc']['bias']"] == 'bias'
  assert types_["['head']['kernel']"] == 'dense'
  tied = lm.models.create_model(tiny(lm, tie_embeddings=True), 11, nnx.Rngs(0))
  assert lm.models.count_params(model) - lm.models.count_params(tied) == 16 * 11
  assert lm.models.num_params(tiny(lm), 11) == lm.models.count_params(model)


# Scanned layers (--scan-layers): the tiny model of these tests has 2 layers,
# width 16 and context 8.


def scan_config(lm, **overrides):
  return tiny(lm, num_layers=2, context_length=8, **overrides)


def params_of(model) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.fixture(scope='module')
def scan_pair(lm, corpus_file):
  """An unrolled and a scanned model with the same weights, a batch, and
  both models' logits and gradients (pure dicts) on it."""
  config = scan_config(lm)
  data = lm.input_pipeline.load(corpus_file)
  unrolled = lm.models.create_model(config, data.vocab_size, nnx.Rngs(0))
  scanned_config = dataclasses.replace(config, scan_layers=True)
  scanned = lm.models.create_model(scanned_config, data.vocab_size, nnx.Rngs(1))
  state = nnx.state(scanned, nnx.Param)
  nnx.replace_by_pure_dict(state, lm.models.stack_blocks(params_of(unrolled)))
  nnx.update(scanned, state)
  inputs, targets = lm.input_pipeline.train_batch(data.train, 8, 8, np.random.default_rng(0))

  @nnx.jit
  def logits_and_grads(model):
    return model(inputs), nnx.to_pure_dict(nnx.grad(lm.train.loss_fn)(model, inputs, targets))

  (logits, grads), (scanned_logits, scanned_grads) = map(logits_and_grads, (unrolled, scanned))
  return types.SimpleNamespace(
    config=config,
    scanned_config=scanned_config,
    unrolled=unrolled,
    scanned=scanned,
    logits=(logits, scanned_logits),
    grads=(grads, scanned_grads),
  )


def test_scanned_layers_give_the_unrolled_models_logits(lm, scan_pair):
  """The blocks stacked under ``layers`` (nnx.vmap) and run by nnx.scan: the
  same function of the same weights; ``stack_blocks`` and ``unstack_layers``
  convert both ways; ``layers_under('layers')`` finds exactly the stacked
  leaves."""
  unrolled, stacked = params_of(scan_pair.unrolled), params_of(scan_pair.scanned)
  assert 'blocks' not in stacked and 'layers' not in unrolled
  assert stacked['layers']['attention']['qkv']['kernel'].shape == (2, 16, 48)
  assert stacked['layers']['ln_1']['scale'].shape == (2, 16)
  back = lm.models.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(unrolled)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(unrolled)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert lm.models.count_params(scan_pair.scanned) == lm.models.count_params(scan_pair.unrolled)
  assert lm.models.num_params(scan_pair.scanned_config, 11) == lm.models.num_params(
    scan_pair.config, 11
  )
  logits, scanned_logits = scan_pair.logits
  np.testing.assert_allclose(np.asarray(scanned_logits), np.asarray(logits), rtol=1e-5, atol=1e-5)
  layer_axes = lm.models.layer_axes(scan_pair.scanned_config)
  assert lm.models.layer_axes(scan_pair.config) is None
  for path, leaf in jax.tree_util.tree_flatten_with_path(stacked)[0]:
    assert layer_axes(path, leaf) == ((0,) if path[0].key == 'layers' else ()), path


def test_scan_layers_passes_layer_axes_to_every_per_layer_method(lm, scan_pair, monkeypatch):
  """Unrolled: ``layer_axes=None`` (the transformations of before); with
  --scan-layers: axis 0 under ``layers``, for every method that takes it.
  AdamW's weight decay goes to the same parameters in both layouts: matrices
  and embeddings, not the stacked biases and LayerNorm scales (2-D as
  stacked leaves, 1-D per layer)."""
  seen = []

  def spy(real):
    def wrapped(*args, **kwargs):
      seen.append(kwargs['layer_axes'])
      return real(*args, **kwargs)

    return wrapped

  for name in ('masked_updates', 'magma', 'with_stochastic_batch_size'):
    monkeypatch.setattr(optax_sbs, name, spy(getattr(optax_sbs, name)))
  stacked = (jax.tree_util.DictKey('layers'), jax.tree_util.DictKey('mlp'))
  head = (jax.tree_util.DictKey('head'), jax.tree_util.DictKey('kernel'))
  for method in ('masked_updates', 'lr_dropout', 'magma', 'sbs'):
    for scan in (False, True):
      seen.clear()
      lm.methods.METHODS[method].optimizer(
        lm.Config(scan_layers=scan), lambda count: 1e-3, jax.random.key(0)
      )
      (layer_axes,) = seen
      if scan:
        assert layer_axes(stacked, jnp.zeros((2, 16, 64))) == (0,), method
        assert layer_axes(head, jnp.zeros((16, 11))) == (), method
      else:
        assert layer_axes is None, method
  decayed = lm.methods._decay_mask(scan_pair.config)(params_of(scan_pair.unrolled))
  scanned = lm.methods._decay_mask(scan_pair.scanned_config)(params_of(scan_pair.scanned))
  assert decayed['blocks'][0] == decayed['blocks'][1] == scanned.pop('layers')
  assert {k: v for k, v in decayed.items() if k != 'blocks'} == scanned
  assert decayed['blocks'][0]['mlp']['fc'] == {'kernel': True, 'bias': False}
  assert decayed['blocks'][0]['ln_1'] == {'scale': False, 'bias': False}


def _first_step_probabilities(grads, layer_axes, lams):
  """SBS's update probabilities (eq. 21) at the first step, ``g~ = g``, per
  ``lam``; the groups are ``parameter_type`` of one slice of a stacked leaf."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(grads)
  axes = [layer_axes(path, g) if layer_axes else () for path, g in flat]
  groups = [
    optax_sbs.parameter_type(
      path, jax.ShapeDtypeStruct(tuple(d for i, d in enumerate(g.shape) if i not in ax), g.dtype)
    )
    for (path, g), ax in zip(flat, axes)
  ]

  @jax.jit
  def probabilities(leaves, lam):
    magnitudes = [jnp.abs(g) for g in leaves]
    return optax_sbs.update_probability(magnitudes, groups, 0.1, lam, layer_axes=axes)

  leaves = [g for _, g in flat]
  return [jax.tree_util.tree_unflatten(treedef, probabilities(leaves, lam)) for lam in lams]


def test_scanned_layers_give_sbs_the_unrolled_update_probabilities(lm, scan_pair):
  """SBS (alpha 0.1, lam 0 and the default -4) at the first step: with
  ``layer_axes`` every slice of a stacked leaf gets the update probabilities
  of the unrolled model's block, up to float rounding (rtol 1e-5). (The
  clipping before SBS scales every magnitude alike, which eq. 21 does not
  see.) Without them a stacked leaf is one layer, with other probabilities."""
  lams = (0.0, lm.Config().lam)
  assert lams[1] == -4.0 and scan_pair.config.alpha == 0.1
  grads, scanned_grads = scan_pair.grads
  want = _first_step_probabilities(grads, None, lams)
  layer_axes = lm.models.layer_axes(scan_pair.scanned_config)
  got = _first_step_probabilities(scanned_grads, layer_axes, lams)
  for lam, w, g in zip(lams, want, got):
    g = lm.models.unstack_layers(g)
    assert jax.tree.structure(g) == jax.tree.structure(w)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7, err_msg=lam)
    assert np.std(np.concatenate([np.ravel(x) for x in jax.tree.leaves(w)])) > 1e-3
  # One stacked kernel as one layer: its local statistics mix the two blocks.
  kernel = scanned_grads['layers']['mlp']['fc']['kernel']
  (whole,) = optax_sbs.update_probability([jnp.abs(kernel)], ['dense'], 0.1, 0.0)
  per_block = want[0]['blocks']
  stacked = np.stack([per_block[i]['mlp']['fc']['kernel'] for i in (0, 1)])
  assert np.abs(np.asarray(whole) - stacked).max() > 1e-4


# Data.


def _tfds_builder_splits(monkeypatch, tmp_path, text):
  """The splits TFDS's own tiny_shakespeare builder makes of ``text``
  (TensorFlow's file API replaced by Python's, as it is not installed)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  builder_cls = tfds.builder_cls('tiny_shakespeare')
  module = sys.modules[builder_cls.__module__]
  gfile = types.SimpleNamespace(
    isdir=os.path.isdir,
    GFile=lambda path, mode: open(path, mode, encoding='utf-8', newline=''),
  )
  monkeypatch.setattr(module, 'tf', types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile)))
  path = tmp_path / 'input.txt'
  path.write_text(text, encoding='utf-8')

  class DownloadManager:
    def download(self, url):
      assert url.endswith('input.txt')
      return str(path)

  builder = builder_cls(data_dir=str(tmp_path / 'tfds'))
  generators = builder._split_generators(DownloadManager())
  out = {}
  for generator in generators:
    ((_, example),) = builder._generate_examples(**generator.gen_kwargs)
    out[str(generator.name)] = example['text']
  return out


@pytest.mark.parametrize('n', [1001, 1237])
def test_local_file_splits_as_the_tfds_builder_does(lm, monkeypatch, tmp_path, n):
  # Characters, not bytes: 'é' is two bytes in UTF-8.
  text = ''.join(np.random.default_rng(n).choice(list('abcé \n'), n))
  want = _tfds_builder_splits(monkeypatch, tmp_path, text)
  path = tmp_path / 'local.txt'
  path.write_text(text, encoding='utf-8')
  data = lm.input_pipeline.load(str(path))
  got = {
    'train': data.decode(data.train),
    'validation': data.decode(data.validation),
    'test': data.decode(data.test),
  }
  assert got == want
  assert sum(map(len, got.values())) == n
  assert data.vocab == ''.join(sorted(set(want['train'])))


@pytest.mark.skipif(not os.path.isfile(SHARED_TEXT), reason='no shared tinyshakespeare.txt')
def test_shared_tiny_shakespeare_splits(lm):
  data = lm.input_pipeline.load(SHARED_TEXT)
  assert (len(data.train), len(data.validation), len(data.test)) == (1003854, 55770, 55770)
  assert data.vocab_size == 65 and data.unknown_id is None
  assert data.decode(data.train[:14]) == 'First Citizen:'


def test_tfds_loader_with_mock_data(lm, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=3, data_dir=str(tmp_path)):
    data = lm.input_pipeline.load('tiny_shakespeare', data_dir=str(tmp_path), download=False)
    want = {}
    for split in ('train', 'validation', 'test'):
      source = tfds.data_source('tiny_shakespeare', split=split, data_dir=str(tmp_path))
      want[split] = ''.join(str(source[i]['text']) for i in range(len(source)))
  assert data.name == 'tiny_shakespeare'
  assert data.decode(data.train) == want['train'] and len(data.train) > 0
  assert data.decode(data.validation) == want['validation']
  assert data.decode(data.test) == want['test']
  assert data.train.dtype == np.int32


def test_unseen_characters_get_the_unknown_id(lm):
  data = lm.input_pipeline.from_splits('t', 'abcab', 'abz', 'ca')
  assert data.vocab == 'abc' and data.unknown_id == 3 and data.vocab_size == 4
  np.testing.assert_array_equal(data.validation, [0, 1, 3])
  assert lm.input_pipeline.from_splits('t', 'abc', 'ab', 'c').unknown_id is None


def test_data_errors(lm, tmp_path):
  ip = lm.input_pipeline
  with pytest.raises(ip.DataError, match='no such text file'):
    ip.load(str(tmp_path / 'missing.txt'))
  empty = tmp_path / 'empty.txt'
  empty.write_text('')
  with pytest.raises(ip.DataError, match='the file is empty'):
    ip.load(str(empty))
  binary = tmp_path / 'binary.txt'
  binary.write_bytes(b'\xff\xfe\x00abc')
  with pytest.raises(ip.DataError, match='not UTF-8'):
    ip.load(str(binary))
  short = tmp_path / 'short.txt'
  short.write_text('x' * 100)  # 90 / 5 / 5 characters
  data = ip.load(str(short))
  ip.check_lengths(data, 4)
  with pytest.raises(ip.DataError, match='validation split has 5 characters, too short'):
    ip.check_lengths(data, 8)
  with pytest.raises(ip.DataError, match="unknown dataset 'ptb'"):
    ip.load('ptb')
  # Nothing prepared in data_dir and no download: TFDS fails, the message says what to do.
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(
    ip.DataError, match='(?s)TFDS could not load its train split.*tinyshakespeare.txt'
  ):
    ip.load('tiny_shakespeare', data_dir=str(tmp_path / 'tfds'), download=False)


def test_windows(lm):
  ip = lm.input_pipeline
  tokens = np.arange(100, dtype=np.int32)
  x, y = ip.train_batch(tokens, 5, 8, np.random.default_rng(0))
  assert x.shape == y.shape == (5, 8)
  np.testing.assert_array_equal(y, x + 1)  # next character, contiguous
  np.testing.assert_array_equal(np.diff(x, axis=1), 1)
  a, b = ip.train_batch(tokens, 5, 8, np.random.default_rng(0)), (x, y)
  np.testing.assert_array_equal(a[0], b[0])  # the generator fixes the batch
  x, y = ip.eval_windows(tokens, 4, 8)
  np.testing.assert_array_equal(x[:, 0], [0, 30, 61, 91])  # evenly spread, first and last
  assert y[-1, -1] == 99


# Training.


def test_trials_share_the_optimizer_but_not_its_key(lm):
  """``create`` reuses one optimizer per configuration (one compiled step for
  all trials) and puts the trial's key into its state: the state that the
  optimizer built with that key starts from."""
  config = tiny(lm, methods=('magma',))
  model_key, optimizer_key, _ = lm.train.trial_seeds(config, 1)
  model, optimizer = lm.train.create(config, 'magma', 11, model_key, optimizer_key)
  direct = nnx.Optimizer(
    model, lm.train.build_optimizer(config, 'magma', optimizer_key), wrt=nnx.Param
  )
  got, want = jax.tree.leaves(nnx.state(optimizer)), jax.tree.leaves(nnx.state(direct))
  keys = [
    jax.random.key_data(x) for x in got if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
  ]
  assert len(keys) == 1
  for a, b in zip(got, want):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, other = lm.train.create(config, 'magma', 11, *lm.train.trial_seeds(config, 2)[:2])
  assert other.tx is optimizer.tx
  (other_key,) = [
    x
    for x in jax.tree.leaves(nnx.state(other))
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
  ]
  assert not np.array_equal(jax.random.key_data(other_key), keys[0])


def test_tiny_run_learns_and_probability_one_masks_give_adamw(lm, corpus_file):
  """masked_updates(adamw, p=1) is AdamW bit for bit: the same rows."""
  data = lm.input_pipeline.load(corpus_file)
  adamw = lm.train.run(tiny(lm, methods=('adamw',)), data)
  masked = lm.train.run(tiny(lm, methods=('masked_updates',), probability=1.0), data)
  assert [r['step'] for r in adamw] == [10, 20]
  # From about log(vocabulary) (uniform guessing) down, and on down.
  assert adamw[-1]['val_loss'] < adamw[0]['val_loss'] - 0.1
  assert adamw[-1]['val_loss'] < np.log(data.vocab_size) - 0.5
  assert 'test_loss' in adamw[-1] and 'test_loss' not in adamw[0]
  assert all(r['tokens_per_sec'] > 0 for r in adamw + masked)
  assert without_timing(masked) == [dict(r, method='masked_updates') for r in without_timing(adamw)]
  summary = lm.train.summarize(adamw + masked)
  assert summary['masked_updates']['vs_adamw'] == dict(diff=0.0, wins=0, trials=1)


def test_resume_after_an_interruption_equals_the_uninterrupted_run(
  lm, corpus_file, tmp_path, monkeypatch
):
  data = lm.input_pipeline.load(corpus_file)
  # Masks drawn from a typed key in the optimizer state (restored by Orbax).
  options = dict(methods=('masked_updates',), probability=0.5, granularity='leaf')
  assert options['probability'] < 1
  whole = lm.train.run(tiny(lm, **options, workdir=str(tmp_path / 'whole')), data, checkpoint=True)
  config = tiny(lm, **options, workdir=str(tmp_path / 'cut'))

  class Interrupt(Exception):
    pass

  def stop_after_first_row(method, trial):
    def progress(row):
      raise Interrupt

    return progress

  with pytest.raises(Interrupt):
    lm.train.run(config, data, progress_factory=stop_after_first_row, checkpoint=True)
  steps = []
  real_step = lm.train.train_step
  monkeypatch.setattr(lm.train, 'train_step', lambda *a: steps.append(1) or real_step(*a))
  resumed = lm.train.run(config, data, checkpoint=True, resume=True)
  assert len(steps) == config.steps - config.eval_interval  # it went on from the first row
  assert without_timing(resumed) == without_timing(whole)
  assert whole[0]['val_loss'] != whole[-1]['val_loss']
  with pytest.raises(lm.checkpointing.ResumeError, match='different configuration; steps'):
    lm.train.run(dataclasses.replace(config, steps=30), data, checkpoint=True, resume=True)


def _scan_sbs_config(lm, scan: bool):
  """SBS lam = 0 around AdamW, 30 steps (the CLI test below runs the same
  configuration, so its train step is the one compiled here)."""
  return scan_config(lm, methods=('sbs',), lam=0.0, steps=30, scan_layers=scan)


@pytest.mark.slow
def test_scanned_sbs_trains_to_the_unrolled_models_loss(lm, corpus_file):
  """SBS lam = 0 around AdamW with --scan-layers (layer_axes) trains as the
  unrolled model does: 4 paired trials, each 30 steps from the same weights on
  the same windows with the same optimizer key, validation loss on 64 fixed
  windows. Not bit for bit: the masks' random stream visits the leaves in
  another order (one stacked leaf where the unrolled model has one per block),
  so the two runs draw other masks. Measured on CPU (scanned - unrolled):
  -0.009, +0.006, -0.028, -0.001 nats in these trials, mean -0.008; std 0.013
  over 8 seeds. Asserted: |mean difference| < 0.03 nats, every trial's
  |difference| < 0.06, and both runs 0.3 nats or more below uniform guessing."""
  data = lm.input_pipeline.load(corpus_file)
  windows = lm.input_pipeline.eval_windows(data.validation, 64, 8)

  def train(config, trial):
    model_key, optimizer_key, rng = lm.train.trial_seeds(config, trial)
    model, optimizer = lm.train.create(config, 'sbs', data.vocab_size, model_key, optimizer_key)
    if config.scan_layers:  # the unrolled model's initial weights
      unrolled = lm.models.create_model(
        dataclasses.replace(config, scan_layers=False), data.vocab_size, nnx.Rngs(params=model_key)
      )
      state = nnx.state(model, nnx.Param)
      nnx.replace_by_pure_dict(state, lm.models.stack_blocks(params_of(unrolled)))
      nnx.update(model, jax.device_put(state, jax.devices()[0]))
    for _ in range(config.steps):
      inputs, targets = lm.input_pipeline.train_batch(data.train, 8, 8, rng)
      lm.train.train_step(model, optimizer, inputs, targets)
    return lm.train.evaluate(model, windows, 64)

  losses = {
    scan: np.asarray([train(_scan_sbs_config(lm, scan), t) for t in range(4)])
    for scan in (False, True)
  }
  diff = losses[True] - losses[False]
  assert abs(diff.mean()) < 0.03, diff
  assert np.abs(diff).max() < 0.06, diff
  assert max(losses[False].max(), losses[True].max()) < np.log(data.vocab_size) - 0.3, losses


def test_resume_takes_fields_added_since_at_their_defaults(lm, tmp_path):
  """A workdir made before --scan-layers existed resumes unscanned only."""
  config = tiny(lm, workdir=str(tmp_path))
  lm.checkpointing.prepare_workdir(config.workdir, config, resume=False)
  saved = json.load(open(tmp_path / 'config.json'))
  del saved['scan_layers']
  json.dump(saved, open(tmp_path / 'config.json', 'w'))
  lm.checkpointing.prepare_workdir(config.workdir, config, resume=True)
  with pytest.raises(lm.checkpointing.ResumeError, match=r'scan_layers: False \(saved\) vs True'):
    scanned = dataclasses.replace(config, scan_layers=True)
    lm.checkpointing.prepare_workdir(config.workdir, scanned, resume=True)


# The command line.

_SIZE_FIELDS = (
  'num_layers',
  'num_heads',
  'embed_dim',
  'context_length',
  'batch_size',
  'steps',
  'warmup_steps',
  'eval_interval',
  'eval_batches',
  'learning_rate',
)


def _size_flags(config, *extra):
  """The flags that give a tiny run the sizes of ``config``."""
  flags = []
  for name in _SIZE_FIELDS + extra:
    flags += ['--' + name.replace('_', '-'), str(getattr(config, name))]
  return flags


def test_main_writes_results_and_refuses_another_config_on_resume(
  lm, corpus_file, tmp_path, capsys
):
  config = tiny(lm, methods=('adamw',))
  common = ['--dataset', corpus_file, '--methods', 'adamw', '--workdir', str(tmp_path)]
  common += _size_flags(config)
  assert lm.main.main(common) == 0
  out = capsys.readouterr().out
  assert 'adamw trial 0 step 20/20' in out and '| adamw |' in out
  for name in ('config.json', 'history.json', 'history.csv', 'summary.md', 'curves.png'):
    assert os.path.isfile(tmp_path / name), name
  history = json.load(open(tmp_path / 'history.json'))
  assert [r['step'] for r in history['rows']] == [10, 20]
  assert open(tmp_path / 'curves.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert lm.main.main(common + ['--resume']) == 0  # finished: nothing to redo
  assert lm.main.main(common + ['--resume', '--learning-rate', '0.02']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --resume:') and 'learning_rate' in err


def test_main_runs_with_scan_layers(lm, corpus_file, tmp_path, capsys):
  """The command line end to end with --scan-layers (SBS, whose statistics
  are per layer), then --resume restoring the stacked checkpoint."""
  config = _scan_sbs_config(lm, scan=True)
  args = ['--dataset', corpus_file, '--workdir', str(tmp_path), '--methods', 'sbs', '--scan-layers']
  args += _size_flags(config, 'lam')
  assert lm.main.main(args) == 0
  out = capsys.readouterr().out
  assert 'sbs trial 0 step 30/30' in out and '| sbs |' in out
  assert json.load(open(tmp_path / 'config.json'))['scan_layers'] is True
  rows = json.load(open(tmp_path / 'history.json'))['rows']
  assert [r['step'] for r in rows] == [10, 20, 30]
  assert rows[-1]['val_loss'] < rows[0]['val_loss']
  assert lm.main.main(args + ['--resume']) == 0  # finished: restored, nothing to redo
  resumed = json.load(open(tmp_path / 'history.json'))['rows']
  assert without_timing(resumed) == without_timing(rows)


@pytest.mark.parametrize(
  'args,match',
  [
    (['--dataset', '/nonexistent/text.txt'], 'no such text file: /nonexistent/text.txt'),
    (['--dataset', 'imdb'], "unknown dataset 'imdb'"),
    (['--num-heads', '3'], 'num_heads 3 does not divide embed_dim 128'),
    (['--methods', 'sgd'], "invalid choice 'sgd' for argument '--methods'"),
    (['--granularity', 'row'], "invalid choice 'row' for argument '--granularity'"),
    (['--steps', 'many'], "'many'"),
  ],
)
def test_cli_errors_exit_2_with_error_message(lm, args, match, capsys):
  assert lm.main.main(args + ['--workdir', '/tmp/unused']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert match in err


def test_help_lists_every_config_field(lm, capsys, monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')
  assert lm.main.main(['--help']) == 0
  out = ' '.join(capsys.readouterr().out.split())
  for field in dataclasses.fields(lm.Config):
    assert '--' + field.name.replace('_', '-') in out, field.name
  for name, method in lm.methods.METHODS.items():
    assert f'{name}: {method.description}' in out
  assert '{leaf,element}' in out and '--resume' in out and '--no-checkpoint' in out


def test_flags_become_the_config(lm):
  run, config = lm.main.parse_args(['--methods', 'adamw', 'sbs', '--lam', '0', '--no-checkpoint'])
  assert config == lm.Config(methods=('adamw', 'sbs'), lam=0.0)
  assert type(config) is lm.Config
  assert not run.checkpoint and not run.resume
  assert lm.main.parse_args(['--scan-layers'])[1] == lm.Config(scan_layers=True)


def test_adamw_accumulate_is_adamw_on_the_mean_of_k_gradients(lm):
  """The control: k steps of adamw_accumulate == one AdamW step on the mean
  gradient, with the rate AdamW has at that outer step."""
  import optax  # noqa: PLC0415

  config = lm.Config(accumulate_steps=3, weight_decay=0.1)
  schedule = lambda step: 0.01 * (1.0 + step)  # noqa: E731  (the outer step's rate)
  acc = lm.methods.METHODS['adamw_accumulate'].optimizer(config, schedule, None)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  grads = [jax.tree.map(lambda x, i=i: (i + 1.0) * jnp.ones_like(x) - x, params) for i in range(6)]
  state, p = acc.init(params), params
  for g in grads:
    u, state = acc.update(g, state, p)
    p = optax.apply_updates(p, u)
  adamw = lm.methods.METHODS['adamw'].optimizer(config, lambda c: schedule(3 * c), None)
  q, s = params, adamw.init(params)
  for i in (0, 3):
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads[i : i + 3])
    u, s = adamw.update(mean, s, q)
    q = optax.apply_updates(q, u)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
