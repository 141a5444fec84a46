"""Statistics of the family's states, for metric writers: SBS, masked_updates, magma.

A family state is found in every form a user holds: an Optax state (chains,
wrappers, ``inject_hyperparams``, ``MultiSteps``), a Flax NNX optimizer's
``optimizer.opt_state``, ``nnx.state(optimizer)`` (in which the
``NamedTuple`` has become a mapping of its fields) and ``nnx.to_pure_dict``
of it. The layer axes come from the layout the state records.
"""

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _layers
from optax_sbs import _layout
from optax_sbs import _magma
from optax_sbs import _masked_updates
from optax_sbs import _paths
from optax_sbs import _transform

Kind = Literal['sbs', 'masked_updates', 'magma']
_STATES: dict[str, Any] = {
  'sbs': _transform.StochasticBatchSizeState,
  'masked_updates': _masked_updates.MaskedUpdatesState,
  'magma': _magma.MagmaState,
}
# The fields that tell a state's mapping form (Flax NNX) from other mappings.
_SIGNATURES = {
  'sbs': frozenset({'cma', 'count', 'key'}),
  'masked_updates': frozenset({'inner_state', 'key', 'layout'}),
  'magma': frozenset({'inner_state', 'momentum', 'score', 'key'}),
}
SliceName = Callable[[Sequence[str], tuple[int, ...]], str]


def _plain(node: Any) -> Any:
  """``node`` with Flax NNX variables replaced by their values and mappings
  (``nnx.State``) by dicts."""
  if isinstance(node, Mapping):
    return {k: _plain(v) for k, v in node.items()}
  if isinstance(node, (list, tuple)) and not hasattr(node, '_fields'):
    return type(node)(_plain(v) for v in node)
  return _layout.unwrap(node)


def _kind_of(node: Any) -> str | None:
  for kind, cls in _STATES.items():
    if isinstance(node, cls):
      return kind
  if isinstance(node, Mapping):
    keys = set(node.keys())
    for kind, fields in _SIGNATURES.items():
      if fields <= keys and keys <= set(_STATES[kind]._fields):
        return kind
  return None


def _walk(node: Any, where: str = '') -> Iterator[tuple[str, str, Any]]:
  """Yields ``(where, kind, state)`` of every family state inside ``node``,
  each as its ``NamedTuple`` with plain arrays."""
  kind = _kind_of(node)
  if kind is not None:
    if isinstance(node, Mapping):
      node = _STATES[kind](**{k: _plain(v) for k, v in node.items()})
    yield where, kind, node
    if kind == 'sbs':
      return
    node = node.inner_state  # a state may wrap another
    where = f'{where}/inner_state' if where else 'inner_state'
    yield from _walk(node, where)
    return
  children: Any = ()
  if isinstance(node, Mapping):
    children = node.items()
  elif isinstance(node, (tuple, list)):
    children = zip(getattr(node, '_fields', range(len(node))), node)
  for name, child in children:
    yield from _walk(child, f'{where}/{name}' if where else str(name))


def find_state(opt_state: Any, kind: Kind = 'sbs') -> Any:
  """Finds a state of the family inside an optimizer state.

  Works through ``optax.chain``, ``optax.inject_hyperparams``,
  ``optax.MultiSteps``, ``optax.apply_if_finite`` and other wrappers whose
  states are pytrees, and on a Flax NNX optimizer's states:
  ``optimizer.opt_state``, ``nnx.state(optimizer)`` and
  ``nnx.to_pure_dict(nnx.state(optimizer))``.

  Args:
    opt_state: the state of an optimizer that contains one of the family.
    kind: ``'sbs'`` (:func:`stochastic_batch_size`, also inside
      :func:`with_stochastic_batch_size` and :func:`sbs`),
      ``'masked_updates'`` or ``'magma'``.

  Returns:
    The (first) state of that kind, as its ``NamedTuple``
    (:class:`StochasticBatchSizeState`, :class:`MaskedUpdatesState`,
    :class:`MagmaState`) with plain arrays.

  Raises:
    ValueError: if there is none, or for an unknown ``kind``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> tx = optax_sbs.sbs(0.1, key=0)
    >>> state = tx.init({'w': jnp.ones(4)})
    >>> sbs_state = optax_sbs.find_state(state)
    >>> float(sbs_state.update_fraction()['w']), float(sbs_state.mean_count()['w'])
    (1.0, 1.0)
  """
  if kind not in _STATES:
    raise ValueError(f'find_state: kind must be one of {", ".join(_STATES)}; got {kind!r}.')
  for _, found, state in _walk(opt_state):
    if found == kind:
      return state
  raise ValueError(f'find_state: no {_STATES[kind].__name__} in this optimizer state.')


