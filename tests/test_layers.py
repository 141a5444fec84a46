"""Stacked layers (``layer_axes``): per-slice statistics, masks and scores
against the NumPy reference, a stacked tree against the same tree unrolled,
the helpers, the diagnostics and the errors."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs

import reference

L = 4  # stacked layers
# A scanned transformer's tree: leaves under 'layers' stacked on axis 0.
STACKED = {
  'embed': {'embedding': (16, 8)},
  'layers': {
    'attn': {'kernel': (L, 8, 24), 'bias': (L, 24)},
    'mlp': {'kernel': (L, 8, 32), 'bias': (L, 32)},
    'norm': {'scale': (L, 8)},
  },
  'head': {'kernel': (8, 16)},
}
LAYER_SCALES = np.array([1e-3, 1e-1, 1.0, 3e-2])  # very different per layer
LAYERS = optax_sbs.layers_under('layers')


def _is_shape(x):
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def _grads(rng, shapes=STACKED, scales=LAYER_SCALES, axis=0):
  """Gradients whose scale differs from layer to layer (along ``axis``)."""

  def make(path, shape):
    g = rng.standard_normal(shape)
    if 'layers' in jax.tree_util.keystr(path):
      g *= np.expand_dims(scales, [d for d in range(len(shape)) if d != axis])
    return jnp.asarray(g, jnp.float32)

  return jax.tree_util.tree_map_with_path(make, shapes, is_leaf=_is_shape)


def _params(shapes=STACKED):
  return jax.tree.map(lambda s: jnp.zeros(s), shapes, is_leaf=_is_shape)


def _axes(tree, layer_axes=LAYERS):
  return [layer_axes(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _groups(tree, axes):
  """parameter_type of one slice of each leaf (what the library passes)."""
  out = []
  for (path, x), ax in zip(jax.tree_util.tree_flatten_with_path(tree)[0], axes):
    one = jax.ShapeDtypeStruct(tuple(d for i, d in enumerate(x.shape) if i not in ax), x.dtype)
    out.append(optax_sbs.parameter_type(path, one))
  return out


@pytest.mark.parametrize('normalization', ['std', 'mean'])
@pytest.mark.parametrize('alpha,lam', [(0.1, -4.0), (1.0, 0.0), (0.0, -2.0)])
def test_update_probability_per_slice_matches_reference(alpha, lam, normalization):
  grads = _grads(np.random.default_rng(0))
  mags = [jnp.abs(g) for g in jax.tree.leaves(grads)]
  axes = _axes(grads)
  groups = _groups(grads, axes)
  got = jax.jit(
    lambda m: optax_sbs.update_probability(m, groups, alpha, lam, normalization, layer_axes=axes)
  )(mags)
  want = reference.stacked_probabilities(
    [np.asarray(m, np.float64) for m in mags], groups, axes, alpha, lam, normalization
  )
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-5, atol=1e-6)
  # layer_axes as the transformations take it: a callable (path: the position).
  by_position = lambda path, leaf: axes[path[0].idx]
  same = optax_sbs.update_probability(mags, groups, alpha, lam, normalization, by_position)
  for a, b in zip(same, got):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_group_fn_is_called_on_one_slice():
  """A stacked Dense kernel is 'dense' and a stacked bias 'bias' (on the stacked
  shape they would be 'conv' and 'dense')."""
  seen = {}

  def group_fn(path, leaf):
    seen[jax.tree_util.keystr(path)] = leaf.shape
    return optax_sbs.parameter_type(path, leaf)

  tx = optax_sbs.stochastic_batch_size(0, group_fn=group_fn, layer_axes=LAYERS)
  params = _params()
  jax.eval_shape(tx.update, params, tx.init(params), params)  # group_fn runs when traced
  assert seen["['layers']['mlp']['kernel']"] == (8, 32)
  assert seen["['layers']['mlp']['bias']"] == (32,)
  assert seen["['head']['kernel']"] == (8, 16)
  one = jax.ShapeDtypeStruct((64, 256), jnp.float32)
  assert optax_sbs.parameter_type(('layers', 'mlp', 'kernel'), one) == 'dense'


def _unrolled(tree):
  """The stacked tree with each layer its own subtree, as an unrolled model."""
  out = {k: v for k, v in tree.items() if k != 'layers'}
  for i in range(L):
    out[f'layers_{i}'] = jax.tree.map(lambda x: x[i], tree['layers'])
  return out


def _probability(magnitudes, groups, alpha, lam, layer_axes=None):
  """optax_sbs.update_probability, jitted (eager dispatch of its ops is slow)."""
  return jax.jit(
    lambda m: optax_sbs.update_probability(m, groups, alpha, lam, layer_axes=layer_axes)
  )(magnitudes)


def test_stacked_equals_unrolled_probabilities():
  """The same model, scanned with layer_axes or unrolled without: the same p."""
  grads = _grads(np.random.default_rng(1))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  axes = _axes(grads)
  stacked_p = _probability(
    [jnp.abs(g) for _, g in flat], _groups(grads, axes), 0.1, -4.0, layer_axes=axes
  )
  stacked_p = jax.tree.unflatten(jax.tree.structure(grads), stacked_p)
  unrolled = _unrolled(grads)
  leaves = jax.tree_util.tree_flatten_with_path(unrolled)[0]
  groups = [optax_sbs.parameter_type(p, x) for p, x in leaves]
  unrolled_p = _probability([jnp.abs(x) for _, x in leaves], groups, 0.1, -4.0)
  unrolled_p = jax.tree.unflatten(jax.tree.structure(unrolled), unrolled_p)
  for a, b in zip(jax.tree.leaves(_unrolled(stacked_p)), jax.tree.leaves(unrolled_p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # Without layer_axes the stacked leaf is one layer: its rates differ.
  plain = _probability([jnp.abs(g) for _, g in flat], _groups(grads, [()] * len(flat)), 0.1, -4.0)
  plain = jax.tree.unflatten(jax.tree.structure(grads), plain)
  kernel = stacked_p['layers']['attn']['kernel']
  assert not np.allclose(np.asarray(plain['layers']['attn']['kernel']), np.asarray(kernel))


@pytest.mark.parametrize('axis', [0, 1])
def test_sbs_steps_and_mask_rates_per_slice(axis):
  """Exact CMA / update / count given the masks (read back from the counts),
  and per slice the mask rate within 5 standard errors of the reference p."""
  shapes = {'layers': {'kernel': (L, 48, 64), 'bias': (L, 64)}, 'head': {'kernel': (64, 8)}}
  if axis == 1:  # MaxText's param_scan_axis = 1
    shapes['layers'] = {'kernel': (48, L, 64), 'bias': (64, L)}
  layer_axes = optax_sbs.layers_under('layers', axis=axis)
  tx = optax_sbs.stochastic_batch_size(3, layer_axes=layer_axes)
  params = _params(shapes)
  state = tx.init(params)
  step = jax.jit(tx.update)
  rng = np.random.default_rng(2)
  cmas = [np.zeros(x.shape) for x in jax.tree.leaves(params)]
  counts = [np.ones(x.shape) for x in jax.tree.leaves(params)]
  axes = _axes(params, layer_axes)
  groups = _groups(params, axes)
  z_max = 0.0
  for _ in range(6):
    grads = _grads(rng, shapes, np.array([1e-3, 1.0, 1e-2, 1e-1]), axis)
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
    g_tilde = [c + (x - c) / k for x, c, k in zip(g, cmas, counts)]
    p = reference.stacked_probabilities([np.abs(x) for x in g_tilde], groups, axes, 0.1, -4.0)
    updates, state = step(grads, state, params)
    chis = [np.asarray(k) == 1 for k in jax.tree.leaves(state.count)]
    want_u, cmas, counts = reference.sbs_step(g, cmas, counts, chis)
    for got, want in zip(jax.tree.leaves(updates), want_u):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(state.cma), cmas):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(state.count), counts):
      np.testing.assert_array_equal(np.asarray(got), want)
    for chi, prob, ax in zip(chis, p, axes):
      for c, q in zip(reference.unstack(chi, ax), reference.unstack(prob, ax)):
        se = math.sqrt(np.sum(q * (1 - q))) + 1e-12
        z_max = max(z_max, abs(c.sum() - q.sum()) / max(se, 1.0))
  assert z_max < 5, z_max


def test_update_fraction_mean_count_and_layer_statistics_per_slice():
  tx = optax_sbs.sbs(0.1, key=0, probability=0.5, layer_axes=LAYERS)
  params = _params()
  state = tx.init(params)
  for _ in range(3):
    _, state = jax.jit(tx.update)(_grads(np.random.default_rng(3)), state, params)
  count = np.asarray(state.sbs_state.count['layers']['mlp']['kernel'])
  fractions = state.update_fraction(LAYERS)
  assert fractions['layers']['mlp']['kernel'].shape == (L,)
  assert fractions['head']['kernel'].shape == ()
  np.testing.assert_allclose(
    np.asarray(fractions['layers']['mlp']['kernel']), (count == 1).mean(axis=(1, 2)), rtol=1e-6
  )
  np.testing.assert_allclose(
    np.asarray(state.mean_count(LAYERS)['layers']['mlp']['kernel']),
    count.mean(axis=(1, 2)),
    rtol=1e-6,
  )
  stats = optax_sbs.layer_statistics(state, layer_axes=LAYERS)
  for i in range(L):
    assert float(stats[f'sbs/update_fraction/layers/mlp/kernel/{i}']) == pytest.approx(
      (count[i] == 1).mean()
    )
    assert float(stats[f'sbs/mean_count/layers/mlp/kernel/{i}']) == pytest.approx(count[i].mean())
  assert 'sbs/mean_count/head/kernel' in stats
  assert 'sbs/mean_count/layers/mlp/kernel' not in stats


def test_states_record_their_layout_and_statistics_need_no_layer_axes():
  """Every family state records each stacked leaf's statistics grid (uint8
  zeros, made in init), and only those; the statistics read the layer axes
  from it, and a layer_axes that disagrees is an error naming the leaf."""
  params = _params()
  grads = _grads(np.random.default_rng(5))
  txs = {
    'sbs': optax_sbs.sbs(0.1, key=0, probability=0.5, layer_axes=LAYERS),
    'magma': optax_sbs.magma(optax.sgd(0.1), 1, layer_axes=LAYERS),
    'masked_updates': optax_sbs.masked_updates(optax.sgd(0.1), 2, layer_axes=LAYERS),
  }
  for kind, tx in txs.items():
    state = tx.init(params)
    _, state = jax.jit(tx.update)(grads, state, params)
    found = optax_sbs.find_state(state, kind=kind)
    layout = found.layout
    assert layout['layers/mlp/kernel'].shape == (L, 1, 1)
    assert layout['layers/norm/scale'].shape == (L, 1)
    assert layout['layers/mlp/kernel'].dtype == jnp.uint8
    assert not np.asarray(layout['layers/mlp/kernel']).any()
    stacked = {
      '/'.join(str(k.key) for k in path)
      for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
      if LAYERS(path, x)
    }
    if kind == 'masked_updates':  # names every parameter: it names the kept fractions
      assert layout['head/kernel'].shape == (1, 1)
    else:
      assert set(layout) == stacked and 'head/kernel' not in layout
  sbs_state = optax_sbs.find_state(
    jax.jit(txs['sbs'].update)(grads, txs['sbs'].init(params), params)[1]
  )
  plain, told = sbs_state.update_fraction(), sbs_state.update_fraction(LAYERS)
  assert plain['layers']['mlp']['kernel'].shape == (L,)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(told)):
    np.testing.assert_array_equal(a, b)
  wrong = optax_sbs.layers_under('mlp')  # names another set of leaves
  with pytest.raises(ValueError, match="'layers/attn/bias'.*built with \\(0,\\)"):
    sbs_state.mean_count(wrong)
  with pytest.raises(ValueError, match='layers/attn/bias'):
    optax_sbs.layer_statistics(sbs_state, layer_axes=wrong)
  magma_state = optax_sbs.find_state(
    jax.jit(txs['magma'].update)(grads, txs['magma'].init(params), params)[1], kind='magma'
  )
  assert magma_state.score_tree()['layers']['mlp']['kernel'].shape == (L, 1, 1)
  stats = optax_sbs.layer_statistics(magma_state)
  assert {f'magma/score/layers/mlp/kernel/{i}' for i in range(L)} <= set(stats)
  np.testing.assert_allclose(
    [float(stats[f'magma/score/layers/mlp/kernel/{i}']) for i in range(L)],
    np.asarray(magma_state.score_tree()['layers']['mlp']['kernel']).reshape(-1),
  )


@pytest.mark.parametrize('granularity', ['element', 'leaf'])
@pytest.mark.parametrize('kind', ['masked_updates', 'magma'])
def test_kept_fractions_are_the_fraction_of_updates_kept_per_slice(kind, granularity):
  """The state's kept fractions, and layer_statistics' kept_fraction, are
  the fraction of each slice's elements whose update the step kept."""
  params = _params()
  tx = getattr(optax_sbs, kind)(
    optax.sgd(1.0), 3, probability=0.5, granularity=granularity, layer_axes=LAYERS
  )
  state = tx.init(params)
  first = optax_sbs.find_state(state, kind=kind)
  slices = sum(
    math.prod(u.shape[a] for a in LAYERS(path, u))
    for path, u in jax.tree_util.tree_flatten_with_path(params)[0]
  )
  assert first.kept.shape == (slices,)
  assert not np.asarray(first.kept).any()
  step = jax.jit(tx.update)
  rng = np.random.default_rng(6)
  for _ in range(3):
    grads = jax.tree.map(lambda g: g + 1.0, _grads(rng))  # no zero gradient
    updates, state = step(grads, state, params)
  found = optax_sbs.find_state(state, kind=kind)
  stats = optax_sbs.layer_statistics(state)
  seen, start, wants = set(), 0, {}
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = '/'.join(str(k.key) for k in path)
    axes = LAYERS(path, u)
    parts = reference.unstack(np.asarray(u), axes)
    want = np.array([(part != 0).mean() for part in parts])
    wants[name] = want
    start += len(parts)
    keys = (
      [f'{kind}/kept_fraction/{name}/{i}' for i in range(len(parts))]
      if axes
      else [f'{kind}/kept_fraction/{name}']
    )
    np.testing.assert_allclose([float(stats[k]) for k in keys], want, rtol=1e-6)
    seen.update(keys)
    if granularity == 'element':
      assert 0 < want.mean() < 1
  assert {k for k in stats if '/kept_fraction/' in k} == seen
  assert start == slices
  # The vector: Magma's in leaves order, masked_updates' in its layout's (sorted names).
  names = list(wants) if kind == 'magma' else sorted(wants)
  np.testing.assert_allclose(found.kept, np.concatenate([wants[n] for n in names]), rtol=1e-6)


