"""optax_sbs.sbs: the chain without momentum, the wrapper with it."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

STEPS = 10
PARAMS = {
  'conv': {'kernel': jnp.full((3, 3, 2, 4), 0.5, jnp.float32), 'bias': jnp.zeros(4)},
  'dense': {'kernel': jnp.full((8, 3), -0.5, jnp.float32), 'bias': jnp.zeros(3)},
}
_RNG = np.random.default_rng(0)
GRADS = [
  jax.tree.map(lambda p: jnp.asarray(_RNG.standard_normal(p.shape) * (1 + p.ndim), p.dtype), PARAMS)
  for _ in range(STEPS)
]
LEARNING_RATE = optax_sbs.sigmoid_schedule(0.1, 0.001, STEPS)


def trajectory_end(tx):
  """Params and state after ``STEPS`` jitted updates of ``tx``."""
  return helpers.run_steps(tx, PARAMS, GRADS)


def test_sbs_without_momentum_equals_the_explicit_chain():
  a = trajectory_end(optax_sbs.sbs(LEARNING_RATE, key=4))
  b = trajectory_end(optax.chain(optax_sbs.stochastic_batch_size(key=4), optax.sgd(LEARNING_RATE)))
  # The alias's state nests the chain's leaves in its own containers.
  helpers.assert_trees_equal(a, b, same_structure=False)


def test_sbs_with_momentum_is_the_wrapper_not_the_chain():
  sgd = lambda: optax.sgd(LEARNING_RATE, momentum=0.9, nesterov=True)
  a = trajectory_end(optax_sbs.sbs(LEARNING_RATE, key=4, momentum=0.9, nesterov=True))
  b = trajectory_end(optax_sbs.with_stochastic_batch_size(sgd(), key=4, lam=-4.0))
  helpers.assert_trees_equal(a, b)
  chain_params, _ = trajectory_end(
    optax.chain(optax_sbs.stochastic_batch_size(key=4), optax.sgd(LEARNING_RATE, momentum=0.9))
  )
  assert not all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(chain_params))
  )