def slice_names(path_names: Sequence[str], index: tuple[int, ...]) -> str:
  """The default name of one layer of a stacked parameter: its path, then
  the layer's index (``'layers/mlp/kernel/3'``; ``'.../1/2'`` for two layer
  axes)."""
  return '/'.join([*path_names, *(str(i) for i in index)])


def maxtext_slice_names(layers: str | tuple[str, ...] = 'layers') -> SliceName:
  """Names layers as an unrolled MaxText model does: ``'layers_3/mlp/kernel'``.

  Give it as ``slice_name`` to :func:`layer_statistics`, so the statistics
  of a scanned run line up with those of the same model unrolled. A
  parameter whose path has no entry ``layers`` keeps the default name.

  Args:
    layers: the path entry of the stacked module, or several
      (DeepSeek-style models: ``('dense_layers', 'moe_layers')``).

  Returns:
    A ``slice_name`` callable.

  Examples:
    >>> import optax_sbs
    >>> optax_sbs.maxtext_slice_names()(['decoder', 'layers', 'mlp', 'wo', 'kernel'], (3,))
    'decoder/layers_3/mlp/wo/kernel'
    >>> name = optax_sbs.maxtext_slice_names(('dense_layers', 'moe_layers'))
    >>> name(['decoder', 'moe_layers', 'MoeBlock_0', 'wi_0'], (1,))
    'decoder/moe_layers_1/MoeBlock_0/wi_0'
  """
  stacks = (layers,) if isinstance(layers, str) else tuple(layers)
  if not stacks or not all(isinstance(n, str) for n in stacks):
    raise TypeError(
      f'maxtext_slice_names: layers must be a str or a non-empty tuple of str, got {layers!r}.'
    )

  def name(path_names: Sequence[str], index: tuple[int, ...]) -> str:
    stack = next((n for n in path_names if n in stacks), None)
    if stack is None:
      return slice_names(path_names, index)
    suffix = '_'.join(str(i) for i in index)
    return '/'.join(f'{n}_{suffix}' if n == stack else n for n in path_names)

  return name