@pytest.mark.parametrize('kind', ['masked_updates', 'magma'])
def test_kept_fractions_keep_their_names_through_a_jitted_step(kind):
  """A list of twelve layers: its path names sort as strings ('l/10' before
  'l/2') but flatten in list order; each kept fraction still names its own
  parameter."""
  params = {'l': [jnp.ones(3) for _ in range(12)]}
  tx = getattr(optax_sbs, kind)(optax.sgd(1.0), 3, probability=0.5, granularity='leaf')
  updates, state = jax.jit(tx.update)(params, tx.init(params), params)
  stats = optax_sbs.layer_statistics(state)
  kept = [float(stats[f'{kind}/kept_fraction/l/{i}']) for i in range(12)]
  assert kept == [float(u[0] != 0) for u in updates['l']]
  assert 0 < sum(kept) < 12


def test_update_refuses_layer_axes_that_disagree_with_the_state():
  params = _params()
  state = optax_sbs.sbs(0.1, key=0, layer_axes=LAYERS).init(params)
  other = optax_sbs.sbs(0.1, key=0)  # the same, but built without layer_axes
  with pytest.raises(ValueError, match="layer_axes gives the layer axes \\(\\) for 'layers/"):
    other.update(_grads(np.random.default_rng(0)), state, params)


