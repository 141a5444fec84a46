"""Mask granularity as the axes a block keeps: columns, rows, Muon's dimension
numbers and callables, for SBS, masked_updates and magma, against NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs
from tests import reference

L = 3
LAYERS = optax_sbs.layers_under('layers')
SHAPES = {
  'layers': {'kernel': (L, 6, 5), 'bias': (L, 5)},
  'head': {'kernel': (7, 4), 'bias': (4,)},
  'scale': (),
  'empty': (0, 3),
}
CONV = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)


def _is_shape(x):
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def _params():
  return jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), SHAPES, is_leaf=_is_shape)


def _grads(rng):
  return jax.tree.map(
    lambda s: jnp.asarray(rng.standard_normal(s) + 0.5, jnp.float32), SHAPES, is_leaf=_is_shape
  )


# Per leaf path, the axes a column / row block keeps (layer axes included).
KEPT = {
  'column': {
    'layers/kernel': (0, 2),
    'layers/bias': (0,),
    'head/kernel': (1,),
    'head/bias': (),
    'scale': (),
    'empty': (1,),
  },
  'row': {
    'layers/kernel': (0, 1),
    'layers/bias': (0,),
    'head/kernel': (0,),
    'head/bias': (),
    'scale': (),
    'empty': (0,),
  },
}


def _name(path):
  return '/'.join(str(k.key) for k in path)


def _blocks(array, kept):
  """``array`` reshaped so that axis 0 runs over its blocks (row-major over
  the kept axes) and axis 1 over the elements of a block."""
  spanned = [d for d in range(array.ndim) if d not in kept]
  moved = np.transpose(array, (*kept, *spanned))
  blocks = math.prod(array.shape[d] for d in kept)
  return moved.reshape(blocks, math.prod(array.shape[d] for d in spanned))


MAKERS = {
  'sbs_fixed': lambda g, p: optax_sbs.sbs(
    1.0, key=3, probability=p, granularity=g, layer_axes=LAYERS
  ),
  'sbs_adaptive': lambda g, p: optax_sbs.sbs(
    1.0, key=3, lam=0.0, alpha=1.0, granularity=g, layer_axes=LAYERS
  ),
  'masked_updates': lambda g, p: optax_sbs.masked_updates(
    optax.sgd(1.0), 3, probability=p, granularity=g, layer_axes=LAYERS
  ),
  'magma': lambda g, p: optax_sbs.magma(
    optax.sgd(1.0), 3, probability=p, granularity=g, layer_axes=LAYERS
  ),
}


@pytest.mark.parametrize('kind', ['column', 'row'])
@pytest.mark.parametrize('name', sorted(MAKERS))
def test_masks_are_constant_within_a_block_and_kept_at_rate_p(name, kind):
  """Every column / row of a layer (a stacked slice's too; a vector, a scalar
  and a size-0 leaf are one block per layer) is updated or held as one, and
  blocks are kept at rate p."""
  p = 0.3
  tx = MAKERS[name](kind, p)
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  rng = np.random.default_rng(0)
  kept = total = 0
  for _ in range(30):
    updates, state = step(_grads(rng), state, params)
    for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
      blocks = _blocks(np.asarray(u) != 0, KEPT[kind][_name(path)])
      if not blocks.size:
        continue
      assert (blocks.all(axis=1) | ~blocks.any(axis=1)).all(), _name(path)
      kept, total = kept + int(blocks[:, 0].sum()), total + blocks.shape[0]
  if name != 'sbs_adaptive':
    assert abs(kept - total * p) <= 5 * math.sqrt(total * p * (1 - p)) + 1, (kept, total)


@pytest.mark.parametrize('granularity', ['element', 'leaf', 'column'])
@pytest.mark.parametrize('family', ['masked_updates', 'magma'])
def test_kept_fractions_match_the_updates_and_an_empty_leaf_keeps_nothing(family, granularity):
  """The recorded kept fraction of each leaf is the fraction of its updates
  that are not zero; a leaf with no elements records 0, whatever its
  block's draw."""
  tx = getattr(optax_sbs, family)(optax.sgd(1.0), 5, probability=0.5, granularity=granularity)
  params = {'a': jnp.zeros((4, 0)), 'b': jnp.ones((6, 3)), 'c': jnp.ones(40), 'd': jnp.ones((2, 0))}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(4):
    updates, state = step(jax.tree.map(jnp.ones_like, params), state, params)
    want = [np.mean(np.asarray(u) != 0) if u.size else 0.0 for u in jax.tree.leaves(updates)]
    np.testing.assert_allclose(np.asarray(state.kept), want, rtol=1e-6)


