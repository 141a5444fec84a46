"""optax_sbs._probability: update_probability's local and global terms, the
per-layer statistics of stacked leaves, and parameter_type on usual names, on
the params that real Flax modules create, and on the example models (pinned
to the shape rule their results were made with)."""

import importlib.util
import math
import os

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_sbs
from optax_sbs import _bundles
from optax_sbs import _groups as groups_lib
from optax_sbs import _plan
from optax_sbs import _probability

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_alpha_lam_zero_gives_one_half():
  rng = np.random.default_rng(6)
  shapes = [(3, 3, 3, 8), (8,), (64, 32), (10,)]
  mags = [jnp.asarray(np.abs(rng.standard_normal(s)), jnp.float32) for s in shapes]
  probs = optax_sbs.update_probability(mags, [0] * len(mags), 0.0, 0.0)
  for p in probs:
    np.testing.assert_array_equal(np.asarray(p), 0.5)


def test_degenerate_statistics_give_one_half():
  """Equal magnitudes within a leaf, one leaf per group, equal layers."""
  mags = [jnp.full((5, 3), 0.1), jnp.full((7,), 0.1), jnp.zeros((4,)), jnp.full((), 2.0)]
  probs = optax_sbs.update_probability(mags, [0, 0, 1, 2], 0.1, -4.0)
  for p in probs:
    np.testing.assert_array_equal(np.asarray(p), 0.5)


def test_local_scheme_ranks_by_magnitude_within_layer():
  """lam = 0, alpha > 0: larger |g~| gives larger p; mean v = 0 per layer."""
  a = jnp.asarray(np.random.default_rng(0).random(1000), jnp.float32)
  (p,) = optax_sbs.update_probability([a], [0], 3.0, 0.0)
  order = np.argsort(np.asarray(a))
  assert np.all(np.diff(np.asarray(p)[order]) >= 0)
  v = np.log(np.asarray(p) / (1 - np.asarray(p))) / 3.0
  np.testing.assert_allclose(v.mean(), 0, atol=1e-4)
  np.testing.assert_allclose(v.std(), 1, atol=1e-4)


def test_global_scheme_is_constant_within_layer():
  rng = np.random.default_rng(0)
  mags = [jnp.asarray(rng.random(50) * s, jnp.float32) for s in (1, 2, 10)]
  probs = optax_sbs.update_probability(mags, [0, 0, 0], 0.0, -4.0)
  for p in probs:
    assert np.ptp(np.asarray(p)) == 0
  # lam < 0: the layer with the smallest mean magnitude is updated most.
  firsts = [float(p[0]) for p in probs]
  assert firsts[0] > firsts[1] > firsts[2]


def _small_group_magnitudes(first_mean):
  """A conv group of 432, 4,608 and 18,432 elements (a small CNN's), the first leaf's
  mean magnitude ``first_mean``, the others' 1."""
  rng = np.random.default_rng(0)
  mags = []
  for size, mean in ((432, first_mean), (4608, 1.0), (18432, 1.0)):
    a = rng.random(size)
    mags.append(jnp.asarray(a / a.mean() * mean, jnp.float32))
  return mags


def test_standardised_global_term_freezes_a_layer_in_a_small_group():
  """Eq. 19's standardisation turns a 5% difference into mu~ = 7.3: at
  lam = -4 the small leaf's p is 2e-13 (never updated), while the relative
  normalisation gives mu~ = 0.049 and p = sigmoid(-4 * 0.049)."""
  mags = _small_group_magnitudes(1.05)
  p_std = optax_sbs.update_probability(mags, ['conv'] * 3, 0.0, -4.0)
  p_mean = optax_sbs.update_probability(mags, ['conv'] * 3, 0.0, -4.0, 'mean')
  weights = np.array([432, 4608, 18432]) / 23472
  group_mean = weights @ np.array([1.05, 1.0, 1.0])
  relative = (1.05 - group_mean) / group_mean
  np.testing.assert_allclose(float(p_mean[0][0]), 1 / (1 + np.exp(4 * relative)), rtol=1e-4)
  assert float(p_std[0][0]) < 1e-12 and 0.45 < float(p_mean[0][0]) < 0.46
  # The large leaves barely move either way (just below the group's mean).
  for p in (p_std, p_mean):
    assert 0.5 < float(p[2][0]) < 0.7
  # Two leaves: standardised values are +-1 whatever their difference.
  two = [jnp.full((256,), 1.0), jnp.full((320,), 1.001)]
  p_two = optax_sbs.update_probability(two, [0, 0], 0.0, -4.0)
  assert float(p_two[1][0]) < 0.05 and float(p_two[0][0]) > 0.95
  p_two = optax_sbs.update_probability(two, [0, 0], 0.0, -4.0, 'mean')
  np.testing.assert_allclose([float(p[0]) for p in p_two], 0.5, atol=1e-3)


