"""Bad input fails early with an error that names the problem."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs


@pytest.mark.parametrize(
  'kwargs,error,match',
  [
    (dict(alpha=float('nan')), ValueError, 'alpha must be finite'),
    (dict(lam=float('inf')), ValueError, 'lam must be finite'),
    (dict(alpha=np.float32('nan')), ValueError, 'alpha must be finite'),
    (dict(alpha='0.1'), TypeError, 'alpha must be a real number'),
    (dict(lam=True), TypeError, 'lam must be a real number'),
    (dict(lam=[1.0]), TypeError, 'lam must be a real number'),
    (dict(alpha=jnp.ones(2)), TypeError, 'alpha must be a scalar'),
    (dict(probability=1.5), ValueError, r'probability must lie in \[0, 1\]'),
    (dict(probability=-0.1), ValueError, r'probability must lie in \[0, 1\]'),
    (dict(probability=float('nan')), ValueError, 'probability must lie'),
    (dict(magnitude='grad'), ValueError, 'magnitude must be'),
    (dict(count_dtype=jnp.float32), TypeError, 'count_dtype'),
    (dict(cma_dtype=jnp.int32), TypeError, 'cma_dtype'),
    (dict(group_fn='type'), TypeError, 'group_fn'),
    (dict(scale_by_count=1), TypeError, 'scale_by_count'),
  ],
)
def test_bad_hyperparameters(kwargs, error, match):
  with pytest.raises(error, match=match):
    optax_sbs.stochastic_batch_size(key=0, **kwargs)


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_, jnp.complex64])
def test_non_float_leaf_named_at_init(dtype):
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'step': jnp.ones(2, dtype)}}
  with pytest.raises(TypeError, match=r"\['dense'\]\['step'\].*floating"):
    optax_sbs.stochastic_batch_size(key=0).init(params)


def test_mismatched_update_tree():
  tx = optax_sbs.stochastic_batch_size(key=0)
  state = tx.init({'a': jnp.ones(2), 'b': jnp.ones(3)})
  with pytest.raises(ValueError, match='does not have the structure'):
    tx.update({'a': jnp.ones(2)}, state)
  with pytest.raises(ValueError, match=r"\['b'\] has shape \(4,\)"):
    tx.update({'a': jnp.ones(2), 'b': jnp.ones(4)}, state)
  with pytest.raises(ValueError, match='params tree'):
    tx.update({'a': jnp.ones(2), 'b': jnp.ones(3)}, state, {'a': jnp.ones(2)})
  with pytest.raises(TypeError, match=r"updates leaf at \['b'\]"):
    jax.jit(tx.update)({'a': jnp.ones(2), 'b': jnp.ones(3, jnp.int32)}, state)


def test_errors_raise_under_jit_at_trace_time():
  tx = optax_sbs.stochastic_batch_size(key=0)
  state = tx.init({'a': jnp.ones(2)})
  with pytest.raises(ValueError, match='does not have the structure'):
    jax.jit(tx.update)([jnp.ones(2)], state)


@pytest.mark.parametrize('fn', ['transform', 'wrapper', 'alias', 'probability'])
def test_bad_global_normalization_is_rejected(fn):
  with pytest.raises(ValueError, match="global_normalization must be 'std' or 'mean'"):
    if fn == 'transform':
      optax_sbs.stochastic_batch_size(0, global_normalization='median')
    elif fn == 'wrapper':
      optax_sbs.with_stochastic_batch_size(optax.sgd(0.1), 0, global_normalization='median')
    elif fn == 'alias':
      optax_sbs.sbs(0.1, key=0, global_normalization='median')
    else:
      optax_sbs.update_probability([jnp.ones(3)], [0], 0.1, -4.0, 'median')


def test_injected_hyperparameters_are_validated_when_concrete():
  tx = optax.inject_hyperparams(optax_sbs.stochastic_batch_size)(key=0, alpha=float('nan'))
  with pytest.raises(ValueError, match='alpha must be finite'):
    tx.init({'w': jnp.ones(2)})
