"""Magma: masked updates scaled by the alignment of momentum and gradient
(Joo et al., 2026), around any optimizer whose state moves densely."""

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_sbs import _keys
from optax_sbs import _sampling
from optax_sbs import _validation


def _compute_dtype(dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


class MagmaState(NamedTuple):
  """State of :func:`magma`.

  Attributes:
    inner_state: the wrapped optimizer's state, updated densely.
    momentum: per parameter, the EMA ``m`` of the raw gradients (float32,
      or the parameter's dtype if wider).
    score: per block, the smoothed alignment score ``s``: a float32 scalar
      per leaf (``granularity='leaf'``) or an array like the parameter
      (``'element'``).
    key: the typed PRNG key of the next step's masks.
  """

  inner_state: Any
  momentum: Any
  score: Any
  key: jax.Array


def _cosine(m, g, granularity):
  """cos(m, g) per block: over the leaf, or per element (its sign); 0 where
  either vector is zero."""
  if granularity == 'element':
    return jnp.sign(m * g)
  dot = jnp.sum(m * g)
  norms = jnp.sqrt(jnp.sum(m * m)) * jnp.sqrt(jnp.sum(g * g))
  return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1), 0)


def magma(
  inner: optax.GradientTransformation,
  key: jax.Array | int,
  *,
  probability: jax.typing.ArrayLike = 0.5,
  tau: jax.typing.ArrayLike = 2.0,
  score_decay: jax.typing.ArrayLike = 0.9,
  momentum_decay: jax.typing.ArrayLike = 0.9,
  granularity: _sampling.Granularity = 'leaf',
  initial_score: jax.typing.ArrayLike = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Magma: masked updates scaled by momentum-gradient alignment (Joo et al., 2026).

  Per block ``b`` (a parameter tensor, or an element), every step:

  1. ``m_b <- momentum_decay * m_b + (1 - momentum_decay) * g_b``, the EMA of
     the raw gradient (with ``inner=optax.adam(b1=0.9)`` and the default
     decay, Adam's first moment);
  2. ``s~_b = sigmoid(cos(m_b, g_b) / tau)`` and
     ``s_b <- score_decay * s_b + (1 - score_decay) * s~_b``;
  3. the update is ``z_b * s_b * u_b`` with ``u`` the update of ``inner``
     (which runs densely on the full gradient) and ``z_b ~ Bernoulli(p)``;
     kept updates are not rescaled by ``1 / p``.

  Choices the paper leaves open, and why:

  - ``initial_score=1.0``: before any alignment is measured a kept block
    takes the inner update unchanged, as the public PyTorch implementations
    do; the EMA then brings in the measured alignment (with ``tau = 2``,
    ``s~`` lies in [0.38, 0.62]). Pass ``0.5`` (``sigmoid(0)``) for a
    neutral start.
  - ``m`` is not bias-corrected: the cosine does not depend on its scale,
    so a correction would not change ``s``.
  - The score and the momentum move every step, whether the block is kept
    or not (the paper's dense-state principle).
  - Decoupled weight decay inside ``inner`` (``adamw``) is masked and scaled
    with the rest of its update; keep it dense by applying it outside, as
    in :func:`masked_updates`.
  - ``granularity='element'`` is allowed: the cosine of two scalars is their
    sign agreement, so ``s~`` is ``sigmoid(+-1 / tau)``.

  Args:
    inner: the optimizer whose updates are masked and scaled, e.g.
      ``optax.adamw(lr)``. Extra args of ``update`` are forwarded to it.
    key: PRNG key (typed or raw) or int seed of the masks.
    probability: ``p``, the probability of keeping a block's update.
    tau: temperature of the alignment score, ``> 0``.
    score_decay: EMA decay of the score, in ``[0, 1]``.
    momentum_decay: EMA decay of the gradient momentum ``m``, in ``[0, 1)``.
    granularity: ``'leaf'`` (one block per parameter tensor, the paper's) or
      ``'element'``.
    initial_score: the score ``s`` before the first step.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`MagmaState`.

  Raises:
    TypeError / ValueError: for arguments of the wrong type or range, and
      (at ``init``) for parameters that are not floating point.

  Examples:
    >>> import jax.numpy as jnp, optax, optax_sbs
    >>> tx = optax_sbs.magma(optax.adam(1e-3), key=0, probability=1.0)
    >>> params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}, state, params)
    >>> round(float(state.score['w']), 4)  # 0.9 * 1 + 0.1 * sigmoid(1 / 2)
    0.9622

  References:
    Joo, Xia, Kim, Zhang and Ie, `On Surprising Effectiveness of Masking
    Updates in Adaptive Optimizers <https://arxiv.org/abs/2602.15322>`_, 2026.
  """
  who = 'magma'
  _validation.check_masking_arguments(who, inner, probability, granularity)
  _keys.check_key(key)
  _validation.check_real('tau', tau)
  _validation.check_probability('score_decay', score_decay)
  _validation.check_probability('momentum_decay', momentum_decay)
  _validation.check_real('initial_score', initial_score)
  if isinstance(tau, (int, float)) and not tau > 0:
    raise ValueError(f'tau must be positive, got {tau}.')
  if isinstance(momentum_decay, (int, float)) and momentum_decay == 1:
    raise ValueError('momentum_decay must be below 1 (the momentum would never see a gradient).')
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    _validation.check_float_leaves(params, 'params', who)
    momentum = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_compute_dtype(p.dtype)), params)
    if granularity == 'leaf':
      score = jax.tree.map(lambda p: jnp.full((), initial_score, jnp.float32), params)
    else:
      score = jax.tree.map(lambda p: jnp.full_like(p, initial_score, jnp.float32), params)
    return MagmaState(inner.init(params), momentum, score, _keys.canonicalize_key(key))

  def update_fn(updates, state, params=None, **extra_args):
    _validation.check_same_structure(updates, state.momentum, 'updates', who)
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    next_key, step_key = _sampling.split_step_key(state.key)
    grads, treedef = jax.tree.flatten(updates)
    us = treedef.flatten_up_to(inner_updates)
    momenta = treedef.flatten_up_to(state.momentum)
    scores = treedef.flatten_up_to(state.score)
    masks = _sampling.block_masks(step_key, grads, probability, granularity)
    out, new_momenta, new_scores = [], [], []
    for g, u, m, s, z in zip(grads, us, momenta, scores, masks):
      m_dtype = m.dtype
      g = g.astype(m_dtype)
      m = momentum_decay * m + (1 - momentum_decay) * g
      cos = _cosine(m, g, granularity).astype(jnp.float32)
      s = score_decay * s + (1 - score_decay) * jax.nn.sigmoid(cos / tau)
      s = s.astype(jnp.float32)
      scaled = (u.astype(_compute_dtype(u.dtype)) * s).astype(u.dtype)
      out.append(jnp.where(z, scaled, jnp.zeros_like(u)))
      new_momenta.append(m.astype(m_dtype))
      new_scores.append(s)
    return treedef.unflatten(out), MagmaState(
      inner_state,
      treedef.unflatten(new_momenta),
      treedef.unflatten(new_scores),
      next_key,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
