"""masked_updates (SkipUpdate, Learning-Rate Dropout) and magma: NumPy
references, mask rates, exact limits, composition, replicas, checkpoints."""

import math

import helpers
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_sbs

SHAPES = {'conv': (3, 3, 4, 8), 'dense': (32, 16), 'bias': (16,), 'scale': (8,), 'out': (16, 4)}


def _params(dtype=jnp.float32):
  return {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}


def _grads(rng, dtype=np.float32):
  return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _run_side_by_side(tx, inner, steps, seed=0):
  """Yields (grads, tx updates, inner-alone updates, tx state, inner state)
  per step, eager, on the same gradients."""
  rng = np.random.default_rng(seed)
  params = _params()
  state, inner_state = tx.init(params), inner.init(params)
  for _ in range(steps):
    grads = _grads(rng)
    updates, state = tx.update(grads, state, params)
    inner_updates, inner_state = inner.update(grads, inner_state, params)
    yield grads, updates, inner_updates, state, inner_state


def _binomial_ok(kept, n, p):
  return abs(kept - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize('granularity', ['element', 'leaf'])
@pytest.mark.parametrize('rescale', [True, False])
def test_masked_updates_matches_reference(granularity, rescale):
  """Inner state dense (equal to the inner optimizer alone); kept updates are
  u / p (rescale) or u; the rest exactly 0; rates within a binomial bound."""
  p = 0.3
  inner = optax.adamw(1e-2, weight_decay=1e-3)
  tx = optax_sbs.masked_updates(inner, 7, probability=p, rescale=rescale, granularity=granularity)
  kept = total = 0
  for _, updates, inner_updates, state, inner_state in _run_side_by_side(tx, inner, 20):
    for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(inner_state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for u, ref in zip(_leaves(updates), _leaves(inner_updates)):
      mask = u != 0
      want = ref / p if rescale else ref
      np.testing.assert_allclose(u[mask], want[mask], rtol=1e-6)
      if granularity == 'leaf':
        assert mask.all() or not mask.any()
        kept, total = kept + int(mask.all()), total + 1
      else:
        kept, total = kept + int(mask.sum()), total + mask.size
  assert _binomial_ok(kept, total, p), (kept, total)


def test_masked_updates_stream_is_the_sbs_stream():
  """Element masks are jax.random.uniform(step key) < p over the leaves in
  order, the step key split off the state key as in SBS."""
  tx = optax_sbs.masked_updates(optax.sgd(1.0), 3, probability=0.4)
  params = _params()
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, step_key = jax.random.split(jax.random.key(3))
  leaves = jax.tree.leaves(params)
  u = np.asarray(jax.random.uniform(step_key, (sum(x.size for x in leaves),)))
  updates, _ = jax.jit(tx.update)(grads, state, params)
  got = np.concatenate([np.asarray(x).ravel() != 0 for x in jax.tree.leaves(updates)])
  np.testing.assert_array_equal(got, u < 0.4)


@pytest.mark.parametrize('jit', [False, True])
def test_masked_updates_probability_one_is_inner_bit_for_bit(jit):
  inner = optax.adam(1e-2)
  tx = optax_sbs.masked_updates(inner, 0, probability=1.0)
  rng = np.random.default_rng(1)
  params = _params()
  state, inner_state = tx.init(params), inner.init(params)
  tx_update = jax.jit(tx.update) if jit else tx.update
  inner_update = jax.jit(inner.update) if jit else inner.update
  for _ in range(5):
    grads = _grads(rng)
    u, state = tx_update(grads, state, params)
    v, inner_state = inner_update(grads, inner_state, params)
    for a, b in zip(jax.tree.leaves((u, state.inner_state)), jax.tree.leaves((v, inner_state))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = optax.apply_updates(params, u)


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_probability_zero_never_moves_but_the_inner_state_does(make):
  inner = optax.adam(1e-2)
  tx = getattr(optax_sbs, make)(inner, 0, probability=0.0)
  steps = list(_run_side_by_side(tx, inner, 5))
  for _, updates, *_ in steps:
    assert all(np.all(u == 0) for u in _leaves(updates))
  *_, state, inner_state = steps[-1]
  for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(inner_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state.inner_state[0].count) == 5


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize('granularity', ['leaf', 'element'])
def test_magma_matches_numpy_reference(granularity):
  """Momentum EMA, the alignment score's recursion, updates z * s * u with
  the inner state dense; z read back from the updates."""
  p, tau, beta_s, beta_m, s0 = 0.5, 2.0, 0.9, 0.8, 1.0
  inner = optax.adamw(1e-2, weight_decay=1e-3)
  options = dict(probability=p, tau=tau, score_decay=beta_s, momentum_decay=beta_m)
  tx = optax_sbs.magma(inner, 5, granularity=granularity, **options)
  m = [np.zeros(s) for s in jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))]
  s = [np.full(() if granularity == 'leaf' else x.shape, s0) for x in m]
  kept = total = 0
  for grads, updates, inner_updates, state, inner_state in _run_side_by_side(tx, inner, 15):
    for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(inner_state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for i, (g, u, ref) in enumerate(zip(_leaves(grads), _leaves(updates), _leaves(inner_updates))):
      m[i] = beta_m * m[i] + (1 - beta_m) * g
      if granularity == 'leaf':
        cos = np.sum(m[i] * g) / (np.linalg.norm(m[i]) * np.linalg.norm(g))
      else:
        cos = np.sign(m[i] * g)
      s[i] = beta_s * s[i] + (1 - beta_s) * _sigmoid(cos / tau)
      z = u != 0
      np.testing.assert_allclose(u[z], (s[i] * ref)[z] if s[i].ndim else s[i] * ref[z], rtol=2e-5)
      kept, total = kept + int(z.sum()), total + z.size
      if granularity == 'leaf':
        assert z.all() or not z.any()
    for got, want in zip(_leaves(state.momentum), m):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(_leaves(state.score_tree()), s):
      np.testing.assert_allclose(got, want, rtol=1e-6)
  if granularity == 'element':
    assert _binomial_ok(kept, total, p)


def test_magma_momentum_is_adams_first_moment_and_p_one_scales_every_block():
  inner = optax.adam(1e-2, b1=0.9)
  tx = optax_sbs.magma(inner, 0, probability=1.0)
  for _, updates, inner_updates, state, _ in _run_side_by_side(tx, inner, 6):
    for a, b in zip(jax.tree.leaves(state.momentum), jax.tree.leaves(state.inner_state[0].mu)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
    for u, ref, score in zip(
      _leaves(updates), _leaves(inner_updates), jax.tree.leaves(state.score_tree())
    ):
      np.testing.assert_allclose(u, float(score) * ref, rtol=1e-6)


def test_magma_leaf_masks_rate_over_many_blocks():
  params = {f'w{i}': jnp.zeros(3) for i in range(50)}
  tx = optax_sbs.magma(optax.sgd(1.0), 0, probability=0.25)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(tx.update)
  kept = 0
  for _ in range(40):
    updates, state = update(grads, state, params)
    kept += sum(int(np.all(np.asarray(u) != 0)) for u in jax.tree.leaves(updates))
  assert _binomial_ok(kept, 2000, 0.25)


@pytest.mark.parametrize(
  'call,match',
  [
    (lambda: optax_sbs.masked_updates(optax.sgd(1.0), 0, probability=1.5), r'probability'),
    (lambda: optax_sbs.masked_updates(optax.sgd(1.0), 0, granularity='rows'), 'granularity'),
    (lambda: optax_sbs.masked_updates(optax.sgd(1.0), 0, rescale='yes'), 'rescale must be'),
    (lambda: optax_sbs.masked_updates(lambda g: g, 0), 'optax.GradientTransformation'),
    (
      lambda: optax_sbs.masked_updates(optax.sgd(1.0), jax.random.split(jax.random.key(0))),
      'single PRNG key',
    ),
    (lambda: optax_sbs.magma(optax.sgd(1.0), 0, tau=0.0), 'tau must be positive'),
    (lambda: optax_sbs.magma(optax.sgd(1.0), 0, score_decay=-0.1), 'score_decay'),
    (lambda: optax_sbs.magma(optax.sgd(1.0), 0, momentum_decay=1.0), 'momentum_decay'),
    (lambda: optax_sbs.magma(optax.sgd(1.0), 0, granularity='rows'), 'granularity'),
    (lambda: optax_sbs.magma(optax.sgd(1.0), 0).init({'n': jnp.zeros(3, int)}), 'magma: params'),
  ],
)
def test_bad_arguments_fail_early_with_a_message(call, match):
  with pytest.raises((TypeError, ValueError), match=match):
    call()


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_none_and_masked_leaves_and_extra_args(make):
  """None leaves stay None; optax.masked inside; extra args reach inner."""
  params = {'w': jnp.ones(4), 'frozen': None, 'v': jnp.ones(2)}
  inner = optax.chain(
    optax.masked(optax.adam(1e-2), {'w': True, 'frozen': None, 'v': False}),
    optax.scale(1.0),
  )
  tx = getattr(optax_sbs, make)(inner, 0, probability=1.0)
  state = tx.init(params)
  grads = {'w': jnp.ones(4), 'frozen': None, 'v': jnp.ones(2)}
  updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, unused_extra=1))(grads, state, params)
  assert updates['frozen'] is None
  assert updates['w'].shape == (4,) and np.all(np.asarray(updates['v']) != 0)


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_inject_hyperparams_equals_plain(make):
  params = _params()
  rng = np.random.default_rng(0)
  grads = [_grads(rng) for _ in range(4)]
  plain = getattr(optax_sbs, make)(optax.adam(1e-2), 0, probability=0.4)
  injected = optax.inject_hyperparams(
    lambda probability: getattr(optax_sbs, make)(optax.adam(1e-2), 0, probability=probability)
  )(probability=0.4)
  s1, s2 = plain.init(params), injected.init(params)
  for g in grads:
    u1, s1 = plain.update(g, s1, params)
    u2, s2 = injected.update(g, s2, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_apply_if_finite_skips_a_nan_step_and_state_is_stable_under_cond(make):
  tx = optax.apply_if_finite(getattr(optax_sbs, make)(optax.adam(1e-2), 0), 2)
  params = _params(jnp.bfloat16)
  state = tx.init(params)
  bad = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
  updates, new_state = jax.jit(tx.update)(bad, state, params)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
  helpers.assert_trees_equal(new_state.inner_state, state.inner_state)
  good = jax.tree.map(jnp.ones_like, params)
  _, after = jax.jit(tx.update)(good, new_state, params)
  assert jax.tree.structure(after) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(state)):
    assert a.dtype == b.dtype and a.shape == b.shape


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_replicas_sharing_the_key_agree_and_sharding_does_not_change_masks(make):
  """pmap over 8 devices with one key: identical updates on every replica;
  jit with leaves sharded over 8 devices: the single-device updates."""
  n = 8
  tx = getattr(optax_sbs, make)(optax.adam(1e-2), 4, probability=0.5, granularity='element')
  params = _params()
  state = tx.init(params)
  grads = _grads(np.random.default_rng(2))
  replicated = jax.tree.map(lambda x: jnp.stack([x] * n), (grads, state, params))
  out, _ = jax.pmap(tx.update)(*replicated)
  for leaf in jax.tree.leaves(out):
    for r in range(1, n):
      np.testing.assert_array_equal(np.asarray(leaf[r]), np.asarray(leaf[0]))
  single, _ = jax.jit(tx.update)(grads, state, params)
  mesh = Mesh(np.array(jax.devices()[:n]), ('d',))

  def shard(x):
    spec = P('d') if x.ndim and x.shape[0] % n == 0 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))

  sharded_grads, sharded_params = jax.tree.map(shard, (grads, params))
  sharded_state = jax.tree.map(
    lambda x: x if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else shard(x), state
  )
  sharded, _ = jax.jit(tx.update)(sharded_grads, sharded_state, sharded_params)
  for a, b, c in zip(jax.tree.leaves(single), jax.tree.leaves(sharded), jax.tree.leaves(out)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c[0]))


@pytest.mark.parametrize('make', ['masked_updates', 'magma'])
def test_orbax_round_trip_into_an_abstract_template_resumes_bit_for_bit(tmp_path, make):
  tx = getattr(optax_sbs, make)(optax.adamw(1e-2, weight_decay=0.1), 9)
  rng = np.random.default_rng(3)
  grads = [_grads(rng) for _ in range(6)]
  update = jax.jit(tx.update)

  def train(params, state, gs):
    for g in gs:
      u, state = update(g, state, params)
      params = optax.apply_updates(params, u)
    return params, state

  params = _params()
  whole = train(params, tx.init(params), grads)
  half = train(params, tx.init(params), grads[:3])
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / 'ckpt', half)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / 'ckpt', jax.eval_shape(lambda: half))
  helpers.assert_trees_equal(train(*restored, grads[3:]), whole)
