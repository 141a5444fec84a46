"""The paper's sigmoid learning-rate annealing (§5.1)."""

import math

import jax.numpy as jnp
import optax

from optax_sbs import _validation


def sigmoid_schedule(
  init_value: float,
  end_value: float,
  total_steps: int,
  steepness: float = 10.0,
  midpoint: float = 0.5,
) -> optax.Schedule:
  """Sigmoid annealing from ``init_value`` to ``end_value``.

  The value follows a logistic curve in the step count, centred at
  ``midpoint * total_steps`` with slope ``steepness / total_steps``, rescaled
  so that it is exactly ``init_value`` at step 0 and ``end_value`` at
  ``total_steps`` (and stays there afterwards)::

    s(t) = 1 / (1 + exp(steepness * (t / total_steps - midpoint)))
    value(t) = end + (init - end) * (s(t) - s(T)) / (s(0) - s(T))

  The paper anneals 0.1 -> 0.001 this way for every optimiser; Optax has no
  sigmoid schedule.

  Args:
    init_value: value at step 0.
    end_value: value at ``total_steps`` and after.
    total_steps: number of steps of the annealing, > 0.
    steepness: slope of the logistic curve over the whole run, > 0; larger
      values keep the initial value longer and drop faster around the
      midpoint.
    midpoint: fraction of ``total_steps`` where the drop is fastest, in
      (0, 1).

  Returns:
    A schedule: a function from the step count to the value.

  Examples:
    >>> import optax_sbs
    >>> schedule = optax_sbs.sigmoid_schedule(0.1, 0.001, total_steps=100)
    >>> [round(float(schedule(t)), 4) for t in (0, 25, 50, 75, 100, 200)]
    [0.1, 0.0931, 0.0505, 0.0079, 0.001, 0.001]

  References:
    Stochastic batch size for adaptive regularization in deep network
    optimization, §5.1 (sigmoid learning-rate annealing).
  """
  _validation.check_real('init_value', init_value)
  _validation.check_real('end_value', end_value)
  if isinstance(total_steps, bool) or not isinstance(total_steps, int):
    raise TypeError(f'total_steps must be an int, got {total_steps!r}.')
  if total_steps <= 0:
    raise ValueError(f'total_steps must be positive, got {total_steps}.')
  _validation.check_real('steepness', steepness)
  if steepness <= 0:
    raise ValueError(f'steepness must be positive, got {steepness}.')
  _validation.check_real('midpoint', midpoint)
  if not 0.0 < midpoint < 1.0:
    raise ValueError(f'midpoint must lie in (0, 1), got {midpoint}.')

  def logistic(fraction):
    return 1.0 / (1.0 + jnp.exp(steepness * (fraction - midpoint)))

  s_start = 1.0 / (1.0 + math.exp(steepness * (0.0 - midpoint)))
  s_end = 1.0 / (1.0 + math.exp(steepness * (1.0 - midpoint)))

  def schedule(count):
    fraction = jnp.clip(count / total_steps, 0.0, 1.0)
    weight = (logistic(fraction) - s_end) / (s_start - s_end)
    return end_value + (init_value - end_value) * weight

  return schedule
