"""Magma: masked updates scaled by the alignment of momentum and gradient
(Joo et al., 2026), around any optimizer whose state moves densely."""

from collections.abc import Mapping
import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_sbs import _bundles
from optax_sbs import _granularity
from optax_sbs import _keys
from optax_sbs import _layers
from optax_sbs import _layout
from optax_sbs import _plan
from optax_sbs import _sampling
from optax_sbs import _sharding
from optax_sbs import _validation


class MagmaState(NamedTuple):
  """State of :func:`magma`.

  Attributes:
    inner_state: the wrapped optimizer's state, updated densely.
    momentum: per parameter, the EMA ``m`` of the raw gradients (float32,
      or the parameter's dtype if wider).
    score: per block, the smoothed alignment score ``s``. With
      ``granularity='leaf'`` one float32 vector with an entry per parameter
      tensor (per slice of a stacked leaf), in the order of
      ``jax.tree.leaves(params)``: not a tree like the params, since a
      scalar per parameter cannot carry the parameter's sharding (Flax NNX
      copies a parameter's sharding onto every state leaf in its place).
      With columns, rows or kept axes the same vector holds every block,
      leaves in order, a leaf's blocks in row-major order over its block
      grid: replicated, 4 bytes per block (a 7B Llama-style transformer
      has about 1.4 million kernel columns: under 6 MB on every device).
      :meth:`score_tree` lays it out like the params. With ``'element'`` a
      float32 array like each parameter.
    key: the typed PRNG key of the next step's masks.
    layout: per parameter with layer axes (by path name), ``uint8`` zeros
      shaped like its statistics grid (its layer axes' sizes, 1 elsewhere);
      ``None`` in a state made before layouts were recorded.
    kept: the fraction of each layer's elements whose update the last step
      kept (0 before the first step): one float32 vector with an entry per
      parameter tensor (per slice of a stacked leaf), in the order of
      ``jax.tree.leaves(params)``, replicated. ``None`` in a state made
      before kept fractions were recorded.
    blocks: with a granularity other than ``'leaf'`` and ``'element'``
      (columns, rows, kept axes), per parameter (by path name) ``uint8``
      zeros shaped like its grid of blocks (1 on the axes a block spans),
      from which :meth:`score_tree` lays out ``score``; else ``None``.
  """

  inner_state: Any
  momentum: Any
  score: Any
  key: jax.Array
  layout: Any = None
  kept: Any = None
  blocks: Any = None

  def score_tree(self, layer_axes: _layers.LayerAxesFn | None = None) -> Any:
    """The scores as a tree like the params.

    Args:
      layer_axes: not needed (the state records its layer axes); if given,
        it must agree with the one the transformation was built with.

    Returns:
      With ``granularity='leaf'``, per parameter a float32 scalar, or for a
      stacked leaf an array of its statistics shape (one score per slice, 1
      on every other axis); with columns, rows or kept axes, per parameter
      an array of its block grid (1 on the axes a block spans); with
      ``'element'``, ``score`` itself.
    """
    if _is_element_tree(self):
      return self.score
    if isinstance(self.blocks, Mapping):
      flat, treedef = jax.tree_util.tree_flatten_with_path(self.momentum)
      for path, m in flat:  # checks layer_axes, if given, against the layout
        _layout.axes_for(self.layout, layer_axes, path, m, 'magma')
      out, start = [], 0
      for path, _ in flat:
        grid = jnp.shape(_layout.unwrap(self.blocks[_layout.name(path)]))
        size = math.prod(grid)
        out.append(jnp.reshape(self.score[start : start + size], grid))
        start += size
      return jax.tree.unflatten(treedef, out)
    return per_slice_tree(self, self.score, layer_axes)


