"""The layout a state records: which axes of each parameter index stacked layers.

Every state of the family holds a ``layout``: a plain dict keyed by the
path names (``'layers/mlp/kernel'``; a Flax NNX variable's ``.value`` left
out) of the parameters that have layer axes, whose entries are ``uint8``
zeros shaped like the parameter's statistics grid: the layer axes' sizes, 1
on every other axis. A parameter it does not name has none. So the
statistics read a state without being told ``layer_axes`` again, and a
``layer_axes`` that disagrees with the one the state was built with is an
error that names the parameter. Only stacked parameters get an entry: every
state leaf is an array that a jitted step takes and returns, at a cost per
leaf, and a model has few stacked parameters but may have hundreds of
others. ``masked_updates`` holds no other tree like the params, so its
layout names every parameter (an ordinary one with a grid of ones) and
names its kept fractions, which it stores in the layout's key order: sorted
path names, the order a dict has after ``jax.tree`` rebuilds it, not
``jax.tree.leaves`` order (``'l/10'`` sorts before ``'l/2'``).

The entries are made in ``init`` from the parameters' shapes alone, never by
mapping over the parameters: an array made that way would take a
parameter's sharding in Flax NNX and MaxText. They record no sharding, so a
resharded restore works; a checkpoint restored into a
``jax.eval_shape(tx.init, params)`` template takes the template's layout.
A layer axis of size 1 reads as an ordinary axis (its one layer is the
whole parameter either way).
"""

from collections.abc import Mapping
from collections.abc import Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _layers
from optax_sbs import _paths

Layout = dict[str, jax.Array]


def name(path: tuple[Any, ...]) -> str:
  """A parameter's path name: its path's names joined by ``/``."""
  return '/'.join(_paths.names(path))


