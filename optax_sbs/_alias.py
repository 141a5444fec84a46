"""``sbs``: SGD (with momentum) under stochastic batch size, like ``optax.sgd``."""

from typing import Literal

import jax
import optax

from optax_sbs import _granularity
from optax_sbs import _groups
from optax_sbs import _layers
from optax_sbs import _wrapper


def sbs(
  learning_rate: optax.ScalarOrSchedule,
  *,
  key: jax.Array | int,
  alpha: jax.typing.ArrayLike = 0.1,
  lam: jax.typing.ArrayLike = -4.0,
  global_normalization: Literal['std', 'mean'] = 'std',
  momentum: float | None = None,
  nesterov: bool = False,
  probability: jax.typing.ArrayLike | None = None,
  scale_by_count: bool = False,
  magnitude: Literal['cma', 'gradient'] = 'cma',
  group_fn: _groups.GroupFn | None = None,
  layer_axes: _layers.LayerAxesFn | None = None,
  cma_dtype: jax.typing.DTypeLike | None = None,
  count_dtype: jax.typing.DTypeLike = 'int32',
  granularity: _granularity.Granularity = 'element',
) -> optax.GradientTransformationExtraArgs:
  """SGD with stochastic batch size: the paper's optimiser in one call.

  Equivalent to::

    optax_sbs.with_stochastic_batch_size(
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
        key, alpha=alpha, lam=lam, ...)

  so Algorithm 2 holds under momentum too: an element that is not released
  keeps its value *and* its momentum trace (see
  :func:`with_stochastic_batch_size`). Without momentum this is exactly
  ``optax.chain(stochastic_batch_size(...), optax.sgd(learning_rate))``.
  That chain *with* momentum is a different method, in which the trace keeps
  moving the waiting elements: build it explicitly if you want it.

  See :func:`stochastic_batch_size` for the meaning of the SBS options.

  Args:
    learning_rate: a scalar or a schedule, e.g. :func:`sigmoid_schedule`.
    key: PRNG key or int seed of the update masks.
    alpha: local slope of the update probability (the paper's ``0.1``).
    lam: global slope of the update probability: the paper's ``-4`` by
      default, as in :func:`stochastic_batch_size` (this is the paper's
      optimiser); :func:`with_stochastic_batch_size` around other
      optimisers defaults to ``0``.
    global_normalization: ``'std'`` (eq. 19) or ``'mean'``: how a layer's
      mean magnitude is compared with its group's.
    momentum: SGD momentum (``None`` or 0 for none). The paper pairs batch
      sizes 16/32/64/128 with momentum 0/0.3/0.6/0.9.
    nesterov: use Nesterov momentum.
    probability: ``None`` for the adaptive rule, or a fixed probability.
    scale_by_count: scale each update by its batch count ``k``.
    magnitude: ``'cma'`` or ``'gradient'``: which magnitudes set ``p``.
    group_fn: grouping of leaves for the global term.
    layer_axes: the axes of each leaf that index stacked layers (see
      :func:`stochastic_batch_size`).
    cma_dtype: dtype of the moving average.
    count_dtype: integer dtype of the counts.
    granularity: what one draw of ``chi`` decides (see
      :func:`stochastic_batch_size`).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`WithStochasticBatchSizeState`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, optax_sbs
    >>> tx = optax_sbs.sbs(learning_rate=0.1, key=0, probability=1.0)
    >>> params = jnp.array([1.0, 2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([1.0, -1.0]), state, params)
    >>> optax.apply_updates(params, updates)
    Array([0.9, 2.1], dtype=float32)

  References:
    Nakamura, Soatto and Hong, `Stochastic batch size for adaptive
    regularization in deep network optimization
    <https://arxiv.org/abs/2004.06341>`_, 2020 (Algorithm 2, §4.3, §5.1).
  """
  return _wrapper.with_stochastic_batch_size(
    optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    key,
    alpha=alpha,
    lam=lam,
    global_normalization=global_normalization,
    probability=probability,
    scale_by_count=scale_by_count,
    magnitude=magnitude,
    group_fn=group_fn,
    layer_axes=layer_axes,
    cma_dtype=cma_dtype,
    count_dtype=count_dtype,
    granularity=granularity,
  )