def test_slice_names_line_up_with_an_unrolled_model():
  tx = optax_sbs.sbs(0.1, key=0, probability=0.5, layer_axes=LAYERS)
  params = _params()
  _, state = tx.update(_grads(np.random.default_rng(1)), tx.init(params), params)
  stats = optax_sbs.layer_statistics(state, slice_name=optax_sbs.maxtext_slice_names())
  assert 'sbs/update_fraction/layers_2/mlp/kernel' in stats
  assert 'sbs/update_fraction/head/kernel' in stats
  default = optax_sbs.layer_statistics(state)
  assert float(default['sbs/update_fraction/layers/mlp/kernel/2']) == float(
    stats['sbs/update_fraction/layers_2/mlp/kernel']
  )


def _mask_blocks(updates):
  """Per stacked slice (and per ordinary leaf), whether its update was kept."""
  out = []
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    u = np.asarray(u)
    for part in reference.unstack(u, LAYERS(path, u)):
      kept = part != 0
      assert kept.all() or not kept.any(), jax.tree_util.keystr(path)
      out.append(bool(kept.all()))
  return out


@pytest.mark.parametrize('family', ['masked_updates', 'magma'])
def test_leaf_masks_are_drawn_per_slice(family):
  """granularity='leaf' draws one mask per slice: slices of one leaf differ
  from one another, and the rate is p."""
  p = 0.5
  make = getattr(optax_sbs, family)
  tx = make(optax.sgd(1.0), 5, probability=p, granularity='leaf', layer_axes=LAYERS)
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  rng = np.random.default_rng(4)
  kept, mixed = [], 0
  for _ in range(40):
    grads = jax.tree.map(lambda x: x + 1.0, _grads(rng))  # no zero gradients
    updates, state = step(grads, state, params)
    blocks = _mask_blocks(updates)
    kept += blocks
    mixed += 0 < sum(blocks[1 : 1 + L]) < L  # the slices of one stacked leaf
  n = len(kept)
  assert abs(sum(kept) - n * p) <= 5 * math.sqrt(n * p * (1 - p))
  assert mixed > 10


