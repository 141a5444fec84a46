"""models.py: causality, parameter types, scanned layers (--scan-layers)."""

import dataclasses
import os
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_sbs

from configs.default import Config
import input_pipeline
import methods
import models
import steps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Scanned layers: the tiny model of these tests has 2 layers, width 16 and
# context 8.


def test_changing_a_future_token_leaves_earlier_logits_unchanged(tiny):
  model = models.create_model(tiny(num_layers=2), 11, nnx.Rngs(0))
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


def test_parameters_group_by_type_and_tied_head_reuses_the_embedding(tiny):
  model = models.create_model(tiny(), 11, nnx.Rngs(0))
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
  tied = models.create_model(tiny(tie_embeddings=True), 11, nnx.Rngs(0))
  assert models.count_params(model) - models.count_params(tied) == 16 * 11
  assert models.num_params(tiny(), 11) == models.count_params(model)


def params_of(model) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.fixture(scope='module')
def scan_pair(corpus_file, scan_config):
  """An unrolled and a scanned model with the same weights, a batch, and
  both models' logits and gradients (pure dicts) on it."""
  config = scan_config()
  data = input_pipeline.load(corpus_file)
  unrolled = models.create_model(config, data.vocab_size, nnx.Rngs(0))
  scanned_config = dataclasses.replace(config, scan_layers=True)
  scanned = models.create_model(scanned_config, data.vocab_size, nnx.Rngs(1))
  state = nnx.state(scanned, nnx.Param)
  nnx.replace_by_pure_dict(state, models.stack_blocks(params_of(unrolled)))
  nnx.update(scanned, state)
  inputs, targets = input_pipeline.train_batch(data.train, 8, 8, np.random.default_rng(0))

  @nnx.jit
  def logits_and_grads(model):
    return model(inputs), nnx.to_pure_dict(nnx.grad(steps.loss_fn)(model, inputs, targets))

  (logits, grads), (scanned_logits, scanned_grads) = map(logits_and_grads, (unrolled, scanned))
  return types.SimpleNamespace(
    config=config,
    scanned_config=scanned_config,
    unrolled=unrolled,
    scanned=scanned,
    logits=(logits, scanned_logits),
    grads=(grads, scanned_grads),
  )


def test_scanned_layers_give_the_unrolled_models_logits(scan_pair):
  """The blocks stacked under ``layers`` (nnx.vmap) and run by nnx.scan: the
  same function of the same weights; ``stack_blocks`` and ``unstack_layers``
  convert both ways; ``layers_under('layers')`` finds exactly the stacked
  leaves."""
  unrolled, stacked = params_of(scan_pair.unrolled), params_of(scan_pair.scanned)
  assert 'blocks' not in stacked and 'layers' not in unrolled
  assert stacked['layers']['attention']['qkv']['kernel'].shape == (2, 16, 48)
  assert stacked['layers']['ln_1']['scale'].shape == (2, 16)
  back = models.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(unrolled)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(unrolled)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert models.count_params(scan_pair.scanned) == models.count_params(scan_pair.unrolled)
  assert models.num_params(scan_pair.scanned_config, 11) == models.num_params(scan_pair.config, 11)
  logits, scanned_logits = scan_pair.logits
  np.testing.assert_allclose(np.asarray(scanned_logits), np.asarray(logits), rtol=1e-5, atol=1e-5)
  layer_axes = models.layer_axes(scan_pair.scanned_config)
  assert models.layer_axes(scan_pair.config) is None
  for path, leaf in jax.tree_util.tree_flatten_with_path(stacked)[0]:
    assert layer_axes(path, leaf) == ((0,) if path[0].key == 'layers' else ()), path


def test_scan_layers_passes_layer_axes_to_every_per_layer_method(scan_pair, monkeypatch):
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
      methods.METHODS[method].tx(Config(scan_layers=scan), lambda count: 1e-3)
      (layer_axes,) = seen
      if scan:
        assert layer_axes(stacked, jnp.zeros((2, 16, 64))) == (0,), method
        assert layer_axes(head, jnp.zeros((16, 11))) == (), method
      else:
        assert layer_axes is None, method
  decayed = methods._decay_mask(scan_pair.config)(params_of(scan_pair.unrolled))
  scanned = methods._decay_mask(scan_pair.scanned_config)(params_of(scan_pair.scanned))
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