class Recorder:
  """Records the layout of the params a transformation's ``init`` is given.

  ``optax.tree.map_params`` finds the param-shaped parts of a state by
  calling ``init`` with a placeholder that has no leaves, and matches the
  state it gets with the real one, field by field. A layout depends on the
  params' names, which the placeholder lacks: so ``init`` remembers the
  grids of the last params it saw, and gives a leafless params those
  (``optax.tree.map_params`` is called on a state ``init`` made). Without
  any, it gives a single ``uint8`` zero, a leaf that ``map_params`` leaves
  alone.

  After a call, :meth:`slices` gives the per-slice zeros of the same params.
  """

  def __init__(self, layer_axes: _layers.LayerAxesFn | None, who: str, every_leaf: bool = False):
    self.layer_axes, self.who, self.every_leaf = layer_axes, who, every_leaf
    self.grids: dict[str, tuple[int, ...]] | None = None

  def __call__(self, params: Any) -> Any:
    """The layout of ``params`` (only their shapes are read).

    Raises:
      ValueError: if two parameters have the same path name, or for axes
        ``layer_axes`` gives that a parameter does not have.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if flat:
      self.grids = _grids(flat, self.layer_axes, self.who)
      _layers.warn_if_unmatched(self.layer_axes, [path for path, _ in flat], self.who)
    elif self.grids is None:
      return jnp.zeros((), jnp.uint8)
    return {
      key: jnp.zeros(grid, jnp.uint8)
      for key, grid in self.grids.items()
      if self.every_leaf or any(n != 1 for n in grid)
    }

  def slices(self) -> jax.Array:
    """float32 zeros, one per slice of every parameter (one for an ordinary
    one) of the params last seen, made from their shapes, so replicated."""
    grids = self.grids or {}
    return jnp.zeros((sum(math.prod(grid) for grid in grids.values()),), jnp.float32)


def _grids(flat, layer_axes, who) -> dict[str, tuple[int, ...]]:
  grids: dict[str, tuple[int, ...]] = {}
  for path, leaf in flat:
    key = name(path)
    if key in grids:
      raise ValueError(
        f'{who}: two parameters are named {key!r}: the layout the state records (and the '
        'statistics) name parameters by their paths.'
      )
    axes = _layers.leaf_axes(layer_axes, path, leaf, who)
    grids[key] = _layers.stat_shape(np.shape(leaf), axes)
  return grids


def sorted_order(flat: Sequence[tuple[Any, Any]], axes: Sequence[tuple]) -> np.ndarray | None:
  """Where each entry of a per-slice vector in layout order (sorted path
  names) sits in the same vector in ``flat``'s order; ``None`` if the two
  orders agree."""
  starts, start = {}, 0
  for (path, leaf), ax in zip(flat, axes):
    size = math.prod(_layers.stat_shape(np.shape(leaf), ax))
    starts[name(path)] = range(start, start + size)
    start += size
  order = np.asarray([i for key in sorted(starts) for i in starts[key]], np.int32)
  return None if np.array_equal(order, np.arange(start)) else order


def unwrap(x: Any) -> Any:
  """``x``, or the array a Flax NNX variable holds (without importing Flax)."""
  if isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return x
  if callable(getattr(type(x), 'get_value', None)):
    return x.get_value()
  return x


def _shape(entry: Any) -> tuple[int, ...]:
  """The shape of a layout entry: an array, or a Flax NNX variable holding one."""
  return tuple(np.shape(unwrap(entry)))


def recorded_axes(layout: Any, path: tuple[Any, ...], shape: Sequence[int], who: str) -> tuple:
  """The layer axes the layout records for the parameter at ``path``: none
  if the layout does not name it.

  Raises:
    ValueError: if the layout records a grid that does not fit its shape.
  """
  key = name(path)
  if key not in layout:
    return ()
  grid = _shape(layout[key])
  shape = tuple(shape)
  if len(grid) != len(shape) or any(g not in (1, d) for g, d in zip(grid, shape)):
    raise ValueError(
      f'{who}: the state records a statistics grid {grid} for {key!r}, which has shape {shape}: '
      'was it made by init with the same params?'
    )
  return tuple(d for d, (g, n) in enumerate(zip(grid, shape)) if g == n and n != 1)


def check(layout: Any, path: tuple[Any, ...], shape: Sequence[int], axes: tuple, who: str) -> None:
  """Raises unless ``axes`` (``layer_axes``' answer now) are the recorded ones.

  Raises:
    ValueError: naming the parameter and both sets of axes.
  """
  recorded = recorded_axes(layout, path, shape, who)
  given = tuple(a for a in axes if shape[a] != 1)
  if recorded != given:
    raise ValueError(
      f'{who}: layer_axes gives the layer axes {tuple(axes)} for {name(path)!r} (shape '
      f'{tuple(shape)}), but the state was built with {recorded}: pass the layer_axes the '
      'transformation was built with, or none (the state knows them).'
    )


def check_tree(
  layout: Any, flat: Sequence[tuple[Any, Any]], axes: Sequence[tuple], who: str
) -> None:
  """:func:`check` for every ``(path, leaf)`` of ``flat`` and its axes;
  nothing to check in a state made before layouts were recorded."""
  if isinstance(layout, Mapping):
    for (path, leaf), ax in zip(flat, axes):
      check(layout, path, np.shape(leaf), ax, who)


def axes_for(
  layout: Any, layer_axes: _layers.LayerAxesFn | None, path: tuple[Any, ...], leaf: Any, who: str
) -> tuple[int, ...]:
  """A parameter's layer axes for the statistics: the recorded ones, checked
  against ``layer_axes`` if one is given; without a layout (a state made
  before layouts were recorded), ``layer_axes``' own."""
  if not isinstance(layout, Mapping):
    return _layers.leaf_axes(layer_axes, path, leaf, who)
  shape = np.shape(leaf)
  if layer_axes is not None:
    check(layout, path, shape, _layers.leaf_axes(layer_axes, path, leaf, who), who)
  return recorded_axes(layout, path, shape, who)
