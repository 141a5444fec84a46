"""Bernoulli update masks ``chi ~ p`` drawn from the optimizer's key.

Every step the state key is split into the key carried to the next step and
a step key. From the step key, one call of JAX's counter-based threefry
generator draws a uniform number per parameter element, for all leaves at
once (in the order of ``jax.tree.leaves``; one call compiles far faster on
XLA:CPU than one call per leaf), and ``chi = u < p``. The masks are a pure
function of the key and the leaf shapes: replicas that share the key draw the
same masks, and with ``jax_threefry_partitionable`` (JAX's default) they do
not depend on how the arrays are sharded.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp


def split_step_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns ``(next_state_key, step_key)``."""
  next_key, step_key = jax.random.split(key)
  return next_key, step_key


def bernoulli_masks(
    step_key: jax.Array,
    probabilities: Sequence[jax.typing.ArrayLike],
    shapes: Sequence[tuple[int, ...]],
) -> list[jax.Array]:
  """Boolean masks with ``P(chi = True) = p`` per element, one per leaf.

  Args:
    step_key: the key of this step.
    probabilities: per leaf, ``p`` broadcastable to the leaf's shape.
    shapes: per leaf, its shape.

  Returns:
    Per leaf, a boolean mask of its shape. ``p = 1`` gives all True and
    ``p = 0`` all False, exactly (uniforms lie in ``[0, 1)``).
  """
  sizes = [math.prod(shape) for shape in shapes]
  total = sum(sizes)
  if total == 0:
    return [jnp.zeros(shape, bool) for shape in shapes]
  uniform = jax.random.uniform(step_key, (total,), jnp.float32)
  masks, offset = [], 0
  for p, shape, size in zip(probabilities, shapes, sizes):
    u = uniform[offset:offset + size].reshape(shape)
    offset += size
    masks.append(u < p)
  return masks
