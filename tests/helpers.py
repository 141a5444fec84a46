"""Helpers the library's tests share: tree comparisons, compilation logs, masks."""

import contextlib
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax


def numeric_leaves(tree):
  """The leaves of ``tree`` as NumPy arrays, typed PRNG keys as their key data."""
  out = []
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    out.append(np.asarray(x))
  return out


def assert_trees_equal(a, b, same_structure=True):
  """``a`` and ``b`` have equal leaves, bit for bit (typed keys compared by
  their key data), and, with ``same_structure``, one tree structure."""
  if same_structure:
    assert jax.tree.structure(a) == jax.tree.structure(b)
  else:
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b))
  for x, y in zip(numeric_leaves(a), numeric_leaves(b)):
    np.testing.assert_array_equal(x, y)


def run_steps(tx, params, grads):
  """Params and state after one jitted update of ``tx`` per gradient in ``grads``."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


class _Records(logging.Handler):
  """Keeps the log records it is given."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.records = []

  def emit(self, record):
    self.records.append(record)


@contextlib.contextmanager
def log_compilations():
  """Yields a list that, once the block ends, holds the messages of the JAX
  compilations that ran inside it (``jax.log_compiles`` and the 'jax' logger)."""
  handler = _Records()
  logger = logging.getLogger('jax')
  logger.addHandler(handler)
  compilations = []
  try:
    with jax.log_compiles():
      yield compilations
  finally:
    logger.removeHandler(handler)
  compilations.extend(
    r.getMessage() for r in handler.records if re.search(r'Finished .* compilation', r.getMessage())
  )


def reference_masks(key, probs, shapes):
  """The masks of ``jax.random.uniform(key)`` over all elements, cut leaf by
  leaf in order and compared with each leaf's ``p``."""
  total = sum(int(np.prod(s)) for s in shapes)
  u = np.asarray(jax.random.uniform(key, (total,)))
  out, offset = [], 0
  for p, shape in zip(probs, shapes):
    n = int(np.prod(shape))
    out.append(u[offset : offset + n].reshape(shape) < np.asarray(p))
    offset += n
  return out