def test_sbs_block_probability_is_the_mean_of_its_elements():
  """With the gradient's magnitudes setting p, the mask of each column is
  ``u < mean(p)`` over the column, with ``u`` the block's place in the
  step's stream (one uniform per block, leaves in order)."""
  alpha, lam = 2.0, 0.0
  rng = np.random.default_rng(1)
  grads = {'a': rng.standard_normal((8, 5)).astype(np.float32), 'b': rng.standard_normal(3)}
  grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads)
  params = jax.tree.map(jnp.zeros_like, grads)
  tx = optax_sbs.stochastic_batch_size(
    7, alpha=alpha, lam=lam, magnitude='gradient', granularity='column'
  )
  state = tx.init(params)
  _, step_key = jax.random.split(state.key)
  updates, _ = tx.update(grads, state, params)
  mags = [np.abs(np.asarray(g)) for g in jax.tree.leaves(grads)]
  groups = [
    optax_sbs.parameter_type(path, g) for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
  ]
  probs = reference.probabilities(mags, groups, alpha, lam)
  block_p = [probs[0].mean(axis=0), np.array([probs[1].mean()])]
  stream = np.asarray(jax.random.uniform(step_key, (6,), jnp.float32))
  want_a = np.broadcast_to(stream[:5] < block_p[0], (8, 5))
  want_b = np.broadcast_to(stream[5:] < block_p[1], (3,))
  np.testing.assert_array_equal(np.asarray(updates['a']) != 0, want_a)
  np.testing.assert_array_equal(np.asarray(updates['b']) != 0, want_b)
  assert 0 < want_a[0].sum() < 5  # some columns kept, some held


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_magma_scores_and_cosines_per_column():
  """Per column block: the cosine of momentum and gradient, the score's
  recursion, and kept updates scaled by their column's score."""
  tau, beta_s, beta_m = 2.0, 0.9, 0.8
  tx = optax_sbs.magma(
    optax.sgd(1.0),
    5,
    probability=0.5,
    tau=tau,
    score_decay=beta_s,
    momentum_decay=beta_m,
    granularity='column',
    layer_axes=LAYERS,
  )
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  rng = np.random.default_rng(2)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  m = [np.zeros(x.shape) for _, x in flat]
  s = [np.ones(_blocks(np.zeros(x.shape), KEPT['column'][_name(p)]).shape[0]) for p, x in flat]
  for _ in range(6):
    grads = _grads(rng)
    updates, state = step(grads, state, params)
    scores = jax.tree.leaves(state.score_tree())
    for i, ((path, g), u, got) in enumerate(
      zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(updates), scores)
    ):
      kept = KEPT['column'][_name(path)]
      g = np.asarray(g, np.float64)
      m[i] = beta_m * m[i] + (1 - beta_m) * g
      mb, gb = _blocks(m[i], kept), _blocks(g, kept)
      norms = np.linalg.norm(mb, axis=1) * np.linalg.norm(gb, axis=1)
      cos = np.where(norms > 0, (mb * gb).sum(axis=1) / np.where(norms > 0, norms, 1), 0)
      s[i] = beta_s * s[i] + (1 - beta_s) * _sigmoid(cos / tau)
      np.testing.assert_allclose(np.asarray(got).reshape(-1), s[i], rtol=1e-5)
      ub = _blocks(np.asarray(u), kept)
      z = ub[:, 0] != 0 if ub.size else np.zeros(0, bool)
      np.testing.assert_allclose(ub[z], (s[i][:, None] * -gb)[z], rtol=1e-5)
  stats = optax_sbs.layer_statistics(state)
  kernel = [_name(p) for p, _ in flat].index('layers/kernel')
  np.testing.assert_allclose(
    float(stats['magma/score/layers/kernel/1']), s[kernel].reshape(L, 5)[1].mean(), rtol=1e-5
  )
  assert {'magma/kept_fraction/head/kernel', 'magma/score/head/bias'} <= set(stats)