def per_slice_tree(state: MagmaState, vector: Any, layer_axes: Any) -> Any:
  """``vector`` (one entry per slice, leaves in order: the leaf-granularity
  score, the kept fractions) laid out like the params: per parameter a
  scalar, or an array of its statistics shape for a stacked one."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(state.momentum)
  axes = [_layout.axes_for(state.layout, layer_axes, path, m, 'magma') for path, m in flat]
  parts = _layers.split_slices(jnp.reshape(vector, (-1,)), [m for _, m in flat], axes)
  return jax.tree.unflatten(treedef, parts)


def _is_element_tree(state: MagmaState) -> bool:
  """Whether ``state.score`` is laid out like the params (``'element'``)."""
  if jax.tree.structure(state.score) != jax.tree.structure(state.momentum):  # type: ignore[operator]
    return False
  shapes = [jnp.shape(x) for x in jax.tree.leaves(state.momentum)]
  return [jnp.shape(x) for x in jax.tree.leaves(state.score)] == shapes


def _sign_agreement(m, g):
  """cos(m, g) of two scalars, elementwise: the sign of ``m g``."""
  return jnp.sign(m * g)


def _block_cosines(plan, ms, gs):
  """cos(m, g) per layer of the plan (a leaf, or each slice along its layer
  axes), 0 where either vector is zero: one float32 vector, layers in the
  order of the score.

  The leaves of a bundle are stacked, so their three sums are row reductions
  of one kernel each, however many leaves there are (see ``_bundles``).
  """
  parts = []
  for positions, m, g in zip(
    plan.bundles, _bundles.join(ms, plan.bundles), _bundles.join(gs, plan.bundles)
  ):
    over = _bundles.row_reduced_axes(m.ndim, plan.leaves[positions[0]].block_axes)
    dot = jnp.sum(m * g, axis=over)
    norms = jnp.sqrt(jnp.sum(m * m, axis=over)) * jnp.sqrt(jnp.sum(g * g, axis=over))
    cos = jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1), 0)
    parts.append((positions, _sharding.replicated(cos.astype(jnp.float32)).reshape(-1)))
  counts = [math.prod(leaf.block_shape) for leaf in plan.leaves]
  return _bundles.in_position_order(parts, counts, jnp.float32)


def magma(
  inner: optax.GradientTransformation,
  key: jax.Array | int,
  *,
  probability: jax.typing.ArrayLike = 0.5,
  tau: jax.typing.ArrayLike = 2.0,
  score_decay: jax.typing.ArrayLike = 0.9,
  momentum_decay: jax.typing.ArrayLike = 0.9,
  granularity: _granularity.Granularity = 'leaf',
  initial_score: jax.typing.ArrayLike = 1.0,
  layer_axes: _layers.LayerAxesFn | None = None,
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
    sign agreement, so ``s~`` is ``sigmoid(+-1 / tau)``. The paper also
    compares column- and block-wise masks: ``'column'``, ``'row'`` and
    kept axes give them, a cosine per block.

  Args:
    inner: the optimizer whose updates are masked and scaled, e.g.
      ``optax.adamw(lr)``. Extra args of ``update`` are forwarded to it.
    key: PRNG key (typed or raw) or int seed of the masks.
    probability: ``p``, the probability of keeping a block's update.
    tau: temperature of the alignment score, ``> 0``.
    score_decay: EMA decay of the score, in ``[0, 1]``.
    momentum_decay: EMA decay of the gradient momentum ``m``, in ``[0, 1)``.
    granularity: ``'leaf'`` (one block per parameter tensor, the paper's),
      ``'element'``, ``'column'`` / ``'row'`` (a column / row of each
      layer's kernel; :func:`columns`, :func:`rows`), or a callable
      ``(path, leaf) -> tuple[int, ...]`` naming the axes a block keeps.
      The cosine and the score are per block.
    initial_score: the score ``s`` before the first step.
    layer_axes: ``(path, leaf) -> tuple[int, ...]``, the axes of a leaf that
      index stacked layers (e.g. :func:`layers_under`); with
      ``granularity='leaf'`` every slice along them is a block: its own
      cosine, score and mask draw, as the layers of the unrolled model
      would have. ``None``: none.

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
    >>> round(float(state.score_tree()['w']), 4)  # 0.9 * 1 + 0.1 * sigmoid(1 / 2)
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
  _layers.check_layer_axes(layer_axes)
  inner = optax.with_extra_args_support(inner)

  record_layout = _layout.Recorder(layer_axes, who)
  block_grids: dict[str, tuple[int, ...]] = {}

  def init_fn(params):
    _validation.check_float_leaves(params, 'params', who)
    momentum = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_plan.compute_dtype(p.dtype)), params)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    axes = _plan.tree_layer_axes(layer_axes, flat, who)
    kept_axes = _granularity.tree_kept_axes(granularity, flat, axes, who)
    blocks = None
    if kept_axes is None:
      score = jax.tree.map(lambda p: jnp.full_like(p, initial_score, jnp.float32), params)
    else:
      plan = _plan.build([p for _, p in flat], axes, kept_axes)
      score = jnp.full((plan.num_blocks,), initial_score, jnp.float32)
      if granularity != 'leaf':
        # As the layout (see _layout.Recorder): a leafless placeholder params
        # gets the grids of the last real params.
        if flat:
          block_grids.update(
            (_layout.name(path), leaf.block_shape or (1,) * len(leaf.shape))
            for (path, _), leaf in zip(flat, plan.leaves)
          )
        blocks = {key: jnp.zeros(grid, jnp.uint8) for key, grid in block_grids.items()}
    layout = record_layout(params)
    return MagmaState(
      inner.init(params),
      momentum,
      score,
      _keys.canonicalize_key(key),
      layout,
      record_layout.slices(),
      blocks,
    )

  @_sharding.under_leaf_mesh
  def update_fn(updates, state, params=None, **extra_args):
    _validation.check_same_structure(updates, state.momentum, 'updates', who)
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    next_key, step_key = _sampling.split_step_key(state.key)
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    grads = [g for _, g in flat]
    us = treedef.flatten_up_to(inner_updates)
    momenta = treedef.flatten_up_to(state.momentum)
    axes = _plan.tree_layer_axes(layer_axes, flat, who)
    _layout.check_tree(state.layout, flat, axes, who)
    kept_axes = _granularity.tree_kept_axes(granularity, flat, axes, who)
    plan = _plan.build(
      grads, None if kept_axes is None else axes, kept_axes, [m.dtype for m in momenta]
    )
    if kept_axes is not None:
      _check_score_size(state.score, plan)
    shapes = [x.shape for _, x in flat]
    # A state from before kept fractions were recorded records none.
    with_kept = state.kept is not None
    masks, kept = _sampling.masks_and_kept_fractions(
      plan, step_key, probability, shapes, axes, with_fractions=with_kept
    )
    gs = [g.astype(m.dtype) for g, m in zip(grads, momenta)]
    ms = [momentum_decay * m + (1 - momentum_decay) * g for m, g in zip(momenta, gs)]
    if kept_axes is not None:
      cos = _block_cosines(plan, ms, gs)
      score = score_decay * state.score + (1 - score_decay) * jax.nn.sigmoid(cos / tau)
      score = score.astype(jnp.float32)
      scores = _bundles.split_blocks(score, plan, step_key)
    else:
      scores = []
      for s, m, g in zip(treedef.flatten_up_to(state.score), ms, gs):
        cos = _sign_agreement(m, g).astype(jnp.float32)
        scores.append(
          (score_decay * s + (1 - score_decay) * jax.nn.sigmoid(cos / tau)).astype(jnp.float32)
        )
      score = treedef.unflatten(scores)
    out = []
    for u, s, z in zip(us, scores, masks):
      scaled = (u.astype(_plan.compute_dtype(u.dtype)) * _sharding.broadcast_like(s, u)).astype(
        u.dtype
      )
      out.append(jnp.where(_sharding.broadcast_like(z, u), scaled, jnp.zeros_like(u)))
    new_momenta = [m_new.astype(m.dtype) for m_new, m in zip(ms, momenta)]
    return treedef.unflatten(out), MagmaState(
      inner_state,
      treedef.unflatten(new_momenta),
      score,
      next_key,
      state.layout,
      kept,
      state.blocks,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_score_size(score, plan):
  blocks = plan.num_blocks
  if jnp.shape(score) != (blocks,):
    raise ValueError(
      f'magma: the state holds {jnp.shape(score)} scores where the updates have {blocks} '
      'blocks (parameter tensors, or slices of stacked ones): was the state made by init with '
      'the same params and layer_axes?'
    )