def test_scanned_layers_give_sbs_the_unrolled_update_probabilities(scan_pair):
  """SBS (alpha 0.1, lam 0 and the default -4) at the first step: with
  ``layer_axes`` every slice of a stacked leaf gets the update probabilities
  of the unrolled model's block, up to float rounding (rtol 1e-5). (The
  clipping before SBS scales every magnitude alike, which eq. 21 does not
  see.) Without them a stacked leaf is one layer, with other probabilities."""
  lams = (0.0, Config().lam)
  assert lams[1] == -4.0 and scan_pair.config.alpha == 0.1
  grads, scanned_grads = scan_pair.grads
  want = _first_step_probabilities(grads, None, lams)
  layer_axes = models.layer_axes(scan_pair.scanned_config)
  got = _first_step_probabilities(scanned_grads, layer_axes, lams)
  for lam, w, g in zip(lams, want, got):
    g = models.unstack_layers(g)
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


def _dropout_models(scan_config, rate: float):
  """An unrolled and a scanned 2-layer model with dropout ``rate``: the same
  weights, and the unrolled blocks' dropout streams set to the scanned
  model's per-layer streams."""
  config = scan_config(dropout=rate)
  rngs = lambda: nnx.Rngs(params=jax.random.key(0), dropout=jax.random.key(1))
  unrolled = models.create_model(config, 11, rngs())
  scanned = models.create_model(dataclasses.replace(config, scan_layers=True), 11, rngs())
  for kind in (nnx.Param, nnx.RngState):
    state = nnx.state(unrolled, kind)
    nnx.replace_by_pure_dict(
      state, models.unstack_layers(nnx.to_pure_dict(nnx.state(scanned, kind)))
    )
    nnx.update(unrolled, state)
  return unrolled, scanned


def _layer_keys(model) -> list[np.ndarray]:
  """The key data of every dropout stream of the scanned model, per layer."""
  keys = nnx.to_pure_dict(nnx.state(model, nnx.RngKey))
  return [np.asarray(jax.random.key_data(k)) for k in jax.tree.leaves(keys)]


def test_dropout_is_off_at_evaluation_and_draws_new_masks_every_call(scan_config):
  """Training mode drops (a new mask each call); ``models.deterministic``
  gives exactly the model without dropout, with the same weights."""
  tokens = jnp.arange(16).reshape(2, 8) % 11
  for scan in (False, True):
    config = scan_config(dropout=0.3, scan_layers=scan)
    model = models.create_model(config, 11, nnx.Rngs(params=0, dropout=1))
    reference = models.create_model(dataclasses.replace(config, dropout=0.0), 11, nnx.Rngs(2))
    nnx.update(reference, nnx.state(model, nnx.Param))
    first, second = model(tokens), model(tokens)
    assert not np.allclose(first, second)
    evaluated = models.deterministic(model)(tokens)
    np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(reference(tokens)))
    assert not np.allclose(evaluated, first)


def test_scanned_dropout_uses_each_layers_own_stream(scan_config):
  """Under nnx.scan every layer draws its masks from its own stream (split
  per layer when the blocks are created): the scanned model's training-mode
  logits are those of the unrolled model whose block i has layer i's
  stream; the streams differ, and with layer 0's stream in both blocks the
  logits differ."""
  tokens = jnp.arange(16).reshape(2, 8) % 11
  unrolled, scanned = _dropout_models(scan_config, 0.5)
  keys = _layer_keys(scanned)
  assert keys and all(k.shape[0] == 2 and not np.array_equal(k[0], k[1]) for k in keys)
  logits = np.asarray(scanned(tokens))
  np.testing.assert_allclose(logits, np.asarray(unrolled(tokens)), rtol=1e-5, atol=1e-5)
  shared, _ = _dropout_models(scan_config, 0.5)
  nnx.update(shared.blocks[1], nnx.state(shared.blocks[0], nnx.RngState))
  assert not np.allclose(np.asarray(shared(tokens)), logits, atol=1e-3)
