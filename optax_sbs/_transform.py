"""Algorithm 2 of the paper: stochastic batch size via cumulative moving average."""

from typing import Any
from typing import Literal
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_sbs import _bundles
from optax_sbs import _granularity
from optax_sbs import _groups
from optax_sbs import _keys
from optax_sbs import _layers
from optax_sbs import _layout
from optax_sbs import _paths
from optax_sbs import _plan
from optax_sbs import _probability
from optax_sbs import _sampling
from optax_sbs import _sharding
from optax_sbs import _validation

_WHO = 'stochastic_batch_size'


class StochasticBatchSizeState(NamedTuple):
  """State of :func:`stochastic_batch_size`.

  Attributes:
    cma: per parameter element, the cumulative moving average ``g~`` of the
      gradients accumulated since the element was last updated (0 right
      after an update). A pytree like the params.
    count: per parameter element, the number ``k`` of universal batches the
      next gradient will be averaged with (1 right after an update): the
      element's current stochastic batch size in units of the batch. A
      pytree like the params, integer, saturating at its dtype's maximum.
    key: the PRNG key the next step's masks are drawn from.
    layout: per parameter with layer axes (by path name), ``uint8`` zeros
      shaped like its statistics grid: its layer axes' sizes, 1 elsewhere (see
      :func:`layers_under`). The statistics read the layer axes from it;
      ``None`` in a state made before layouts were recorded.
  """

  cma: optax.Updates
  count: optax.Updates
  key: jax.Array
  layout: Any = None

  def update_fraction(self, layer_axes: _layers.LayerAxesFn | None = None) -> Any:
    """Per leaf, the fraction of elements updated at the last step.

    An element was updated at the last step exactly when its count is 1
    (``count = (1 - chi) (k + 1) + chi``), so nothing extra is stored.
    Before the first step every count is 1 and this is 1.0. Size-0 leaves
    give 0.0. A stacked leaf gets one fraction per layer (the state records
    its layer axes).

    Args:
      layer_axes: not needed; if given, it must agree with the one the
        transformation was built with (else ``ValueError``).

    Returns:
      A pytree like the params of float32 scalars, or for a stacked leaf
      arrays with the shape of its stacked axes (``(num_layers,)``).
    """
    return _slice_means(self, lambda k: k == 1, layer_axes, 'update_fraction')

  def mean_count(self, layer_axes: _layers.LayerAxesFn | None = None) -> Any:
    """Per leaf, the mean stochastic batch size ``k`` (in batches), per
    layer for a stacked leaf.

    Args:
      layer_axes: not needed; if given, it must agree with the one the
        transformation was built with (else ``ValueError``).

    Returns:
      A pytree like the params of float32 scalars (0.0 for size-0 leaves),
      or for a stacked leaf arrays with the shape of its stacked axes.
    """
    return _slice_means(self, lambda k: k, layer_axes, 'mean_count')


