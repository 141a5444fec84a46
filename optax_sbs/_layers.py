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
from collections.abc import Mapping
from collections.abc import Sequence
import math
from typing import Any
import warnings

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


def _checked_names(name: Any, who: str) -> tuple[str, ...]:
  names = (name,) if isinstance(name, str) else name
  if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
    raise TypeError(f'{who}: name must be a str or a tuple of str, got {name!r}.')
  if not names:
    raise ValueError(f'{who}: name is an empty tuple: give at least one name.')
  return names


def _checked_num_layers(num_layers: Any, names: tuple[str, ...], who: str) -> Any:
  """``num_layers`` checked: None, a positive int, or a mapping from some of
  ``names`` to positive ints."""
  if num_layers is None:
    return None
  counts = dict(num_layers) if isinstance(num_layers, Mapping) else {None: num_layers}
  for name, count in counts.items():
    if name is not None and name not in names:
      raise ValueError(f'{who}: num_layers names {name!r}, which is not one of the names {names}.')
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
      raise TypeError(
        f'{who}: num_layers must be a positive int, a mapping of names to them, or None; '
        f'got {num_layers!r}.'
      )
    if count < 1:
      raise ValueError(
        f'{who}: num_layers must be a positive int, got {count}'
        + (f' for {name!r}.' if name else '.')
      )
  return {k: int(v) for k, v in counts.items()}


class _LayerHelper:
  """A ``layer_axes`` callable that knows the names it looks for.

  The transformations' ``init`` asks :meth:`matches` of every parameter and
  warns (once) when no parameter matches: a misspelt name would otherwise
  make every stack one layer.
  """

  def __init__(self, who: str, names: tuple[str, ...], num_layers: dict | None):
    self.who, self.names, self.num_layers = who, names, num_layers
    self.warned = False

  def match(self, path: tuple[Any, ...]) -> tuple[tuple[int, ...], str] | None:
    """The layer axes of the parameter at ``path`` and the name that
    matched, or None if it is not one this helper names."""
    raise NotImplementedError

  def matches(self, path: tuple[Any, ...]) -> bool:
    return self.match(path) is not None

  def _counts_repr(self) -> str:
    if self.num_layers is None:
      return ''
    if list(self.num_layers) == [None]:
      return f', num_layers={self.num_layers[None]}'
    return f', num_layers={self.num_layers}'

  def __call__(self, path: tuple[Any, ...], leaf: Any) -> tuple[int, ...]:
    found = self.match(path)
    if found is None:
      return ()
    axes, name = found
    expected = None
    if self.num_layers is not None:
      expected = self.num_layers.get(name, self.num_layers.get(None))
    shape = tuple(np.shape(leaf))
    where = 'the leaf at ' + (jax.tree_util.keystr(_paths.user_path(path)) or 'the root')
    for a in axes:
      if not -len(shape) <= a < len(shape):
        raise ValueError(
          f'{self!r}: axis {a} is out of range for {where}, of shape {shape} ({len(shape)} axes).'
        )
    if expected is not None and math.prod(shape[a] for a in axes) != expected:
      sizes = ', '.join(f'{shape[a]} along axis {a % len(shape)}' for a in axes)
      raise ValueError(
        f'{self!r}: {where} (shape {shape}) has {sizes}, not {expected} layers: its '
        "layer axis is another one (MaxText stacks on axis 1, Flax's nn.scan on axis 0)."
      )
    return axes

  def warn_if_unmatched(self, paths: Sequence[tuple[Any, ...]], who: str) -> None:
    """Warns, once per helper, if no parameter of ``paths`` matches."""
    if self.warned or not paths or any(self.matches(p) for p in paths):
      return
    self.warned = True
    warnings.warn(
      f'{who}: layer_axes={self!r} matches no parameter, so no parameter is stacked: every '
      'stack is one layer. Check the name against the parameter paths (e.g. '
      f'{"/".join(_names(paths[0]))!r}).',
      UserWarning,
      stacklevel=5,
    )


class _LayersUnder(_LayerHelper):
  def __init__(self, names, axes, num_layers):
    super().__init__('layers_under', names, num_layers)
    self.stacked = axes

  def match(self, path):
    name = next((n for n in _names(path) if n in self.names), None)
    return None if name is None else (self.stacked, name)

  def __repr__(self):
    name = self.names[0] if len(self.names) == 1 else self.names
    axis = self.stacked[0] if len(self.stacked) == 1 else self.stacked
    return f'layers_under({name!r}, axis={axis!r}{self._counts_repr()})'


class _LayersFromAxisNames(_LayerHelper):
  def __init__(self, table, names, num_layers):
    super().__init__('layers_from_axis_names', names, num_layers)
    self.table = table

  def match(self, path):
    return self.table.get(tuple(_names(path)))

  def __repr__(self):
    name = self.names[0] if len(self.names) == 1 else self.names
    return f'layers_from_axis_names(..., name={name!r}{self._counts_repr()})'


def warn_if_unmatched(layer_axes: Any, paths: Sequence[tuple[Any, ...]], who: str) -> None:
  """Warns once if ``layer_axes`` is one of this module's helpers and names
  no parameter of ``paths``."""
  if isinstance(layer_axes, _LayerHelper):
    layer_axes.warn_if_unmatched(paths, who)


