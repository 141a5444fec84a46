"""optax_sbs.parameter_type on the params that real Flax modules create, and
the example models' groups pinned to the shape rule their results were made with."""

import importlib.util
import math
import os

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import optax_sbs

ROOT = os.path.dirname(os.path.dirname(__file__))


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
  from optax_sbs import _probability  # noqa: PLC0415

  names = [str(getattr(e, 'key', getattr(e, 'name', getattr(e, 'idx', e)))) for e in path]
  if any(_probability._NORM_PATTERN.search(n) for n in names[:-1]):
    return 'norm'
  if any(_probability._EMBED_PATTERN.search(n) for n in names):
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
