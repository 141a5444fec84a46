"""The parameter trees the timings run on: the cifar example's CNNs, a
GPT-style transformer, and a transformer-like tree of many small leaves."""

import jax
import jax.numpy as jnp

from harness import examples


def transformer_params(layers: int, width: int, vocab: int, context: int):
  """Shapes of a GPT-style decoder: token and position embeddings, per block
  two LayerNorms, a fused QKV and an output projection, a 4x MLP, all with
  biases; a final LayerNorm (the head tied to the token embedding)."""
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  norm = lambda: {'scale': f32(width), 'bias': f32(width)}
  dense = lambda i, o: {'kernel': f32(i, o), 'bias': f32(o)}
  params = {'wte': {'embedding': f32(vocab, width)}, 'wpe': {'embedding': f32(context, width)}}
  for i in range(layers):
    params[f'block_{i}'] = {
      'ln_1': norm(),
      'attn': {'qkv': dense(width, 3 * width), 'out': dense(width, width)},
      'ln_2': norm(),
      'mlp': {'fc': dense(width, 4 * width), 'proj': dense(4 * width, width)},
    }
  params['ln_f'] = norm()
  return params


TRANSFORMERS = {
  # 8 blocks of width 512, 8k vocabulary: 29.6M parameters in 100 leaves.
  'transformer': dict(layers=8, width=512, vocab=8192, context=1024),
  'transformer_tiny': dict(layers=2, width=64, vocab=256, context=64),
}


def _models():
  return examples.EXAMPLES['cifar'].module('models')


def cnn_names() -> list[str]:
  """The cifar example's models."""
  return list(_models().MODELS)


def tree_shapes(name):
  """Parameter shapes of a CIFAR model of the example, or a transformer."""
  if name in TRANSFORMERS:
    return transformer_params(**TRANSFORMERS[name])
  model = _models().create_model(name, 10)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  return variables['params']


LEAF_COUNTS = (50, 100, 400, 1000)


def many_leaves(count: int, width: int = 64):
  """The first ``count`` leaves of a transformer-like tree of small blocks:
  per block an attention kernel ``(w, 3w)``, an MLP kernel ``(w, 4w)`` and
  its bias ``(4w,)``, and a LayerNorm scale ``(w,)`` (an unscanned model of
  many layers, four shapes)."""
  kinds = (
    ('attn', 'kernel', (width, 3 * width)),
    ('mlp', 'kernel', (width, 4 * width)),
    ('mlp', 'bias', (4 * width,)),
    ('ln', 'scale', (width,)),
  )
  params: dict = {}
  for i in range(count):
    module, name, shape = kinds[i % len(kinds)]
    block = params.setdefault(f'block_{i // len(kinds):04d}', {})
    block.setdefault(module, {})[name] = jax.ShapeDtypeStruct(shape, jnp.float32)
  return params