def test_magma_score_per_slice_matches_reference():
  """Per slice: cos(m, g) over the slice, its own score EMA."""
  tau, beta_s, beta_m = 2.0, 0.9, 0.9
  tx = optax_sbs.magma(optax.sgd(1.0), 1, probability=1.0, tau=tau, layer_axes=LAYERS)
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  n_blocks = sum(
    math.prod(x.shape[a] for a in ax) for x, ax in zip(jax.tree.leaves(params), _axes(params))
  )
  assert state.score.shape == (n_blocks,)
  rng = np.random.default_rng(5)
  m = [np.zeros(x.shape) for x in jax.tree.leaves(params)]
  s = [
    np.ones(tuple(x.shape[a] for a in ax)) for x, ax in zip(jax.tree.leaves(params), _axes(params))
  ]
  for _ in range(4):
    grads = _grads(rng)
    updates, state = step(grads, state, params)
    for i, (g, ax) in enumerate(zip(jax.tree.leaves(grads), _axes(params))):
      g = np.asarray(g, np.float64)
      m[i] = beta_m * m[i] + (1 - beta_m) * g
      cos = [
        np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))
        for a, b in zip(reference.unstack(m[i], ax), reference.unstack(g, ax))
      ]
      s[i] = beta_s * s[i] + (1 - beta_s) / (1 + np.exp(-np.reshape(cos, s[i].shape) / tau))
    tree = state.score_tree(LAYERS)
    for got, want in zip(jax.tree.leaves(tree), s):
      np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, rtol=1e-5)
    kernel = np.asarray(updates['layers']['mlp']['kernel'])
    want_kernel = -np.asarray(grads['layers']['mlp']['kernel']) * np.asarray(
      tree['layers']['mlp']['kernel']
    )
    np.testing.assert_allclose(kernel, want_kernel, rtol=1e-5, atol=1e-8)


