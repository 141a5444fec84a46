"""benchmarks/state_memory.py: state bytes read off jax.eval_shape."""

import jax
import jax.numpy as jnp
import optax

import optax_sbs

import state_memory


def test_state_bytes_follow_the_dtypes():
  params = {'w': jax.ShapeDtypeStruct((1000, 10), jnp.float32)}
  n = 10_000
  key_bytes = 8
  # The recorded layout names stacked parameters only: none here.
  assert state_memory.state_bytes(optax.adamw(1e-3), params) == 8 * n + 4  # mu, nu, count
  cheap = optax_sbs.stochastic_batch_size(0, count_dtype='uint8', cma_dtype='bfloat16')
  assert state_memory.state_bytes(cheap, params) == 3 * n + key_bytes
  default = optax_sbs.stochastic_batch_size(0)
  assert state_memory.state_bytes(default, params) == 8 * n + key_bytes


def test_precision_run_sees_a_bfloat16_cma_stall():
  f32 = state_memory.precision_run('float32', 'int32', elements=256)
  bf16 = state_memory.precision_run('bfloat16', 'int32', elements=256)
  assert all(r['moved'] > 0.99 for r in f32)
  assert bf16[-1]['moved'] < 0.05 < bf16[0]['moved']
  assert bf16[-1]['rms_error_in_se'] > 1.0 > f32[-1]['rms_error_in_se']