def test_relative_global_term_is_scale_free_and_zero_without_gradient():
  mags = _small_group_magnitudes(2.0)
  base = optax_sbs.update_probability(mags, [0] * 3, 0.1, -4.0, 'mean')
  scaled = optax_sbs.update_probability([m * 1000 for m in mags], [0] * 3, 0.1, -4.0, 'mean')
  for a, b in zip(base, scaled):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4)
  zero = optax_sbs.update_probability([jnp.zeros(4), jnp.zeros(3)], [0, 0], 0.0, -4.0, 'mean')
  for p in zero:
    np.testing.assert_array_equal(np.asarray(p), 0.5)


def test_statistics_of_stacked_leaves_are_those_of_each_layer():
  """Mean and std per layer (eq. 17) from the row reductions of bundles,
  leaves of one shape interleaved with others, stacked axes, a scalar and a
  size-0 leaf: the vectors are in leaf order and match NumPy."""
  rng = np.random.default_rng(4)
  specs = [((4, 6), ()), ((5,), ()), ((3, 4, 6), (0,)), ((4, 6), ()), ((), ())]
  specs += [((5,), ()), ((0, 3), ()), ((3, 4, 6), (0,)), ((4, 2, 3), (1,))]
  magnitudes = [jnp.asarray(np.abs(rng.normal(size=s)), jnp.float32) for s, _ in specs]
  axes = [ax for _, ax in specs]
  plan = _plan.build(magnitudes, axes)
  assert plan.bundles == ((0, 3), (1, 5), (2, 7), (4,), (8,))

  def vectors(m):
    means, stds = _probability.layer_statistics(plan, _bundles.join(m, plan.bundles))
    return _probability.coefficient_vectors(plan, means, stds, ['g'] * len(m), 1.0, 0.0, 'std')

  means, scales, offsets = jax.jit(vectors)(magnitudes)
  want_mean, want_std = [], []
  for a, ax in zip(magnitudes, axes):
    a = np.asarray(a, np.float64)
    if not a.size:
      want_mean.append(0.0)
      want_std.append(0.0)
      continue
    rows = np.moveaxis(a, ax, tuple(range(len(ax)))).reshape(math.prod(a.shape[d] for d in ax), -1)
    want_mean.extend(rows.mean(axis=1))
    want_std.extend(rows.std(axis=1))
  want_mean, want_std = np.asarray(want_mean), np.asarray(want_std)
  np.testing.assert_allclose(means, want_mean, rtol=1e-6)
  degenerate = want_std <= 1e-5 * want_mean
  assert np.flatnonzero(degenerate).tolist() == [6, 8]  # the scalar and the size-0 leaf
  np.testing.assert_allclose(np.asarray(scales)[~degenerate], 1 / want_std[~degenerate], rtol=2e-5)
  np.testing.assert_array_equal(np.asarray(scales)[degenerate], 0)
  np.testing.assert_array_equal(offsets, 0)


