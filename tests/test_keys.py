"""optax_sbs._keys: the forms a key may take, the keys refused, and the key
data trees that checkpoint a state."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs


@pytest.mark.parametrize('key', [0, np.int32(3), jax.random.key(0), jax.random.PRNGKey(0)])
def test_key_forms_are_canonicalised(key):
  state = optax_sbs.stochastic_batch_size(key).init({'w': jnp.ones(3)})
  assert jnp.issubdtype(state.key.dtype, jax.dtypes.prng_key)
  assert state.key.shape == ()


@pytest.mark.parametrize('key', ['0', 1.5, jnp.zeros(3, jnp.uint32), jnp.float32(0.0)])
def test_bad_key(key):
  with pytest.raises(TypeError, match='key must be'):
    optax_sbs.stochastic_batch_size(key)  # refused when built


@pytest.mark.parametrize(
  'keys',
  [
    jax.random.split(jax.random.key(0), 2),
    jax.random.split(jax.random.PRNGKey(0), 2),
  ],
)
def test_a_batch_of_keys_is_refused_when_built(keys):
  for build in (
    lambda: optax_sbs.stochastic_batch_size(keys),
    lambda: optax_sbs.sbs(0.1, key=keys),
    lambda: optax_sbs.with_stochastic_batch_size(optax.adam(1e-3), keys),
  ):
    with pytest.raises(ValueError, match='batch of'):
      build()
  optax_sbs.stochastic_batch_size(keys[0])  # one of them is fine


def test_key_data_tree_keeps_other_leaves_and_key_impls():
  tree = {'k': jax.random.key(1), 'rbg': jax.random.key(2, impl='rbg'), 'x': jnp.ones(2), 'n': None}
  raw = optax_sbs.key_data_tree(tree)
  assert raw['k'].dtype == jnp.uint32 and raw['rbg'].shape == (4,)
  back = optax_sbs.wrap_key_data_tree(raw, like=tree)
  assert jax.random.key_impl(back['rbg']) == jax.random.key_impl(tree['rbg'])
  helpers.assert_trees_equal(back, tree)
  abstract_like = optax_sbs.wrap_key_data_tree(raw, like=jax.eval_shape(lambda: tree))
  assert jax.random.key_impl(abstract_like['rbg']) == jax.random.key_impl(tree['rbg'])
  helpers.assert_trees_equal(abstract_like, tree)
  with pytest.raises(ValueError, match='structure'):
    optax_sbs.wrap_key_data_tree({'k': raw['k']}, like=tree)


@pytest.fixture
def unsafe_rbg_default():
  """JAX's global PRNG implementation set as MaxText sets it."""
  before = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', 'unsafe_rbg')
  yield
  jax.config.update('jax_default_prng_impl', before)


def _masks(key):
  tx = optax_sbs.stochastic_batch_size(key, probability=0.5)
  params = {'w': jnp.ones((4, 8))}
  _, state = tx.update(params, tx.init(params), params)
  return np.asarray(state.count['w'] == 1), state.key


def test_seeds_and_raw_keys_are_threefry_whatever_the_global_setting(unsafe_rbg_default):
  jax.config.update('jax_default_prng_impl', 'threefry2x32')
  want_seed, _ = _masks(5)
  want_raw, _ = _masks(jax.random.PRNGKey(7))
  jax.config.update('jax_default_prng_impl', 'unsafe_rbg')
  assert jax.random.PRNGKey(0).shape == (4,)  # the global setting is in force
  got_seed, key = _masks(5)
  assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl='threefry2x32'))
  np.testing.assert_array_equal(got_seed, want_seed)
  raw = jax.random.key_data(jax.random.key(7, impl='threefry2x32'))
  np.testing.assert_array_equal(_masks(raw)[0], want_raw)
  typed = jax.random.key(5, impl='rbg')  # a typed key keeps its implementation
  assert jax.random.key_impl(_masks(typed)[1]) == jax.random.key_impl(typed)
  with pytest.raises(TypeError, match=r'shape \(4,\) is the data of a key.*wrap_key_data'):
    optax_sbs.with_stochastic_batch_size(optax.adam(1e-3), jax.random.PRNGKey(0))