BAD_AXES = [
  (lambda path, leaf: (3,), ValueError, 'axis 3'),
  (lambda path, leaf: (0, 0), ValueError, 'repeated axis'),
  (lambda path, leaf: [0], TypeError, 'tuple of ints'),
  (lambda path, leaf: 0, TypeError, 'tuple of ints'),
]


@pytest.mark.parametrize('bad,error,words', BAD_AXES)
@pytest.mark.parametrize(
  'make',
  [
    lambda fn: optax_sbs.sbs(0.1, key=0, layer_axes=fn),
    lambda fn: optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity='leaf', layer_axes=fn),
    lambda fn: optax_sbs.magma(optax.adam(1e-3), 0, layer_axes=fn),
  ],
)
def test_bad_layer_axes_name_the_leaf(make, bad, error, words):
  params = {'layers': {'bias': jnp.zeros((2, 3))}}

  def run():
    tx = make(lambda path, leaf: bad(path, leaf) if 'layers' in str(path) else ())
    tx.update(params, tx.init(params), params)

  with pytest.raises(error, match=words) as info:
    run()
  assert "['layers']['bias']" in str(info.value)


def test_layer_axes_must_be_callable():
  with pytest.raises(TypeError, match='layer_axes'):
    optax_sbs.sbs(0.1, key=0, layer_axes=(0,))