def test_parameter_type_default_grouping():
  params = {
    'params': {
      'Conv_0': {'kernel': jnp.zeros((3, 3, 3, 8)), 'bias': jnp.zeros(8)},
      'BatchNorm_0': {'scale': jnp.zeros(8), 'bias': jnp.zeros(8)},
      'bn1': {'scale': jnp.zeros(8)},
      'layer1_0': {'norm_1': {'bias': jnp.zeros(8)}},
      'Dense_0': {'kernel': jnp.zeros((8, 10)), 'bias': jnp.zeros(10)},
      'Embed_0': {'embedding': jnp.zeros((100, 8))},
      'scalar': jnp.zeros(()),
    }
  }
  got = {
    jax.tree_util.keystr(p): optax_sbs.parameter_type(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  assert got == {
    "['params']['BatchNorm_0']['bias']": 'norm',
    "['params']['BatchNorm_0']['scale']": 'norm',
    "['params']['Conv_0']['bias']": 'bias',
    "['params']['Conv_0']['kernel']": 'conv',
    "['params']['Dense_0']['bias']": 'bias',
    "['params']['Dense_0']['kernel']": 'dense',
    "['params']['Embed_0']['embedding']": 'embedding',
    "['params']['bn1']['scale']": 'norm',
    "['params']['layer1_0']['norm_1']['bias']": 'norm',
    "['params']['scalar']": 'bias',
  }


@pytest.mark.parametrize(
  'path,ndim,want',
  [
    # GPT-style (nanoGPT, Hugging Face GPT-2 as pytrees).
    (('h', '0', 'ln_1', 'scale'), 1, 'norm'),
    (('h', '0', 'ln_2', 'bias'), 1, 'norm'),
    (('ln_f', 'scale'), 1, 'norm'),
    (('blocks', 'ln1', 'weight'), 1, 'norm'),
    (('wte', 'embedding'), 2, 'embedding'),
    (('transformer', 'wpe', 'weight'), 2, 'embedding'),
    (('h', '0', 'attn', 'c_attn', 'kernel'), 2, 'dense'),
    (('lm_head', 'kernel'), 2, 'dense'),
    # Haiku / Equinox / Llama-style names.
    (('transformer/layer_norm', 'scale'), 1, 'norm'),
    (('mlp/~/linear_0', 'b'), 1, 'bias'),
    (('layers', 'input_layernorm', 'weight'), 1, 'norm'),
    (('encoder', 'norm1', 'weight'), 1, 'norm'),
    (('stem', 'gn', 'scale'), 1, 'norm'),
    (('tok_embeddings', 'weight'), 2, 'embedding'),
    # Names that merely contain the letters are not norms or embeddings.
    (('kiln', 'bias'), 1, 'bias'),
    (('lnx', 'kernel'), 2, 'dense'),
    (('swte', 'kernel'), 2, 'dense'),
  ],
)
def test_parameter_type_usual_names(path, ndim, want):
  keys = tuple(jax.tree_util.DictKey(k) for k in path)
  assert optax_sbs.parameter_type(keys, jnp.zeros((2,) * ndim)) == want


def _groups(params):
  return {
    jax.tree_util.keystr(path): optax_sbs.parameter_type(path, x)
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
  }


class _Linen(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Embed(10, 8)(x)
    x = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(x)
    x = nn.DenseGeneral((2, 4))(x).reshape(x.shape[:-1] + (8,))
    x = nn.Conv(8, (3,))(x)  # 1-D: Conv_0
    x = nn.Conv(8, (3, 3))(x[:, :, None, :])[:, :, 0]  # 2-D
    x = nn.RMSNorm()(x)
    x = nn.LayerNorm()(x)
    x = nn.BatchNorm(use_running_average=True)(x)
    return nn.Dense(4)(x)


def test_linen_modules():
  params = jax.eval_shape(_Linen().init, jax.random.key(0), jnp.zeros((1, 5), jnp.int32))['params']
  got = _groups(params)
  mha = "['MultiHeadDotProductAttention_0']"
  want = {
    "['Embed_0']['embedding']": 'embedding',
    "['DenseGeneral_0']['kernel']": 'dense',  # (8, 2, 4)
    "['DenseGeneral_0']['bias']": 'bias',  # (2, 4)
    "['Conv_0']['kernel']": 'conv',  # (3, 8, 8): 1-D convolution
    "['Conv_0']['bias']": 'bias',
    "['Conv_1']['kernel']": 'conv',
    "['Conv_1']['bias']": 'bias',
    "['RMSNorm_0']['scale']": 'norm',
    "['LayerNorm_0']['scale']": 'norm',
    "['LayerNorm_0']['bias']": 'norm',
    "['BatchNorm_0']['scale']": 'norm',
    "['BatchNorm_0']['bias']": 'norm',
    "['Dense_0']['kernel']": 'dense',
    "['Dense_0']['bias']": 'bias',
  }
  for name in ('query', 'key', 'value', 'out'):
    want[f"{mha}['{name}']['kernel']"] = 'dense'  # 3-D
    want[f"{mha}['{name}']['bias']"] = 'bias'  # (heads, head_dim), or (features,)
  assert got == want


class _NNX(nnx.Module):
  def __init__(self, rngs):
    self.embedding = nnx.Embed(10, 8, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs
    )
    self.input_layernorm = nnx.RMSNorm(8, rngs=rngs)
    self.final_norm = nnx.LayerNorm(8, rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.q_proj = nnx.LinearGeneral(8, (2, 4), rngs=rngs)
    self.conv1d = nnx.Conv(8, 8, (3,), rngs=rngs)
    self.conv = nnx.Conv(8, 8, (3, 3), rngs=rngs)
    self.mlp = nnx.Linear(8, 32, rngs=rngs)
    self.w_in = nnx.LinearGeneral(8, (2, 4), rngs=rngs)  # a name the rule does not know


def test_nnx_modules_through_the_optimizer():
  """The paths group_fn sees inside nnx.Optimizer, grouped."""
  model = _NNX(nnx.Rngs(0))
  seen = {}

  def group_fn(path, leaf):
    seen[jax.tree_util.keystr(path)] = group = optax_sbs.parameter_type(path, leaf)
    return group

  optimizer = nnx.Optimizer(model, optax_sbs.sbs(0.1, key=0, group_fn=group_fn), wrt=nnx.Param)
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))

  def step(optimizer, model, grads):
    optimizer.update(model, grads)
    return 0

  nnx.eval_shape(step, optimizer, model, grads)  # group_fn runs when the update is traced
  want = {
    "['embedding']['embedding']": 'embedding',
    "['input_layernorm']['scale']": 'norm',
    "['final_norm']['scale']": 'norm',
    "['final_norm']['bias']": 'norm',
    "['bn1']['scale']": 'norm',
    "['bn1']['bias']": 'norm',
    "['q_proj']['kernel']": 'dense',
    "['q_proj']['bias']": 'bias',
    "['conv1d']['kernel']": 'conv',
    "['conv1d']['bias']": 'bias',
    "['conv']['kernel']": 'conv',
    "['conv']['bias']": 'bias',
    "['mlp']['kernel']": 'dense',
    "['mlp']['bias']": 'bias',
    "['w_in']['kernel']": 'conv',  # the documented guess: 3-D, unknown name
    "['w_in']['bias']": 'bias',
  }
  for name in ('query', 'key', 'value', 'out'):
    want[f"['attn']['{name}']['kernel']"] = 'dense'
    want[f"['attn']['{name}']['bias']"] = 'bias'
  assert seen == want


@pytest.mark.parametrize(
  'path,shape,want',
  [
    (('layers', 'mlp', 'kernel'), (64, 256), 'dense'),
    (('layers', 'mlp', 'kernel'), (12, 64, 256), 'dense'),  # by path, even stacked
    (('layers', 'mlp', 'bias'), (12, 64), 'bias'),
    (('block', 'ln_1', 'bias'), (12, 64), 'norm'),  # norm before bias
    (('token_embed', 'embedding'), (100, 8), 'embedding'),
    (('pos_embedding',), (1, 16, 8), 'embedding'),  # embedding before kernel
    (('encoder', 'stem', 'kernel'), (7, 7, 3, 64), 'conv'),  # shape fallback
    (('w',), (8, 8), 'dense'),
    (('scale',), (), 'bias'),
  ],
)
def test_precedence_and_fallbacks(path, shape, want):
  assert optax_sbs.parameter_type(path, jax.ShapeDtypeStruct(shape, jnp.float32)) == want


def _shape_rule(path, leaf):
  """The rule the committed results were made with: norm and embedding by
  path (as today), then 3+ dimensions 'conv', 2 'dense', fewer 'bias'."""
  names = [str(getattr(e, 'key', getattr(e, 'name', getattr(e, 'idx', e)))) for e in path]
  if any(groups_lib._NORM_PATTERN.search(n) for n in names[:-1]):
    return 'norm'
  if any(groups_lib._EMBED_PATTERN.search(n) for n in names):
    return 'embedding'
  return {0: 'bias', 1: 'bias', 2: 'dense'}.get(leaf.ndim, 'conv')


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('model', ['small_cnn', 'wide_cnn', 'vgg11', 'resnet18', 'resnet50'])
def test_cifar_models_keep_their_groups(model):
  models = _load('examples/cifar/models.py', 'cifar_models_for_grouping')
  net = models.create_model(model, num_classes=10)
  variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  flat = jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  assert {jax.tree_util.keystr(p): optax_sbs.parameter_type(p, x) for p, x in flat} == {
    jax.tree_util.keystr(p): _shape_rule(p, x) for p, x in flat
  }


def test_lm_model_keeps_its_groups():
  models = _load('examples/lm/models.py', 'lm_models_for_grouping')
  net = nnx.eval_shape(
    lambda: models.Transformer(
      65,
      num_layers=2,
      num_heads=2,
      embed_dim=16,
      mlp_ratio=4,
      context_length=8,
      rngs=nnx.Rngs(0),
    )
  )
  flat = jax.tree_util.tree_flatten_with_path(nnx.state(net, nnx.Param))[0]
  got = {jax.tree_util.keystr(p): optax_sbs.parameter_type(p, x) for p, x in flat}
  assert got == {jax.tree_util.keystr(p): _shape_rule(p, x) for p, x in flat}
  assert sorted(set(got.values())) == ['bias', 'dense', 'embedding', 'norm']
  assert math.prod(flat[0][1].shape) > 0
