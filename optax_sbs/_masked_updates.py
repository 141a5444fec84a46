"""SkipUpdate and Learning-Rate Dropout: random masks on the updates of any
optimizer, whose state keeps moving densely.

Every step the inner optimizer runs on the full gradient, exactly as it would
alone, and only its output is masked (Joo et al., 2026). SBS, by contrast,
holds back the gradient itself and, under :func:`with_stochastic_batch_size`,
freezes the inner state of waiting elements.

Masks come from the transformation's key with SBS's rules (``_sampling``):
each step splits the state key into the next key and a step key, whose
counter-based stream gives one uniform per element (``granularity='element'``)
or per parameter tensor (``'leaf'``), leaves in the order of
``jax.tree.leaves``. Replicas that share the key draw the same masks, whatever
the sharding of the leaves.
"""

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_sbs import _granularity
from optax_sbs import _keys
from optax_sbs import _layers
from optax_sbs import _layout
from optax_sbs import _plan
from optax_sbs import _sampling
from optax_sbs import _sharding
from optax_sbs import _validation


class MaskedUpdatesState(NamedTuple):
  """State of :func:`masked_updates`.

  Attributes:
    inner_state: the wrapped optimizer's state, updated densely.
    key: the typed PRNG key of the next step's masks.
    layout: per parameter (by path name), ``uint8`` zeros shaped like its
      statistics grid (its layer axes' sizes, 1 elsewhere); every parameter,
      stacked or not (it names the kept fractions). ``None`` in a state
      made before layouts were recorded.
    kept: the fraction of each layer's elements whose update the last step
      kept (0 before the first step): one float32 vector with an entry per
      parameter tensor (per slice of a stacked leaf), parameters in the
      order of ``layout``'s keys (sorted path names, not
      ``jax.tree.leaves`` order), replicated. ``None`` in a state made
      before kept fractions were recorded.
  """

  inner_state: Any
  key: jax.Array
  layout: Any = None
  kept: Any = None


def masked_updates(
  inner: optax.GradientTransformation,
  key: jax.Array | int,
  *,
  probability: jax.typing.ArrayLike = 0.5,
  rescale: bool = True,
  granularity: _granularity.Granularity = 'element',
  layer_axes: _layers.LayerAxesFn | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Keeps each update of ``inner`` with probability ``p``; the inner state stays dense.

  Every step ``inner`` updates its whole state from the full gradient, as it
  would alone; its output ``u`` is then masked: ``z * u / p`` with
  ``rescale`` (SkipUpdate: unbiased, ``E[z u / p] = u``), or ``z * u``
  without, where ``z ~ Bernoulli(p)`` per element or per parameter tensor.

  ``rescale=False, granularity='element'`` is Learning-Rate Dropout (Lin et
  al., 2019): each coordinate's step is dropped with probability ``1 - p``.
  ``granularity='leaf'`` draws one ``z`` per parameter tensor, the blocks of
  Joo et al. (2026). Decoupled weight decay inside ``inner`` (``adamw``) is
  masked with the rest of its update; to keep it dense, apply it outside::

    optax.chain(masked_updates(optax.scale_by_adam(), key),
                optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr))

  Args:
    inner: the optimizer whose updates are masked, e.g. ``optax.adamw(lr)``.
      Extra args of ``update`` are forwarded to it.
    key: PRNG key (typed or raw) or int seed of the masks.
    probability: ``p``, the probability of keeping an update, in ``[0, 1]``.
      ``1`` is ``inner`` itself, bit for bit; ``0`` never moves a parameter.
    rescale: divide kept updates by ``p`` (unbiased), or keep them as they are.
    granularity: ``'element'`` (one draw per parameter element), ``'leaf'``
      (one per parameter tensor), ``'column'`` / ``'row'`` (one per column /
      row of each layer's kernel; :func:`columns`, :func:`rows`), or a
      callable ``(path, leaf) -> tuple[int, ...]`` naming the axes a block
      keeps.
    layer_axes: ``(path, leaf) -> tuple[int, ...]``, the axes of a leaf that
      index stacked layers (e.g. :func:`layers_under`); with
      ``granularity='leaf'`` every slice along them gets its own draw, as
      the layers of the unrolled model would. ``None``: none.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`MaskedUpdatesState`.

  Raises:
    TypeError / ValueError: for arguments of the wrong type or range.

  Examples:
    >>> import jax.numpy as jnp, optax, optax_sbs
    >>> tx = optax_sbs.masked_updates(optax.sgd(1.0), key=0, probability=0.5)
    >>> params = jnp.zeros(6)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.ones(6), state, params)
    >>> sorted(set(updates.tolist())) in ([-2.0, 0.0], [-2.0], [0.0])
    True

  References:
    Joo, Xia, Kim, Zhang and Ie, `On Surprising Effectiveness of Masking
    Updates in Adaptive Optimizers <https://arxiv.org/abs/2602.15322>`_, 2026.

    Lin, Wu, Wang and Li, `Learning Rate Dropout
    <https://arxiv.org/abs/1912.00144>`_, 2019.
  """
  who = 'masked_updates'
  _validation.check_masking_arguments(who, inner, probability, granularity)
  _keys.check_key(key)
  _layers.check_layer_axes(layer_axes)
  if not isinstance(rescale, (bool, np.bool_)):
    raise TypeError(f'rescale must be a bool, got {rescale!r}.')
  inner = optax.with_extra_args_support(inner)

  record_layout = _layout.Recorder(layer_axes, who, every_leaf=True)

  def init_fn(params):
    layout = record_layout(params)
    return MaskedUpdatesState(
      inner.init(params), _keys.canonicalize_key(key), layout, record_layout.slices()
    )

  @_sharding.under_leaf_mesh
  def update_fn(updates, state, params=None, **extra_args):
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    next_key, step_key = _sampling.split_step_key(state.key)
    flat, treedef = jax.tree_util.tree_flatten_with_path(inner_updates)
    leaves = [u for _, u in flat]
    axes = _plan.tree_layer_axes(layer_axes, flat, who)
    _layout.check_tree(state.layout, flat, axes, who)
    kept_axes = _granularity.tree_kept_axes(granularity, flat, axes, who)
    plan = _plan.build(leaves, None if kept_axes is None else axes, kept_axes)
    shapes = [x.shape for _, x in flat]
    # A state from before kept fractions were recorded records none.
    with_kept = state.kept is not None
    masks, kept = _sampling.masks_and_kept_fractions(
      plan, step_key, probability, shapes, axes, with_fractions=with_kept
    )
    p = jnp.asarray(probability, jnp.float32)
    scale = jnp.where(p > 0, 1 / jnp.where(p > 0, p, 1), 0) if rescale else None
    out = []
    for u, z in zip(leaves, masks):
      scaled = (
        u if scale is None else (u.astype(_plan.compute_dtype(u.dtype)) * scale).astype(u.dtype)
      )
      out.append(jnp.where(_sharding.broadcast_like(z, u), scaled, jnp.zeros_like(u)))
    order = _layout.sorted_order(flat, axes) if with_kept else None
    if order is not None:  # the state holds them in the layout's (sorted) order
      kept = kept[order]
    return treedef.unflatten(out), MaskedUpdatesState(inner_state, next_key, state.layout, kept)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