def _per_layer(
  values: Any, count_tree: Any, layout: Any, layer_axes: Any, slice_name: SliceName, who: str
) -> Iterator[tuple[str, Any]]:
  """``(name, scalar)`` per layer of every parameter of ``count_tree`` (a
  tree like the params), from ``values(path, leaf, axes)``: an array of the
  leaf's stacked axes' shape (a scalar for an ordinary leaf)."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(count_tree)[0]:
    axes = _layout.axes_for(layout, layer_axes, path, leaf, who)
    flat = values(path, leaf, axes).reshape(-1)
    names = _paths.names(path)
    stacked = [np.shape(leaf)[a] for a in axes]
    for i, index in enumerate(np.ndindex(*stacked)):
      yield (slice_name(names, tuple(index)) if axes else '/'.join(names)), flat[i]


def _per_named_layer(
  vector: Any, layout: Mapping[str, Any], slice_name: SliceName
) -> Iterator[tuple[str, Any]]:
  """``(name, scalar)`` per layer of every parameter of ``layout``, from
  ``vector``: one entry per layer, parameters in the order of their sorted
  path names."""
  vector = jnp.reshape(_layout.unwrap(vector), (-1,))
  start = 0
  for key in sorted(layout):
    shape = np.shape(_layout.unwrap(layout[key]))
    axes = [d for d, n in enumerate(shape) if n != 1]
    if not axes:
      yield key, vector[start]
      start += 1
      continue
    names = key.split('/')
    for index in np.ndindex(*(shape[a] for a in axes)):
      yield slice_name(names, tuple(index)), vector[start]
      start += 1


def _statistics(kind: str, state: Any, layer_axes: Any, slice_name: SliceName):
  """``(statistic, name, value)`` of one family state."""
  who = 'layer_statistics'
  if kind == 'sbs':
    stats: dict[str, Callable[..., Any]] = {
      'update_fraction': lambda p, k, ax: _layers.slice_mean(k == 1, ax),
      'mean_count': lambda p, k, ax: _layers.slice_mean(k, ax),
    }
    for statistic, values in stats.items():
      for name, value in _per_layer(values, state.count, state.layout, layer_axes, slice_name, who):
        yield statistic, name, value
    return
  if kind == 'magma':
    if _magma._is_element_tree(state):  # noqa: SLF001
      values = lambda p, s, ax: _layers.slice_mean(s, ax)  # noqa: E731
      tree = state.score
    else:
      by_path = dict(jax.tree_util.tree_flatten_with_path(state.score_tree(layer_axes))[0])
      values = lambda p, m, ax: _layers.slice_mean(jnp.asarray(by_path[p]), ax)  # noqa: E731
      tree = state.momentum
    for name, value in _per_layer(values, tree, state.layout, layer_axes, slice_name, who):
      yield 'score', name, value
  if state.kept is None:  # a state made before kept fractions were recorded
    return
  if kind == 'masked_updates':  # in the order of the layout's (sorted) names
    if isinstance(state.layout, Mapping):
      for name, value in _per_named_layer(state.kept, state.layout, slice_name):
        yield 'kept_fraction', name, value
    return
  # magma: one vector, named by the momentum's paths.
  tree = _magma.per_slice_tree(state, state.kept, layer_axes)
  by_path = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  for name, value in _per_layer(
    lambda p, m, ax: jnp.asarray(by_path[p]),
    state.momentum,
    state.layout,
    layer_axes,
    slice_name,
    who,
  ):
    yield 'kept_fraction', name, value


def layer_statistics(
  opt_state: Any,
  prefix: str | None = None,
  layer_axes: _layers.LayerAxesFn | None = None,
  slice_name: SliceName = slice_names,
) -> dict[str, Any]:
  """Per parameter, and per layer of a stacked one, the family's statistics.

  For every state of the family found in ``opt_state`` (see
  :func:`find_state`), keyed ``'{prefix}/{statistic}/{name}'``:

  - SBS: ``update_fraction``, the fraction of elements updated at the last
    step, and ``mean_count``, the mean stochastic batch size ``k`` (in
    batches);
  - :func:`masked_updates`: ``kept_fraction``, the fraction of elements
    whose update the last step kept (0 before the first step);
  - :func:`magma`: ``score``, the smoothed alignment score that scales its
    kept updates (the mean over the layer's blocks), and ``kept_fraction``.

  ``name`` is the parameter's path (names joined by ``/``, a Flax NNX
  variable's ``.value`` left out), and for a stacked parameter each layer
  gets its own entry, named by ``slice_name`` (default: the layer's index
  appended, ``'layers/mlp/kernel/3'``; :func:`maxtext_slice_names` names it
  as MaxText's unrolled model would), so a scanned run reads like the
  unrolled one. The layer axes come from the state's recorded layout.

  What each costs inside a jitted train step: the kept fractions and
  Magma's scores (per layer or coarser) are read from the state as stored,
  at no cost beyond the step's own (which reduces each mask once);
  ``update_fraction``, ``mean_count`` and Magma's per-element scores are
  one pass over the counts (or scores), a small share of a step's memory
  traffic: all are cheap enough to log every step.

  Args:
    opt_state: an optimizer state, or a Flax NNX optimizer's state (the
      whole ``nnx.state(optimizer)``, its ``'opt_state'``, or
      ``nnx.to_pure_dict`` of either).
    prefix: the first part of every key; default the state's kind
      (``'sbs'``, ``'masked_updates'``, ``'magma'``). With several states
      of one kind, each name starts with where in the state it was found.
    layer_axes: not needed; if given, it must agree with the one the
      transformations were built with (else ``ValueError``).
    slice_name: ``(path_names, index) -> str``, the name of one layer of a
      stacked parameter.

  Returns:
    A ``dict`` of float32 scalars.

  Raises:
    ValueError: if there is no state of the family in ``opt_state``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> tx = optax_sbs.sbs(0.1, key=0, probability=0.0)
    >>> params = {'Dense_0': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}
    >>> state = tx.init(params)
    >>> _, state = tx.update(params, state, params)
    >>> stats = optax_sbs.layer_statistics(state)
    >>> {k: float(v) for k, v in stats.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'sbs/update_fraction/Dense_0/bias': 0.0,
     'sbs/update_fraction/Dense_0/kernel': 0.0,
     'sbs/mean_count/Dense_0/bias': 2.0, 'sbs/mean_count/Dense_0/kernel': 2.0}
  """
  found = list(_walk(opt_state))
  if not found:
    raise ValueError(
      'layer_statistics: no stochastic batch size (cma, count, key), masked_updates or magma '
      'state in this optimizer state.'
    )
  per_kind: dict[str, int] = {}
  for _, kind, _ in found:
    per_kind[kind] = per_kind.get(kind, 0) + 1
  out: dict[str, Any] = {}
  for where, kind, state in found:
    head = prefix or kind
    place = f'{where}/' if per_kind[kind] > 1 and where else ''
    for statistic, name, value in _statistics(kind, state, layer_axes, slice_name):
      out[f'{head}/{statistic}/{place}{name}'] = value
  return out