def test_layers_under_and_from_axis_names_on_flax_scan():
  """The helpers find the stacked axes of a Linen nn.scan model and of a model
  annotated with logical axis names."""
  import flax.linen as nn  # noqa: PLC0415

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      kernel_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('embed', 'mlp'))
      y = nn.Dense(8, kernel_init=kernel_init, name='mlp')(nn.LayerNorm(name='norm')(x))
      return x + y, None

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      scanned = nn.scan(
        Block,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        length=L,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )
      x, _ = scanned(name='layers')(x, None)
      return nn.Dense(3, name='head')(x)

  boxed = Model().init(jax.random.key(0), jnp.ones((2, 8)))['params']
  params = nn.unbox(boxed)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  by_name = {jax.tree_util.keystr(p): optax_sbs.layers_under('layers')(p, x) for p, x in flat}
  assert by_name["['layers']['mlp']['kernel']"] == (0,)
  assert by_name["['layers']['norm']['scale']"] == (0,)
  assert by_name["['head']['kernel']"] == ()
  names = optax_sbs.layers_from_axis_names(nn.get_partition_spec(boxed))
  kernel = params['layers']['mlp']['kernel']
  assert kernel.shape == (L, 8, 8)
  assert names(('layers', 'mlp', 'kernel'), kernel) == (0,)
  assert names(('head', 'kernel'), params['head']['kernel']) == ()


def _maxtext_like():
  """A MaxText-shaped tree: layers stacked on axis 1, two stacks as in its
  DeepSeek-style models, an expert kernel without a 'kernel' entry."""
  return {
    'decoder': {
      'dense_layers': {'mlp': {'wo': {'kernel': jnp.zeros((16, 2, 8))}}},
      'moe_layers': {
        'MoeBlock_0': {'wi_0': jnp.zeros((4, 3, 8, 16)), 'gate': {'kernel': jnp.zeros((8, 3, 4))}}
      },
      'decoder_norm': {'scale': jnp.zeros(8)},
    },
    'token_embedder': {'embedding': jnp.zeros((32, 8))},
  }


