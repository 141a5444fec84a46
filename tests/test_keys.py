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
