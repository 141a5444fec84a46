"""methods.py: the registry's txs."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from configs.default import Config
import methods

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_adamw_accumulate_is_adamw_on_the_mean_of_k_gradients():
  """The control: k steps of adamw_accumulate == one AdamW step on the mean
  gradient, with the rate AdamW has at that outer step."""
  import optax  # noqa: PLC0415

  config = Config(accumulate_steps=3, weight_decay=0.1)
  schedule = lambda step: 0.01 * (1.0 + step)  # noqa: E731  (the outer step's rate)
  acc = methods.METHODS['adamw_accumulate'].tx(config, schedule)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  grads = [jax.tree.map(lambda x, i=i: (i + 1.0) * jnp.ones_like(x) - x, params) for i in range(6)]
  state, p = acc.init(params), params
  for g in grads:
    u, state = acc.update(g, state, p)
    p = optax.apply_updates(p, u)
  adamw = methods.METHODS['adamw'].tx(config, lambda c: schedule(3 * c))
  q, s = params, adamw.init(params)
  for i in (0, 3):
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads[i : i + 3])
    u, s = adamw.update(mean, s, q)
    q = optax.apply_updates(q, u)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