def layers_under(
  name: str | tuple[str, ...],
  axis: int | Sequence[int] = 0,
  num_layers: int | Mapping[str, int] | None = None,
) -> LayerAxesFn:
  """``layer_axes`` for leaves stacked under a module named ``name``.

  Every leaf whose path has an entry equal to ``name`` (or to one of
  several names) is stacked along ``axis``; every other leaf is an ordinary
  one. This fits the common layouts:

  * Flax Linen ``nn.scan`` and NNX ``nnx.vmap`` + ``nnx.scan``: axis 0 of
    every leaf of the scanned module (``layers_under('layers')`` for a module
    attribute named ``layers``);
  * MaxText (``param_scan_axis = 1``, its default): axis 1,
    ``layers_under('layers', axis=1)``; DeepSeek-style models stack two
    modules, ``layers_under(('dense_layers', 'moe_layers'), axis=1)``;
  * ``nn.remat_scan`` with two levels: ``layers_under('layers', axis=(0, 1))``.

  A wrong axis is silent unless the helper knows how many layers there are:
  with ``num_layers``, a matched leaf whose stacked axes hold another number
  of layers raises, naming the leaf and its axes. A name that matches no
  parameter warns once, from the transformation's ``init``.

  Args:
    name: the path entry (dict key or attribute name) of the stacked module,
      or a tuple of such names.
    axis: the stacked axis, or several.
    num_layers: the number of layers (the product of the stacked axes'
      sizes), checked on every matched leaf; a mapping from names to
      numbers for stacks of different lengths (``{'dense_layers': 3,
      'moe_layers': 58}``); None: not checked.

  Returns:
    A callable ``(path, leaf) -> tuple[int, ...]`` for ``layer_axes``.

  Raises:
    TypeError / ValueError: for a name that is not a str or a non-empty
      tuple of str, an axis that is not an int, or a ``num_layers`` that is
      not a positive int; ValueError (when called) for an axis a matched
      leaf does not have, or a number of layers other than ``num_layers``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> fn = optax_sbs.layers_under('layers')
    >>> fn(('layers', 'mlp', 'kernel'), jnp.zeros((4, 8, 16))), fn(('head',), jnp.zeros(3))
    ((0,), ())
    >>> maxtext = optax_sbs.layers_under('layers', axis=1, num_layers=4)
    >>> maxtext(('decoder', 'layers', 'mlp', 'wo', 'kernel'), jnp.zeros((16, 4, 8)))
    (1,)
  """
  who = 'layers_under'
  names = _checked_names(name, who)
  axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
  if not axes or not all(
    isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
  ):
    raise TypeError(f'{who}: axis must be an int or a non-empty sequence of ints, got {axis!r}.')
  return _LayersUnder(
    names, tuple(int(a) for a in axes), _checked_num_layers(num_layers, names, who)
  )


def layers_from_axis_names(
  axis_names: Any,
  name: str | tuple[str, ...] = 'layers',
  num_layers: int | Mapping[str, int] | None = None,
) -> LayerAxesFn:
  """``layer_axes`` from logical axis names: the axes called ``name``.

  Models annotated with logical axis names (Flax Linen's
  ``nn.with_logical_partitioning``, NNX's ``sharding_names``/``sharding``
  metadata, MaxText) already say which axis of each leaf indexes layers.
  Give the tree of names, e.g. ``nn.get_partition_spec(boxed_params)`` or
  ``nnx.get_partition_spec(nnx.state(model, nnx.Param))`` taken *before*
  the names are mapped to mesh axes (for a MaxText model, as it comes), and
  every axis named ``name`` (or one of several names: DeepSeek-style
  MaxText models name ``dense_layers`` and ``moe_layers``) is a stacked
  axis. Leaves are matched by their path's names (a trailing ``value`` of an
  NNX variable is ignored); a leaf without names is an ordinary leaf. A
  name found on no axis warns once, from the transformation's ``init``.

  Args:
    axis_names: a pytree like the params whose leaves are tuples of axis
      names or ``jax.sharding.PartitionSpec`` (Flax NNX variables holding
      them too).
    name: the logical name of the layer axis, or a tuple of names.
    num_layers: the number of layers, checked on every matched leaf, or a
      mapping from names to numbers; None: not checked.

  Returns:
    A callable ``(path, leaf) -> tuple[int, ...]`` for ``layer_axes``.

  Raises:
    TypeError / ValueError: for a bad ``name`` or ``num_layers`` (as
      :func:`layers_under`); ValueError (when called) for a number of layers
      other than ``num_layers``.

  Examples:
    >>> import jax.numpy as jnp, optax_sbs
    >>> from jax.sharding import PartitionSpec as P
    >>> names = {'layers': {'kernel': P('embed', 'layers', 'mlp')}, 'head': P('embed', 'vocab')}
    >>> fn = optax_sbs.layers_from_axis_names(names)
    >>> fn(('layers', 'kernel'), jnp.zeros((8, 4, 16))), fn(('head',), jnp.zeros((8, 3)))
    ((1,), ())
  """
  who = 'layers_from_axis_names'
  names = _checked_names(name, who)

  def is_names(x):
    return isinstance(x, (tuple, jax.sharding.PartitionSpec)) and all(
      e is None or isinstance(e, (str, tuple)) for e in x
    )

  def unboxed(x):
    return x.get_value() if callable(getattr(type(x), 'get_value', None)) else x

  def is_leaf(x):
    return is_names(x) or is_names(unboxed(x))

  table: dict[tuple[str, ...], tuple[tuple[int, ...], str]] = {}
  for path, entry in jax.tree_util.tree_flatten_with_path(axis_names, is_leaf=is_leaf)[0]:
    entry = unboxed(entry)
    if not is_names(entry):
      continue
    axes, matched = [], None
    for i, n in enumerate(entry):
      found = [x for x in (n if isinstance(n, tuple) else (n,)) if x in names]
      if found:
        axes.append(i)
        matched = matched or found[0]
    if matched is not None:
      table[tuple(_names(path))] = (tuple(axes), matched)
  return _LayersFromAxisNames(table, names, _checked_num_layers(num_layers, names, who))


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
