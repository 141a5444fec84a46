"""Per-layer SBS statistics from any optimizer state, for metric writers."""

from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import jax

from optax_sbs import _layers
from optax_sbs import _paths
from optax_sbs import _transform

_FIELDS = frozenset(_transform.StochasticBatchSizeState._fields)


def _count_trees(node: Any, where: str = '') -> Iterator[tuple[str, Any]]:
  """Yields ``(where, count tree)`` of every SBS state inside ``node``.

  An SBS state is a :class:`StochasticBatchSizeState`, or a mapping with
  its fields (``cma``, ``count``, ``key``), which is what Flax NNX makes of
  it in ``nnx.state(optimizer)`` (and ``to_pure_dict``).
  """
  if isinstance(node, _transform.StochasticBatchSizeState):
    yield where, node.count
  elif isinstance(node, Mapping):
    if _FIELDS <= set(node.keys()):
      yield where, node['count']
      return
    for name, child in node.items():
      yield from _count_trees(child, f'{where}/{name}' if where else str(name))
  elif isinstance(node, (tuple, list)):
    names = getattr(node, '_fields', range(len(node)))
    for name, child in zip(names, node):
      yield from _count_trees(child, f'{where}/{name}' if where else str(name))


def _path_name(path: tuple[Any, ...]) -> str:
  return '/'.join(_paths.names(path))


def layer_statistics(
  opt_state: Any, prefix: str = 'sbs', layer_axes: _layers.LayerAxesFn | None = None
) -> dict[str, Any]:
  """Per parameter, SBS's update fraction and mean count as a flat mapping.

  For every parameter leaf ``path`` (names joined by ``/``), two entries:
  ``'{prefix}/update_fraction/{path}'``, the fraction of its elements
  updated at the last step, and ``'{prefix}/mean_count/{path}'``, the mean
  stochastic batch size ``k`` of its elements (in batches). Ready for a
  metric writer (e.g. ``clu.metric_writers``' ``write_scalars``) and usable
  under ``jit``.

  Works on any state holding SBS: Optax/Linen states (chains, wrappers,
  ``inject_hyperparams``) and Flax NNX's ``nnx.state(optimizer)``, in which
  the SBS ``NamedTuple`` has become a mapping. With several SBS states,
  each path starts with where in the state it was found.

  With stacked layers, pass the transformation's ``layer_axes``: each slice
  of a stacked leaf gets its own entries, its index appended to the path
  (``'sbs/update_fraction/layers/mlp/kernel/3'`` for layer 3; ``.../1/2``
  with two stacked axes), so a scanned run reads like the unrolled one.

  Args:
    opt_state: an optimizer state, or a Flax NNX optimizer's state (the
      whole ``nnx.state(optimizer)`` or its ``'opt_state'``).
    prefix: the first part of every key.
    layer_axes: the ``layer_axes`` the transformation was built with.

  Returns:
    A ``dict`` of float32 scalars.

  Raises:
    ValueError: if there is no SBS state in ``opt_state``.

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
  found = list(_count_trees(opt_state))
  if not found:
    raise ValueError(
      'layer_statistics: no stochastic batch size state (cma, count, key) in this optimizer state.'
    )
  fractions, counts = {}, {}
  for where, count in found:
    for path, k in jax.tree_util.tree_flatten_with_path(count)[0]:
      name = _path_name(path)
      if len(found) > 1 and where:
        name = f'{where}/{name}'
      axes = _layers.leaf_axes(layer_axes, path, k, 'layer_statistics')
      fraction = _layers.slice_mean(k == 1, axes).reshape(-1)
      mean = _layers.slice_mean(k, axes).reshape(-1)
      for i, index in enumerate(_layers.slice_names(k.shape, axes)):
        full = f'{name}/{index}' if index else name
        fractions[f'{prefix}/update_fraction/{full}'] = fraction[i]
        counts[f'{prefix}/mean_count/{full}'] = mean[i]
  return {**fractions, **counts}
