"""Stacked layers: the axes of a leaf that index layers (``nn.scan`` / ``nnx.scan``).

A model whose layers are stacked (Flax's ``nn.scan`` and ``nnx.scan``,
MaxText, big_vision) holds one leaf of shape ``(num_layers, ...)`` per kind of
parameter. Everything the optimizers do *per layer* (the local statistics of
eq. 17, membership of a group's global statistics, one mask draw per tensor,
Magma's alignment score) must then be done per *slice* of that leaf along its
stacked axes. ``layer_axes(path, leaf) -> tuple[int, ...]`` names those axes;
``()`` is an ordinary leaf, a single layer.

A leaf's per-slice quantities are held in its *statistics shape*: the leaf's
shape with every non-stacked axis set to 1 (``keepdims``), so they broadcast
against the leaf. Slices are numbered in row-major order over the stacked
axes.
"""

from collections.abc import Callable
from collections.abc import Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_sbs import _paths
from optax_sbs import _sharding

LayerAxesFn = Callable[[tuple[Any, ...], Any], tuple[int, ...]]


def check_layer_axes(layer_axes: Any) -> None:
  """Raises TypeError unless ``layer_axes`` is None or callable."""
  if layer_axes is not None and not callable(layer_axes):
    raise TypeError(
      f'layer_axes must be a callable (path, leaf) -> tuple of axes, or None; got {layer_axes!r}.'
    )


def leaf_axes(
  layer_axes: LayerAxesFn | None, path: tuple[Any, ...], leaf: Any, who: str
) -> tuple[int, ...]:
  """The validated stacked axes of one leaf, non-negative and increasing.

  Raises:
    TypeError: if ``layer_axes`` does not return a tuple of ints.
    ValueError: for an axis the leaf does not have, or a repeated axis.
  """
  if layer_axes is None:
    return ()
  path = _paths.user_path(path)
  where = 'the leaf at ' + (jax.tree_util.keystr(path) or 'the root')
  return normalize_axes(layer_axes(path, leaf), np.shape(leaf), where, who)


def normalize_axes(
  axes: Any, shape: tuple[int, ...], where: str, who: str, what: str = 'layer_axes'
) -> tuple[int, ...]:
  """``axes`` checked against ``shape``, non-negative and increasing.

  Raises:
    TypeError: if ``axes`` is not a tuple of ints.
    ValueError: for an axis ``shape`` does not have, or a repeated axis.
  """
  if not isinstance(axes, tuple) or not all(
    isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
  ):
    raise TypeError(
      f'{who}: {what} must give a tuple of ints for every leaf; for {where} it gave {axes!r}.'
    )
  ndim = len(shape)
  normalized = []
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(
        f'{who}: {what} gave axis {a} for {where}, which has shape {shape} ({ndim} axes).'
      )
    normalized.append(int(a) % ndim)
  if len(set(normalized)) != len(normalized):
    raise ValueError(f'{who}: {what} gave a repeated axis {axes!r} for {where} (shape {shape}).')
  return tuple(sorted(normalized))


