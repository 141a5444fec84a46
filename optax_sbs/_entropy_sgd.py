"""Entropy-SGD (Chaudhari et al. 2017, Algorithm 1): a baseline of the paper."""

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from optax._src import base
from optax._src import numerics

from optax_sbs import _transform
from optax_sbs import _validation


class ScaleByEntropySGDState(NamedTuple):
  """State of :func:`scale_by_entropy_sgd`.

  Attributes:
    count: number of outer steps taken (int32), for a ``gamma`` schedule.
    key: the PRNG key of the next step's Langevin noise.
  """

  count: jax.Array
  key: jax.Array


def scale_by_entropy_sgd(
    key: jax.Array | int,
    *,
    num_inner_steps: int = 5,
    inner_learning_rate: float = 0.1,
    gamma: base.ScalarOrSchedule = 0.03,
    noise: float = 1e-4,
    mean_rate: float = 0.75,
) -> base.GradientTransformationExtraArgs:
  r"""Replaces the gradient by the gradient of the local entropy (Entropy-SGD).

  Runs ``L = num_inner_steps`` steps of stochastic gradient Langevin dynamics
  (SGLD) from ``x' = x`` (the params), coupled to ``x`` with strength
  ``gamma``, while averaging ``x'`` into ``mu``::

    dx' = grad f(x') - gamma (x - x')
    x'  <- x' - eta' dx' + sqrt(eta') noise N(0, I)
    mu  <- (1 - mean_rate) mu + mean_rate x'

  and outputs ``gamma (x - mu)``, the gradient of the local entropy: chain
  an optimiser after it (``optax.sgd(eta)`` gives the paper's
  ``x <- x - eta gamma (x - mu)``). The first inner step uses the incoming
  gradient (``x' = x``); the others call ``value_fn``, which ``update``
  takes as an extra argument (Optax's convention, as in
  ``optax.scale_by_zoom_linesearch``): ``value_fn(params) -> scalar loss``,
  usually the loss on the current mini-batch. Each outer step therefore costs
  ``L`` gradient evaluations. The paper samples a new mini-batch per inner
  step; with ``value_fn`` bound to one batch, all inner steps see that batch.

  Args:
    key: PRNG key or int seed of the Langevin noise.
    num_inner_steps: ``L``, SGLD steps per outer step (the paper uses 5 in
      the SBS comparison, ``L = 20`` in its own experiments).
    inner_learning_rate: SGLD step size ``eta'``.
    gamma: the scope (coupling strength), a scalar or a schedule of the
      outer step ("scoping": increase it over training).
    noise: the thermal noise ``epsilon`` of SGLD (0 for plain gradient steps).
    mean_rate: ``alpha`` of the running average ``mu`` (0.75 in the paper).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`. ``update`` needs
    ``params`` and the extra argument ``value_fn``.

  References:
    Chaudhari et al, `Entropy-SGD: biasing gradient descent into wide
    valleys <https://arxiv.org/abs/1611.01838>`_, 2017.
  """
  if isinstance(num_inner_steps, bool) or not isinstance(num_inner_steps, int):
    raise TypeError(
        f'num_inner_steps must be an int, got {num_inner_steps!r}.')
  if num_inner_steps < 1:
    raise ValueError(f'num_inner_steps must be >= 1, got {num_inner_steps}.')
  _validation.check_real('inner_learning_rate', inner_learning_rate)
  _validation.check_real('noise', noise)
  _validation.check_probability('mean_rate', mean_rate)
  if not callable(gamma):
    _validation.check_real('gamma', gamma)

  def init_fn(params):
    del params
    return ScaleByEntropySGDState(
        count=jnp.zeros([], jnp.int32),
        key=_transform._canonicalize_key(key),  # pylint: disable=protected-access
    )

  def update_fn(updates, state, params=None, *,
                value_fn: Optional[Callable[[Any], jax.Array]] = None,
                **extra_args):
    del extra_args
    if params is None:
      raise ValueError(base.NO_PARAMS_MSG)
    if value_fn is None and num_inner_steps > 1:
      raise ValueError(
          'scale_by_entropy_sgd: update needs the extra argument value_fn '
          '(params -> scalar loss) for the inner Langevin steps, e.g. '
          'tx.update(grads, state, params, value_fn=loss_fn).')
    g = gamma(state.count) if callable(gamma) else gamma
    next_key, step_key = jax.random.split(state.key)
    xs, treedef = jax.tree.flatten(params)

    def langevin(x_primes, mus, grads, key):
      """One SGLD step of every leaf, and the running average."""
      keys = jax.random.split(key, len(xs)) if xs else []
      new_x_primes, new_mus = [], []
      for x, xp, m, grad, k in zip(xs, x_primes, mus, grads, keys):
        dxp = grad.astype(xp.dtype) - g * (x - xp)
        eps = jax.random.normal(k, xp.shape, xp.dtype)
        xp = (xp - inner_learning_rate * dxp
              + jnp.sqrt(inner_learning_rate) * noise * eps).astype(x.dtype)
        new_x_primes.append(xp)
        new_mus.append(((1 - mean_rate) * m + mean_rate * xp).astype(m.dtype))
      return new_x_primes, new_mus

    inner_keys = jax.random.split(step_key, num_inner_steps)
    carry = langevin(xs, xs, treedef.flatten_up_to(updates), inner_keys[0])

    def body(i, carry):
      x_primes, mus = carry
      grads = jax.tree.leaves(jax.grad(value_fn)(treedef.unflatten(x_primes)))
      return langevin(x_primes, mus, grads, inner_keys[i])

    if num_inner_steps > 1:
      # Unrolled: XLA:CPU ran the rolled loop of a small CNN's gradients ~5x
      # slower per step (the compiled program grows linearly in the steps).
      carry = jax.lax.fori_loop(1, num_inner_steps, body, carry, unroll=True)
    mu = treedef.unflatten(carry[1])
    new_updates = jax.tree.map(
        lambda x, m, u: (g * (x - m)).astype(u.dtype), params, mu, updates)
    return new_updates, ScaleByEntropySGDState(
        count=numerics.safe_increment(state.count), key=next_key)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def entropy_sgd(
    learning_rate: base.ScalarOrSchedule,
    *,
    key: jax.Array | int,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    num_inner_steps: int = 5,
    inner_learning_rate: float = 0.1,
    gamma: base.ScalarOrSchedule = 0.03,
    noise: float = 1e-4,
    mean_rate: float = 0.75,
) -> base.GradientTransformationExtraArgs:
  """Entropy-SGD: SGD on the local-entropy gradient of :func:`scale_by_entropy_sgd`.

  ``optax.chain(scale_by_entropy_sgd(...), optax.sgd(learning_rate,
  momentum))``: with momentum 0 the outer step is the paper's
  ``x <- x - eta gamma (x - mu)``.

  Args:
    learning_rate: outer learning rate ``eta``, a scalar or a schedule.
    key: PRNG key or int seed of the Langevin noise.
    momentum: outer SGD momentum (``None`` or 0 for none).
    nesterov: Nesterov momentum for the outer step.
    num_inner_steps: SGLD steps per outer step.
    inner_learning_rate: SGLD step size.
    gamma: scope, a scalar or a schedule.
    noise: SGLD thermal noise.
    mean_rate: averaging rate of ``mu``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; pass ``value_fn`` to
    ``update``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, optax_sbs
    >>> loss = lambda w: jnp.sum(w ** 2)
    >>> tx = optax_sbs.baselines.entropy_sgd(1.0, key=0, noise=0.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(
    ...     jax.grad(loss)(params), state, params, value_fn=loss)
    >>> bool(jnp.all(jnp.abs(optax.apply_updates(params, updates)) < jnp.abs(params)))
    True

  References:
    Chaudhari et al, `Entropy-SGD: biasing gradient descent into wide
    valleys <https://arxiv.org/abs/1611.01838>`_, 2017.
  """
  return optax.chain(
      scale_by_entropy_sgd(
          key, num_inner_steps=num_inner_steps,
          inner_learning_rate=inner_learning_rate, gamma=gamma, noise=noise,
          mean_rate=mean_rate),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
  )