def _slice_means(state, fn, layer_axes, who):
  """``fn(count)``'s float32 mean per leaf of ``state``, per layer of a
  stacked leaf (layer axes from the state's layout)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, k: _layers.slice_mean(
      fn(k), _layout.axes_for(state.layout, layer_axes, path, k, who)
    ),
    state.count,
  )


def stochastic_batch_size(
  key: jax.Array | int,
  *,
  alpha: jax.typing.ArrayLike = 0.1,
  lam: jax.typing.ArrayLike = -4.0,
  global_normalization: Literal['std', 'mean'] = 'std',
  probability: jax.typing.ArrayLike | None = None,
  scale_by_count: bool = False,
  magnitude: Literal['cma', 'gradient'] = 'cma',
  group_fn: _groups.GroupFn | None = None,
  layer_axes: _layers.LayerAxesFn | None = None,
  cma_dtype: jax.typing.DTypeLike | None = None,
  count_dtype: jax.typing.DTypeLike = 'int32',
  granularity: _granularity.Granularity = 'element',
) -> optax.GradientTransformationExtraArgs:
  r"""Stochastic batch size: every parameter element gets its own batch size.

  Implements Algorithm 2 of the paper. Per step, for every element ``j`` with
  incoming gradient ``g`` and state ``(cma, k)``:

  1. ``g~ = cma + (g - cma) / k`` (cumulative moving average over the
     universal batches seen since ``j`` was last updated);
  2. ``p = sigmoid(alpha * v + lam * mu~)`` from the magnitudes ``|g~|``
     normalised within the leaf (``v``) and the leaf mean normalised across
     the leaves of its group (``mu~``), see :func:`update_probability`;
  3. ``chi ~ Bernoulli(p)``;
  4. output ``chi * g~`` (times ``k`` with ``scale_by_count``), new
     ``cma = (1 - chi) * g~`` and ``count = (1 - chi) (k + 1) + chi``.

  Chain it *before* the optimiser that applies the learning rate, e.g.
  ``optax.sgd``: with ``probability=1.0`` every element is updated every step
  and the chain is exactly plain SGD.

  Data parallelism: average the gradients across replicas (``pmean``) before
  this transformation and give every replica the *same* key. Then every
  replica draws the same masks, and params and state stay identical. A
  different key per replica makes the replicas update different elements and
  their params drift apart.

  Args:
    key: a JAX PRNG key (typed ``jax.random.key`` or raw ``uint32``
      ``PRNGKey``) or an int seed; canonicalised to a typed key in ``init``.
    alpha: local slope (eq. 18), the spread of ``p`` within a layer. ``0``
      gives the paper's global scheme (eq. 20).
    lam: global slope (eq. 20), the spread of ``p`` across layers. ``0``
      gives the paper's local scheme (eq. 18). The default is the paper's
      ``-4`` (this is the paper's transform, chained before ``optax.sgd``),
      which updates layers with *smaller* mean gradient magnitude more
      often; around AdamW it can hold whole kernels back, which is why
      :func:`with_stochastic_batch_size` defaults to ``0``.
    global_normalization: ``'std'`` (default, eq. 19): a leaf's mean
      magnitude standardised over its group, ``(mu_l - M) / S``; ``'mean'``:
      relative to the group's mean, ``(mu_l - M) / M``. Standardising turns
      small differences into unit ones in small groups (two leaves get about
      +-1 whatever their means), and at ``lam = -4`` can freeze a whole
      layer; see :func:`update_probability`.
    probability: ``None`` (default) for the adaptive rule; a float in
      ``[0, 1]`` fixes ``p`` for every element (``1.0`` is plain SGD).
    scale_by_count: multiply the update by ``k``, the paper's
      ``eta~ = k eta`` (learning rate proportional to the batch size). The
      update is then the sum of the ``k`` gradients accumulated since the
      element's last update: every gradient is applied once, some later.
    magnitude: ``'cma'`` (default, eq. 11: the magnitudes of ``g~``) or
      ``'gradient'`` (magnitudes of the current batch gradient ``g``).
    group_fn: ``(path, leaf) -> hashable`` naming the group whose leaves are
      normalised together for the global term. Default
      :func:`parameter_type` (conv, dense, bias, norm, embedding);
      :func:`single_group` puts all leaves in one group. Under
      ``optax.inject_hyperparams`` pass it in ``static_args`` (Optax treats
      every callable as a schedule). With ``layer_axes`` it is called with
      a ``jax.ShapeDtypeStruct`` of one slice.
    layer_axes: ``(path, leaf) -> tuple[int, ...]``, the axes of a leaf that
      index stacked layers (``nn.scan`` / ``nnx.scan``; ``()`` for an
      ordinary leaf), e.g. :func:`layers_under`. ``None`` (default): none.
      Every slice along them is a layer: its own local statistics (eq. 17)
      and its own member of its group's global statistics (eq. 19),
      weighted by its element count, so a scanned model gets the update
      probabilities of the same model unrolled. Under
      ``optax.inject_hyperparams`` pass it in ``static_args``.
    cma_dtype: dtype of the stored moving average. ``None`` (default) means
      float32, or the param dtype if that is wider (float64). Give dtypes as
      strings (``'bfloat16'``) under ``optax.inject_hyperparams``.
    count_dtype: integer dtype of the counts (``int32`` default; ``uint8`` or
      ``int16`` save memory). Counts saturate at the dtype's maximum.
    granularity: what one draw of ``chi`` decides: ``'element'`` (default,
      the paper's), ``'leaf'`` (a parameter tensor, or a layer of a stacked
      one), ``'column'`` / ``'row'`` (a column / row of a layer's kernel:
      :func:`columns`, :func:`rows`), or a callable ``(path, leaf) ->
      tuple[int, ...]`` naming the axes a block keeps. A block is updated
      or held as one: its probability is the mean of its elements' adaptive
      probabilities (or the fixed ``probability``), one draw per block; the
      moving average and count stay per element.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`StochasticBatchSizeState`.

  Raises:
    TypeError / ValueError: for hyperparameters of the wrong type or range
      (at construction), non-float leaves (at ``init``) and updates whose
      tree or shapes differ from the state's (at ``update``, trace time).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, optax_sbs
    >>> tx = optax.chain(
    ...     optax_sbs.stochastic_batch_size(key=0, alpha=0.1, lam=-4.0),
    ...     optax.sgd(learning_rate=0.1))
    >>> params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> jax.tree.map(jnp.shape, optax_sbs.find_state(state).count)
    {'b': (2,), 'w': (3, 2)}

  References:
    Stochastic batch size for adaptive regularization in deep network
    optimization, Algorithm 2 and §4.3 (eqs. 16-21).
  """
  _keys.check_key(key)
  _validation.check_real('alpha', alpha)
  _validation.check_real('lam', lam)
  if global_normalization not in _probability.GLOBAL_NORMALIZATIONS:
    raise ValueError(f"global_normalization must be 'std' or 'mean', got {global_normalization!r}.")
  if probability is not None:
    _validation.check_probability('probability', probability)
  if magnitude not in ('cma', 'gradient'):
    raise ValueError(f"magnitude must be 'cma' or 'gradient', got {magnitude!r}.")
  if not isinstance(scale_by_count, (bool, np.bool_)):
    raise TypeError(f'scale_by_count must be a bool, got {scale_by_count!r}.')
  if group_fn is None:
    group_fn = _groups.parameter_type
  elif not callable(group_fn):
    raise TypeError(f'group_fn must be callable, got {group_fn!r}.')
  _layers.check_layer_axes(layer_axes)
  _granularity.check(granularity, _WHO)
  count_dtype = jnp.dtype(count_dtype)
  if not jnp.issubdtype(count_dtype, jnp.integer):
    raise TypeError(f'count_dtype must be an integer dtype, got {count_dtype}.')
  if cma_dtype is not None and not jnp.issubdtype(cma_dtype, jnp.floating):
    raise TypeError(f'cma_dtype must be a float dtype, got {cma_dtype}.')

  record_layout = _layout.Recorder(layer_axes, _WHO)

  def init_fn(params):
    _validation.check_float_leaves(params, 'params')
    # *_like keeps each param's sharding: the state is laid out like params.
    cma = jax.tree.map(
      lambda p: jnp.zeros_like(
        p, dtype=_plan.compute_dtype(p.dtype) if cma_dtype is None else jnp.dtype(cma_dtype)
      ),
      params,
    )
    count = jax.tree.map(lambda p: jnp.ones_like(p, dtype=count_dtype), params)
    layout = record_layout(params)
    return StochasticBatchSizeState(
      cma=cma, count=count, key=_keys.canonicalize_key(key), layout=layout
    )

  @_sharding.under_leaf_mesh
  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _validation.check_same_structure(updates, state.cma, 'updates')
    _validation.check_float_leaves(updates, 'updates')
    if params is not None:
      _validation.check_same_structure(params, state.cma, 'params')

    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    paths = [path for path, _ in flat]
    grads = [g for _, g in flat]
    cmas = treedef.flatten_up_to(state.cma)
    counts = treedef.flatten_up_to(state.count)
    adaptive = probability is None
    axes = _plan.tree_layer_axes(layer_axes, flat, _WHO)
    _layout.check_tree(state.layout, flat, axes, _WHO)
    dtypes = [_plan.compute_dtype(cma.dtype) for cma in cmas]
    plan = _plan.build(
      grads, axes, _granularity.tree_kept_axes(granularity, flat, axes, _WHO), dtypes
    )

    # Algorithm 2: each element's moving average g~ of the gradients since its last update.
    g_tildes = []
    for g, cma, k, dtype in zip(grads, cmas, counts, dtypes):
      cma = cma.astype(dtype)
      g_tildes.append(cma + (g.astype(dtype) - cma) / k.astype(dtype))

    next_key, step_key = _sampling.split_step_key(state.key)
    if adaptive and grads:
      # Eqs. 17-21 per layer, then chi ~ Bernoulli(p).
      sources = g_tildes if magnitude == 'cma' else grads
      magnitudes = [jnp.abs(x.astype(gt.dtype)) for x, gt in zip(sources, g_tildes)]
      groups = [
        group_fn(_paths.user_path(path), _layers.slice_struct(g, ax) if ax else g)
        for path, g, ax in zip(paths, grads, axes)
      ]
      joined = _bundles.join(magnitudes, plan.bundles)
      means, stds = _probability.layer_statistics(plan, joined)
      vectors = _probability.coefficient_vectors(
        plan, means, stds, groups, alpha, lam, global_normalization
      )
      p = _probability.bundle_probabilities(plan, joined, vectors)
      chis = _sampling.masks(plan, step_key, bundle_probabilities=_block_means(plan, p))
    else:
      chis = _sampling.masks(plan, step_key, probability)

    new_updates, new_cmas, new_counts = [], [], []
    for g, gt, k, cma, chi in zip(grads, g_tildes, counts, cmas, chis):
      chi = _sharding.broadcast_like(chi, k)
      new_count = jnp.where(chi, jnp.ones_like(k), optax.safe_increment(k))
      # The mask is read back from the new count (count == 1 exactly where
      # chi, as counts are >= 1 and saturate at >= 2). XLA then generates the
      # random bits once, in the count's kernel, instead of once per output.
      chi = new_count == 1
      step = gt * k.astype(gt.dtype) if scale_by_count else gt
      new_updates.append(jnp.where(chi, step, 0).astype(g.dtype))
      new_cmas.append(jnp.where(chi, 0, gt).astype(cma.dtype))
      new_counts.append(new_count)

    new_state = StochasticBatchSizeState(
      cma=treedef.unflatten(new_cmas),
      count=treedef.unflatten(new_counts),
      key=next_key,
      layout=state.layout,
    )
    return treedef.unflatten(new_updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _block_means(plan: _plan.Plan, probabilities: list[jax.Array]) -> list[jax.Array]:
  """Per bundle, the mean ``p`` of each mask block, joined like its block
  grids (the probabilities themselves where a block is an element)."""
  out = []
  for positions, p in zip(plan.bundles, probabilities):
    first = plan.leaves[positions[0]]
    if first.block_shape == first.shape:
      out.append(p)
      continue
    over = _bundles.row_reduced_axes(p.ndim, first.block_axes)
    mean = jnp.mean(p, axis=over, keepdims=True)
    out.append(mean.reshape((p.shape[0], *first.block_shape)))
  return out


def _is_sbs_state(node: Any) -> bool:
  return isinstance(node, StochasticBatchSizeState)


def reset_accumulators(opt_state: Any) -> Any:
  """Resets every SBS moving average to 0 and count to 1, keeping the key.

  The paper's Algorithm 2 starts each epoch with ``g~ = 0`` and ``k = 1``;
  call this between epochs to do the same (the default keeps accumulating
  across epochs). Unlike re-running ``init``, the PRNG key moves on, so the
  next epoch draws new masks.

  Args:
    opt_state: any optimizer state containing
      :class:`StochasticBatchSizeState` nodes (chains, wrappers).

  Returns:
    The same state with each :class:`StochasticBatchSizeState` reset.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> tx = optax_sbs.sbs(0.1, key=0, probability=0.0)
    >>> state = tx.init({'w': jnp.ones(2)})
    >>> _, state = tx.update({'w': jnp.ones(2)}, state)
    >>> optax_sbs.find_state(state).count['w']
    Array([2, 2], dtype=int32)
    >>> optax_sbs.find_state(optax_sbs.reset_accumulators(state)).count['w']
    Array([1, 1], dtype=int32)
  """

  def reset(node):
    if not _is_sbs_state(node):
      return node
    return node._replace(
      cma=jax.tree.map(jnp.zeros_like, node.cma),
      count=jax.tree.map(jnp.ones_like, node.count),
    )

  return jax.tree.map(reset, opt_state, is_leaf=_is_sbs_state)