def test_helpers_take_several_names_and_check_the_number_of_layers():
  params = _maxtext_like()
  fn = optax_sbs.layers_under(('dense_layers', 'moe_layers'), axis=1)
  flat = dict(
    (jax.tree_util.keystr(p), fn(p, x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  )
  assert flat["['decoder']['dense_layers']['mlp']['wo']['kernel']"] == (1,)
  assert flat["['decoder']['moe_layers']['MoeBlock_0']['wi_0']"] == (1,)
  assert flat["['decoder']['decoder_norm']['scale']"] == ()
  # Axis 0 with the number of layers named: the wrong axis is an error naming the leaf.
  wrong = optax_sbs.layers_under('dense_layers', num_layers=2)
  with pytest.raises(ValueError, match=r"\['dense_layers'\].*16 along axis 0, not 2 layers"):
    optax_sbs.sbs(0.1, key=0, layer_axes=wrong).init(params)
  right = optax_sbs.layers_under('dense_layers', axis=1, num_layers=2)
  optax_sbs.sbs(0.1, key=0, layer_axes=right).init(params)
  with pytest.raises(ValueError, match='axis 5 is out of range'):
    optax_sbs.layers_under('dense_layers', axis=5)(
      (jax.tree_util.DictKey('dense_layers'),), jnp.zeros((2, 3))
    )
  # What get_partition_spec gives: logical names, two stack names.
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  specs = {
    'decoder': {
      'dense_layers': {'mlp': {'wo': {'kernel': P('mlp', 'dense_layers', 'embed')}}},
      'moe_layers': {
        'MoeBlock_0': {
          'wi_0': P('exp', 'moe_layers', 'embed', 'mlp'),
          'gate': {'kernel': P('embed', 'moe_layers', None)},
        }
      },
      'decoder_norm': {'scale': P('norm')},
    },
    'token_embedder': {'embedding': P('vocab', 'embed')},
  }
  by_names = optax_sbs.layers_from_axis_names(specs, ('dense_layers', 'moe_layers'), num_layers=3)
  with pytest.raises(ValueError, match=r"\['dense_layers'\].*2 along axis 1, not 3 layers"):
    optax_sbs.sbs(0.1, key=0, layer_axes=by_names).init(params)
  # Stacks of different lengths: a number per name.
  per_stack = {'dense_layers': 2, 'moe_layers': 3}
  optax_sbs.sbs(
    0.1,
    key=0,
    layer_axes=optax_sbs.layers_from_axis_names(specs, tuple(per_stack), num_layers=per_stack),
  ).init(params)
  swapped = optax_sbs.layers_under(
    tuple(per_stack), axis=1, num_layers={'dense_layers': 3, 'moe_layers': 3}
  )
  with pytest.raises(ValueError, match=r"\['dense_layers'\].*2 along axis 1, not 3 layers"):
    optax_sbs.sbs(0.1, key=0, layer_axes=swapped).init(params)
  with pytest.raises(ValueError, match="num_layers names 'moe', which is not one of the names"):
    optax_sbs.layers_under(tuple(per_stack), num_layers={'moe': 3})
  by_names = optax_sbs.layers_from_axis_names(specs, name=('dense_layers', 'moe_layers'))
  state = optax_sbs.sbs(0.1, key=0, layer_axes=by_names).init(params)
  layout = optax_sbs.find_state(state).layout
  assert layout['decoder/moe_layers/MoeBlock_0/wi_0'].shape == (1, 3, 1, 1)
  assert layout['decoder/dense_layers/mlp/wo/kernel'].shape == (1, 2, 1)


@pytest.mark.parametrize(
  'call,error,match',
  [
    (lambda: optax_sbs.layers_under(()), ValueError, 'layers_under: name is an empty tuple'),
    (lambda: optax_sbs.layers_under(('a', 1)), TypeError, 'layers_under: name must be a str'),
    (
      lambda: optax_sbs.layers_under('a', num_layers=0),
      ValueError,
      'num_layers must be a positive',
    ),
    (
      lambda: optax_sbs.layers_under('a', num_layers=2.0),
      TypeError,
      'num_layers must be a positive',
    ),
    (lambda: optax_sbs.layers_under('a', axis=()), TypeError, 'axis must be an int'),
    (lambda: optax_sbs.layers_from_axis_names({}, name=()), ValueError, 'name is an empty tuple'),
  ],
)
def test_helper_arguments_are_checked(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_a_helper_that_matches_no_parameter_warns_once_from_init():
  params = _maxtext_like()
  typo = optax_sbs.layers_under('layer', axis=1)
  tx = optax_sbs.with_stochastic_batch_size(optax.adam(1e-3), key=0, layer_axes=typo)
  with pytest.warns(UserWarning, match=r"layers_under\('layer', axis=1\) matches no parameter"):
    tx.init(params)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    tx.init(params)  # once
    optax_sbs.masked_updates(optax.sgd(0.1), 0, layer_axes=LAYERS).init(_params())  # matches


def test_moe_expert_kernels_group_with_the_dense_kernels():
  flat = jax.tree_util.tree_flatten_with_path(_maxtext_like())[0]
  types = {'/'.join(str(k.key) for k in p): optax_sbs.parameter_type(p, x) for p, x in flat}
  assert types['decoder/moe_layers/MoeBlock_0/wi_0'] == 'dense'
  assert types['decoder/moe_layers/MoeBlock_0/gate/kernel'] == 'dense'
  assert types['decoder/dense_layers/mlp/wo/kernel'] == 'dense'
  assert types['decoder/decoder_norm/scale'] == 'norm'
  experts = (jax.tree_util.DictKey('experts'), jax.tree_util.DictKey('w_in'))
  assert optax_sbs.parameter_type(experts, jnp.zeros((4, 8, 16))) == 'dense'


def test_layer_axes_under_inject_hyperparams_as_a_static_arg():
  """Like group_fn, layer_axes is a callable Optax would take for a schedule:
  it goes in static_args, and the result equals the plain transformation's."""
  params = _params()
  grads = _grads(np.random.default_rng(6))
  plain = optax_sbs.stochastic_batch_size(0, lam=-2.0, layer_axes=LAYERS)
  injected = optax.inject_hyperparams(
    optax_sbs.stochastic_batch_size, static_args=('group_fn', 'layer_axes')
  )(key=0, lam=-2.0, layer_axes=LAYERS)
  want, _ = jax.jit(plain.update)(grads, plain.init(params), params)
  got, state = jax.jit(injected.update)(grads, injected.init(params), params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(state.hyperparams['lam']) == -2.0