def test_muon_dimension_numbers_and_callables_name_the_kept_axes():
  """A convolution kernel needs its output axis named: by Muon's dimension
  numbers (one for every leaf, or per leaf), or by a callable."""
  params = {'conv': jnp.zeros((3, 3, 4, 8)), 'dense': jnp.zeros((8, 2)), 'bias': jnp.zeros(2)}
  grads = jax.tree.map(lambda x: jnp.ones_like(x) + 1.0, params)
  with pytest.raises(ValueError, match=r"\['conv'\].*\(3, 3, 4, 8\).*optax_sbs.columns"):
    tx = optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity='column')
    tx.update(grads, tx.init(params), params)
  per_leaf = lambda path, x: CONV if x.ndim == 4 else None  # noqa: E731
  by_callable = lambda path, x: (3,) if x.ndim == 4 else ((1,) if x.ndim == 2 else ())  # noqa: E731
  masks = []
  for granularity in (optax_sbs.columns(CONV), optax_sbs.columns(per_leaf), by_callable):
    tx = optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity=granularity)
    updates, _ = tx.update(grads, tx.init(params), params)
    conv = np.asarray(updates['conv']) != 0
    assert (conv == conv[:1, :1, :1, :]).all()  # constant over the reduction axes
    masks.append(jax.tree.map(lambda u: np.asarray(u) != 0, updates))
  for other in masks[1:]:  # the same kept axes give the same masks
    for a, b in zip(jax.tree.leaves(masks[0]), jax.tree.leaves(other)):
      np.testing.assert_array_equal(a, b)
  rows = optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity=optax_sbs.rows(CONV))
  updates, _ = rows.update(grads, rows.init(params), params)
  conv = np.asarray(updates['conv']) != 0
  assert (conv == conv[..., :1]).all()  # constant over the output axis


def test_leaf_and_element_are_the_kept_axes_they_name():
  """A callable keeping no axis is 'leaf', one keeping every axis is
  'element': the same masks, bit for bit."""
  params = _params()
  grads = _grads(np.random.default_rng(3))
  for name, keep in [('leaf', lambda p, x: ()), ('element', lambda p, x: tuple(range(x.ndim)))]:
    got, want = [
      optax_sbs.masked_updates(optax.sgd(1.0), 4, granularity=g, layer_axes=LAYERS)
      for g in (keep, name)
    ]
    a, _ = got.update(grads, got.init(params), params)
    b, _ = want.update(grads, want.init(params), params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
  'granularity,error,match',
  [
    ('columns', ValueError, "granularity must be one of 'element'.*got 'columns'"),
    (3, TypeError, 'granularity must be one of'),
    (
      lambda p, x: [0],
      TypeError,
      r"granularity must give a tuple of ints for every leaf; for the leaf at \['w'\]",
    ),
    (lambda p, x: (2,), ValueError, r"axis 2 for the leaf at \['w'\], which has shape \(4, 3\)"),
    (lambda p, x: (0, -2), ValueError, 'repeated axis'),
    (optax_sbs.columns(lambda p, x: (1,)), TypeError, 'MuonDimensionNumbers or None'),
  ],
)
def test_bad_granularities_name_the_problem(granularity, error, match):
  params = {'w': jnp.zeros((4, 3))}
  with pytest.raises(error, match=match):
    for make in (
      lambda: optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity=granularity),
      lambda: optax_sbs.sbs(1.0, key=0, granularity=granularity),
      lambda: optax_sbs.magma(optax.sgd(1.0), 0, granularity=granularity),
    ):
      tx = make()
      tx.update(params, tx.init(params), params)
  with pytest.raises(TypeError, match='dimension_numbers must be'):
    optax_sbs.columns((0, 1))
