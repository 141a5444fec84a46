"""Golden values: what the family's transformations compute today, as hashes.

Each case runs one transformation for three jitted steps on a fixed tree
and fixed gradients and records, per step, a hash of its masks (SBS: where
the new count is 1; the masking wrappers: where the update is not 0, the
inner updates being non-zero everywhere), and after the last step a hash of
every state field, with float sums to say by how much a field moved if its
hash ever changes. ``test_golden.py`` recomputes them: a refactoring that
changes no behaviour leaves every hash as it is.

  python tests/golden.py     # writes tests/golden_values.json (after a deliberate change)

XLA's backend optimisation level changes float rounding (fused multiply-adds),
so the values are written with the flag the tests run with (``conftest.py``
at the root turns the optimisations off unless
``OPTAX_SBS_TEST_XLA_OPTIMIZE=1``), and record it.
"""

import hashlib
import json
import os

FAST_COMPILE = '--xla_backend_optimization_level=0'
if __name__ == '__main__' and os.environ.get('OPTAX_SBS_TEST_XLA_OPTIMIZE') != '1':
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + FAST_COMPILE).strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden_values.json')
STEPS = 3


def flat_tree():
  """Leaves of several shapes, two dense layers of one shape (computed
  together), a scalar, and a leaf too large to be computed with others."""
  return {
    'Conv_0': {'kernel': (3, 3, 2, 4), 'bias': (4,)},
    'Dense_0': {'kernel': (8, 6), 'bias': (6,)},
    'Dense_1': {'kernel': (8, 6), 'bias': (6,)},
    'LayerNorm_0': {'scale': (6,)},
    'big': {'kernel': (260, 260)},
    'temperature': (),
  }


def stacked_tree():
  """A scanned block (axis 0 indexes 3 layers) beside ordinary leaves."""
  return {
    'layers': {
      'attn': {'kernel': (3, 8, 8), 'bias': (3, 8)},
      'mlp': {'kernel': (3, 8, 16)},
      'norm': {'scale': (3, 8)},
    },
    'embed': {'embedding': (10, 8)},
    'head': {'kernel': (8, 5)},
  }


def _arrays(shapes, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )


STACKED = optax_sbs.layers_under('layers')
ADAM = optax.adam(1e-2)

# name -> (tree, transformation, what its masks are read from).
CASES = {
  'sbs/adaptive': (flat_tree, lambda: optax_sbs.stochastic_batch_size(0), 'count'),
  'sbs/adaptive_lam0_gradient': (
    flat_tree,
    lambda: optax_sbs.stochastic_batch_size(1, lam=0.0, magnitude='gradient', scale_by_count=True),
    'count',
  ),
  'sbs/fixed': (flat_tree, lambda: optax_sbs.stochastic_batch_size(2, probability=0.5), 'count'),
  'sbs/adaptive_stacked': (
    stacked_tree,
    lambda: optax_sbs.stochastic_batch_size(3, layer_axes=STACKED),
    'count',
  ),
  'sbs/fixed_stacked': (
    stacked_tree,
    lambda: optax_sbs.stochastic_batch_size(4, probability=0.3, layer_axes=STACKED),
    'count',
  ),
  'wrapper/adaptive_lam0': (
    flat_tree,
    lambda: optax_sbs.with_stochastic_batch_size(ADAM, 5, lam=0.0),
    'count',
  ),
  'wrapper/adaptive_stacked': (
    stacked_tree,
    lambda: optax_sbs.with_stochastic_batch_size(ADAM, 6, lam=0.0, layer_axes=STACKED),
    'count',
  ),
  'wrapper/fixed_stacked': (
    stacked_tree,
    lambda: optax_sbs.with_stochastic_batch_size(ADAM, 7, probability=0.5, layer_axes=STACKED),
    'count',
  ),
  'masked_updates/element': (
    flat_tree,
    lambda: optax_sbs.masked_updates(ADAM, 8, granularity='element'),
    'updates',
  ),
  'masked_updates/leaf': (
    flat_tree,
    lambda: optax_sbs.masked_updates(ADAM, 9, granularity='leaf'),
    'updates',
  ),
  'masked_updates/leaf_stacked': (
    stacked_tree,
    lambda: optax_sbs.masked_updates(ADAM, 10, granularity='leaf', layer_axes=STACKED),
    'updates',
  ),
  'magma/leaf': (flat_tree, lambda: optax_sbs.magma(ADAM, 11), 'updates'),
  'magma/leaf_stacked': (
    stacked_tree,
    lambda: optax_sbs.magma(ADAM, 12, layer_axes=STACKED),
    'updates',
  ),
  'magma/element': (
    flat_tree,
    lambda: optax_sbs.magma(ADAM, 13, granularity='element'),
    'updates',
  ),
}


def _bytes(x) -> bytes:
  x = jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  x = np.asarray(x)
  return x.dtype.str.encode() + str(x.shape).encode() + np.ascontiguousarray(x).tobytes()


def digest(tree) -> str:
  """sha256 of the dtypes, shapes and bytes of every leaf, in leaf order."""
  h = hashlib.sha256()
  for x in jax.tree.leaves(tree):
    h.update(_bytes(x))
  return h.hexdigest()[:20]


def _fields(state, prefix=''):
  """(name, subtree) of every field of every NamedTuple inside ``state``."""
  if isinstance(state, tuple) and hasattr(state, '_fields'):
    for name, value in zip(state._fields, state):
      yield from _fields(value, f'{prefix}{name}/')
  elif isinstance(state, tuple):
    for i, value in enumerate(state):
      yield from _fields(value, f'{prefix}{i}/')
  else:
    yield prefix.rstrip('/'), state


def _sums(tree) -> list[float]:
  """Per leaf, the float64 sum of its values (keys by their data)."""
  out = []
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    out.append(float(np.asarray(x, np.float64).sum()))
  return out


def run_case(name: str) -> dict:
  """The golden values of case ``name``."""
  tree, make, masks_from = CASES[name]
  shapes = tree()
  params = _arrays(shapes, 0)
  tx = make()
  state = tx.init(params)
  update = jax.jit(tx.update)
  masks = []
  for step in range(STEPS):
    grads = _arrays(shapes, 100 + step)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if masks_from == 'count':
      mask = jax.tree.map(lambda k: k == 1, optax_sbs.find_state(state).count)
    else:
      mask = jax.tree.map(lambda u: u != 0, updates)
    masks.append(digest(mask))
  fields = dict(_fields(state))
  return {
    'masks': masks,
    'state': {field: digest(value) for field, value in fields.items()},
    'sums': {field: _sums(value) for field, value in fields.items()},
    'params': digest(params),
  }


def main() -> None:
  values = {
    'jax': jax.__version__,
    'xla_optimized': FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''),
    'cases': {name: run_case(name) for name in CASES},
  }
  with open(PATH, 'w', encoding='utf-8') as f:
    json.dump(values, f, indent=1, sort_keys=True)
    f.write('\n')
  print(f'wrote {PATH} ({len(CASES)} cases, jax {jax.__version__})')


if __name__ == '__main__':
  main()
