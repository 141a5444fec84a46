"""Accelerated SGD (Kidambi et al. 2018, Algorithm 1): a baseline of the paper."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_sbs import _validation


class AcceleratedSGDState(NamedTuple):
  """State of :func:`accelerated_sgd`.

  Attributes:
    count: number of steps taken (int32), for the learning-rate schedule.
    long_iterate: the running "long step" iterate ``w̄`` (like the params).
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
  long_iterate: optax.Params


def accelerated_sgd(
  learning_rate: optax.ScalarOrSchedule,
  kappa: float = 1000.0,
  xi: float = 10.0,
  small_constant: float = 0.7,
) -> optax.GradientTransformationExtraArgs:
  r"""Accelerated SGD (ASGD) of Kidambi et al. (2018), Algorithm 1.

  Keeps a long-step iterate ``w̄`` besides the params ``w``. With short step
  ``delta`` (the learning rate), ``c = small_constant`` and
  ``a = 1 - c**2 xi / kappa``, each step with stochastic gradient ``g`` at
  ``w`` does::

    w̄ <- a w̄ + (1 - a) (w - (kappa delta / c) g)       # long step
    w <- c / (c + 1 - a) (w - delta g)                  # short step ...
         + (1 - a) / (c + 1 - a) w̄                      # ... averaged

  and returns ``w_new - w`` as the update. ``w̄`` starts at the initial
  params. The paper's defaults are ``kappa = 1000``, ``xi = 10``,
  ``c = 0.7``.

  Args:
    learning_rate: the short step ``delta``, a scalar or a schedule.
    kappa: long step parameter (condition-number estimate), ``>= 1``.
    xi: statistical advantage parameter, ``0 < xi <= sqrt(kappa)``.
    small_constant: the constant ``c`` (0.7 in the paper), in ``(0, 1]``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`. ``update`` needs
    ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax, optax_sbs
    >>> tx = optax_sbs.baselines.accelerated_sgd(0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)  # f = |w|^2
    >>> [round(float(w), 4) for w in optax.apply_updates(params, updates)]
    [0.7917, -1.5833]

  References:
    Kidambi et al, `On the insufficiency of existing momentum schemes for
    stochastic optimization <https://arxiv.org/abs/1803.05591>`_, 2018.
  """
  for name, value in (('kappa', kappa), ('xi', xi), ('small_constant', small_constant)):
    _validation.check_real(name, value)
  if not isinstance(kappa, jax.core.Tracer) and kappa < 1:
    raise ValueError(f'kappa must be >= 1, got {kappa}.')
  if not isinstance(xi, jax.core.Tracer) and not 0 < xi <= kappa**0.5:
    raise ValueError(f'xi must lie in (0, sqrt(kappa)], got {xi}.')
  if not isinstance(small_constant, jax.core.Tracer) and not 0 < small_constant <= 1:
    raise ValueError(f'small_constant must lie in (0, 1], got {small_constant}.')

  def init_fn(params):
    return AcceleratedSGDState(
      count=jnp.zeros([], jnp.int32),
      long_iterate=jax.tree.map(jnp.array, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(_validation.NO_PARAMS_MESSAGE.format(name='accelerated_sgd'))
    delta = learning_rate(state.count) if callable(learning_rate) else learning_rate
    c = small_constant
    a = 1.0 - c**2 * xi / kappa
    long_step = kappa * delta / c
    mix = c / (c + 1.0 - a)

    def long(bar, w, g):
      new = a * bar + (1.0 - a) * (w - long_step * g)
      return new.astype(bar.dtype)

    long_iterate = jax.tree.map(long, state.long_iterate, params, updates)

    def step(w, g, bar):
      new_w = mix * (w - delta * g) + (1.0 - mix) * bar
      return (new_w - w).astype(g.dtype)

    new_updates = jax.tree.map(step, params, updates, long_iterate)
    return new_updates, AcceleratedSGDState(
      count=optax.safe_increment(state.count), long_iterate=long_iterate
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