def tree_axes(layer_axes: LayerAxesFn | None, tree: Any, who: str) -> list[tuple[int, ...]]:
  """Per leaf of ``tree`` (in ``jax.tree.leaves`` order), its stacked axes."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [leaf_axes(layer_axes, path, leaf, who) for path, leaf in flat]


def stat_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
  """The shape of per-slice quantities: 1 on every non-stacked axis."""
  return tuple(d if i in axes else 1 for i, d in enumerate(shape))


def slice_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
  """The shape of one slice: the stacked axes removed."""
  return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduced_axes(ndim: int, axes: Sequence[int]) -> tuple[int, ...]:
  """The axes a per-slice reduction runs over."""
  return tuple(i for i in range(ndim) if i not in axes)


def slice_struct(leaf: Any, axes: Sequence[int]) -> jax.ShapeDtypeStruct:
  """A ``jax.ShapeDtypeStruct`` of one slice, what ``group_fn`` is given."""
  return jax.ShapeDtypeStruct(slice_shape(np.shape(leaf), axes), leaf.dtype)


def slice_names(shape: Sequence[int], axes: Sequence[int]) -> list[str]:
  """Per slice, in row-major order, its index as ``'i'`` or ``'i/j'``."""
  stacked = [shape[a] for a in axes]
  return ['/'.join(str(i) for i in idx) for idx in np.ndindex(*stacked)] if axes else ['']


def num_slices(shape: Sequence[int], axes: Sequence[int]) -> int:
  return math.prod(shape[a] for a in axes)


def _names(path: tuple[Any, ...]) -> list[str]:
  return _paths.names(path)


def layers_under(name: str, axis: int | Sequence[int] = 0) -> LayerAxesFn:
  """``layer_axes`` for leaves stacked under a module named ``name``.

  Every leaf whose path has an entry equal to ``name`` is stacked along
  ``axis``; every other leaf is an ordinary one. This fits the common
  layouts:

  * Flax Linen ``nn.scan`` and NNX ``nnx.vmap`` + ``nnx.scan``: axis 0 of
    every leaf of the scanned module (``layers_under('layers')`` for a module
    attribute named ``layers``);
  * MaxText's ``param_scan_axis = 1``: ``layers_under('layers', axis=1)``;
  * ``nn.remat_scan`` with two levels: ``layers_under('layers', axis=(0, 1))``.

  A leaf under ``name`` with too few axes is an error (it names the leaf).

  Args:
    name: the path entry (dict key or attribute name) of the stacked module.
    axis: the stacked axis, or several.

  Returns:
    A callable ``(path, leaf) -> tuple[int, ...]`` for ``layer_axes``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> fn = optax_sbs.layers_under('layers')
    >>> fn(('layers', 'mlp', 'kernel'), jnp.zeros((4, 8, 16))), fn(('head',), jnp.zeros(3))
    ((0,), ())
  """
  axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
  if not isinstance(name, str):
    raise TypeError(f'layers_under: name must be a str, got {name!r}.')
  if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
    raise TypeError(f'layers_under: axis must be an int or a sequence of ints, got {axis!r}.')

  def layer_axes(path, leaf):
    del leaf
    return tuple(int(a) for a in axes) if name in _names(path) else ()

  return layer_axes


def layers_from_axis_names(axis_names: Any, name: str = 'layers') -> LayerAxesFn:
  """``layer_axes`` from logical axis names: the axes called ``name``.

  Models annotated with logical axis names (Flax Linen's
  ``nn.with_logical_partitioning``, NNX's ``sharding_names``/``sharding``
  metadata) already say which axis of each leaf indexes layers. Give the
  tree of names, e.g. ``nn.get_partition_spec(boxed_params)`` or
  ``nnx.get_partition_spec(nnx.state(model, nnx.Param))`` taken *before*
  the names are mapped to mesh axes, and every axis named ``name`` is a
  stacked axis. Leaves are matched by their path's names (a trailing
  ``value`` of an NNX variable is ignored); a leaf without names is an
  ordinary leaf.

  Args:
    axis_names: a pytree like the params whose leaves are tuples of axis
      names or ``jax.sharding.PartitionSpec``.
    name: the logical name of the layer axis.

  Returns:
    A callable ``(path, leaf) -> tuple[int, ...]`` for ``layer_axes``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> from jax.sharding import PartitionSpec as P
    >>> names = {'layers': {'kernel': P('layers', 'embed', 'mlp')}, 'head': P('embed', 'vocab')}
    >>> fn = optax_sbs.layers_from_axis_names(names)
    >>> fn(('layers', 'kernel'), jnp.zeros((4, 8, 16))), fn(('head',), jnp.zeros((8, 3)))
    ((0,), ())
  """

  def is_names(x):
    return isinstance(x, (tuple, jax.sharding.PartitionSpec)) and all(
      e is None or isinstance(e, (str, tuple)) for e in x
    )

  table: dict[tuple[str, ...], tuple[int, ...]] = {}
  for path, names in jax.tree_util.tree_flatten_with_path(axis_names, is_leaf=is_names)[0]:
    if not is_names(names):
      continue
    table[tuple(_names(path))] = tuple(
      i for i, n in enumerate(names) if n == name or (isinstance(n, tuple) and name in n)
    )

  def layer_axes(path, leaf):
    del leaf
    return table.get(tuple(_names(path)), ())

  return layer_axes


def slice_mean(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """float32 mean of ``x`` over each slice: a scalar, or the stacked axes'
  shape; 0 for a size-0 leaf."""
  if not x.size:
    return jnp.zeros(tuple(x.shape[a] for a in axes), jnp.float32)
  over = reduced_axes(x.ndim, axes) if axes else None
  return jnp.mean(x, axis=over, dtype=jnp.float32)


def split_slices(
  vector: jax.Array, leaves: Sequence[Any], axes: Sequence[tuple[int, ...]]
) -> list[jax.Array]:
  """Per leaf, its entries of ``vector``: a scalar, or an array of its
  statistics shape sharded like the leaf's stacked axes.

  ``vector`` has one entry per slice, leaves in order, the slices of a leaf
  in row-major order over its stacked axes. (Inside a step, the plan's
  ``_bundles.split_blocks`` reads the same entries with kernels compiled
  once per shape.)
  """
  out, start = [], 0
  for x, ax in zip(leaves, axes):
    shape = stat_shape(x.shape, ax) if ax else ()
    sharding = _sharding.keep_axes(_sharding.explicit_sharding(x), ax, x.ndim) if ax else None
    n = math.prod(shape)
    part = vector[start] if not shape else vector[start : start + n].reshape(shape)
    out.append(part if sharding is None else jax.sharding.reshard(part, sharding))
    start += n
  return out
