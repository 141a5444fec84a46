"""Mask granularity: which axes of a leaf a mask block keeps.

A mask *block* is what one draw decides: the mask varies along the axes a
block keeps and is constant along the others. Every granularity keeps a
stacked leaf's layer axes (a block never spans two layers) and adds:

* ``'element'``: every axis (one draw per element);
* ``'leaf'``: none (one draw per parameter tensor, or per layer of a stacked
  one);
* ``'column'`` / ``'row'``: for a leaf whose layers are matrices, the output
  (last) / input (first) axis of the layer: a block is a column of the
  kernel (the weights into one output unit) / a row (the weights out of one
  input unit). A layer of rank 0 or 1 is one block. For higher ranks (a
  convolution or attention kernel) which axis is the column is a choice:
  :func:`columns` and :func:`rows` take it from Optax's
  ``MuonDimensionNumbers`` (output axes kept for columns, reduction axes for
  rows), and a callable gives the kept axes directly;
* a callable ``(path, leaf) -> tuple[int, ...]``: the kept axes of each leaf.
"""

from collections.abc import Callable
import dataclasses
from typing import Any
from typing import Literal
from typing import TypeAlias

import jax
import numpy as np
from optax import contrib as optax_contrib

from optax_sbs import _layers
from optax_sbs import _paths

NAMES = ('element', 'leaf', 'column', 'row')
KeptAxesFn: TypeAlias = Callable[[tuple[Any, ...], Any], tuple[int, ...]]
DimensionNumbers: TypeAlias = (
  optax_contrib.MuonDimensionNumbers
  | Callable[[tuple[Any, ...], Any], optax_contrib.MuonDimensionNumbers | None]
  | None
)


@dataclasses.dataclass(frozen=True)
class MatrixBlocks:
  """Column or row blocks of matrices; see :func:`columns` and :func:`rows`.

  Attributes:
    kind: ``'column'`` or ``'row'``.
    dimension_numbers: a ``MuonDimensionNumbers``, a callable ``(path,
      leaf) -> MuonDimensionNumbers | None``, or None.
  """

  kind: Literal['column', 'row']
  dimension_numbers: DimensionNumbers = None


Granularity: TypeAlias = Literal['element', 'leaf', 'column', 'row'] | KeptAxesFn | MatrixBlocks


def columns(dimension_numbers: DimensionNumbers = None) -> MatrixBlocks:
  """``granularity``: one mask block per column of each layer's kernel.

  A column holds the weights into one output unit: the block keeps the
  output axis. ``granularity='column'`` is ``columns()``: a layer that is a
  matrix keeps its last axis, a layer of rank 0 or 1 is one block, and a
  layer of higher rank raises. Give Optax's ``MuonDimensionNumbers`` to say
  which axes are the output of such a leaf (the same numbers ``optax.contrib.muon``
  takes, in the leaf's own axes, a stacked leaf's layer axes included).

  Args:
    dimension_numbers: a ``MuonDimensionNumbers`` for every leaf whose
      layers have rank above 2 (matrices keep the rule above), or a callable
      ``(path, leaf) -> MuonDimensionNumbers | None`` for any leaf whose
      layers have rank 2 or more (None: the rule above), or None.

  Returns:
    A granularity for :func:`stochastic_batch_size`, :func:`masked_updates`
    and :func:`magma`.

  Examples:
    >>> import optax, optax_sbs
    >>> conv = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
    >>> tx = optax_sbs.masked_updates(
    ...     optax.adam(1e-3), key=0, granularity=optax_sbs.columns(conv))
  """
  return MatrixBlocks('column', _checked_dimension_numbers(dimension_numbers))


def rows(dimension_numbers: DimensionNumbers = None) -> MatrixBlocks:
  """``granularity``: one mask block per row of each layer's kernel.

  A row holds the weights out of one input unit: the block keeps the input
  (reduction) axis. ``granularity='row'`` is ``rows()``; see
  :func:`columns` for the rule and ``dimension_numbers``, whose reduction
  axes are kept here.

  Args:
    dimension_numbers: as for :func:`columns`.

  Returns:
    A granularity for :func:`stochastic_batch_size`, :func:`masked_updates`
    and :func:`magma`.
  """
  return MatrixBlocks('row', _checked_dimension_numbers(dimension_numbers))


def _checked_dimension_numbers(dimension_numbers: Any) -> DimensionNumbers:
  if (
    dimension_numbers is None
    or isinstance(dimension_numbers, optax_contrib.MuonDimensionNumbers)
    or callable(dimension_numbers)
  ):
    return dimension_numbers
  raise TypeError(
    'dimension_numbers must be an optax.contrib.MuonDimensionNumbers, a callable (path, leaf) '
    f'-> MuonDimensionNumbers | None, or None; got {dimension_numbers!r}.'
  )


def check(granularity: Any, who: str) -> None:
  """Raises unless ``granularity`` is a known name, a callable or :func:`columns` /
  :func:`rows`' value.

  Raises:
    ValueError: for an unknown name.
    TypeError: for anything else.
  """
  if isinstance(granularity, MatrixBlocks) or (
    callable(granularity) and not isinstance(granularity, str)
  ):
    return
  if isinstance(granularity, str) and granularity in NAMES:
    return
  error = ValueError if isinstance(granularity, str) else TypeError
  raise error(
    f'{who}: granularity must be one of {", ".join(repr(n) for n in NAMES)}, '
    f'optax_sbs.columns(...), optax_sbs.rows(...) or a callable (path, leaf) -> kept axes; '
    f'got {granularity!r}.'
  )


def is_element(granularity: Any) -> bool:
  return isinstance(granularity, str) and granularity == 'element'


def kept_axes(
  granularity: Granularity, path: tuple[Any, ...], leaf: Any, layer_axes: tuple[int, ...], who: str
) -> tuple[int, ...]:
  """The axes of ``leaf`` its mask blocks keep, increasing: its layer axes
  and those the granularity adds.

  Raises:
    TypeError: if a callable does not give a tuple of ints.
    ValueError: for an axis the leaf does not have, a repeated axis, or
      column / row blocks of a leaf whose layers are not matrices and whose
      dimension numbers are not given.
  """
  shape = tuple(np.shape(leaf))
  ndim = len(shape)
  if granularity == 'element':
    return tuple(range(ndim))
  if granularity == 'leaf':
    return tuple(layer_axes)
  where = 'the leaf at ' + (jax.tree_util.keystr(_paths.user_path(path)) or 'the root')
  if isinstance(granularity, str):
    granularity = MatrixBlocks(granularity)
  if isinstance(granularity, MatrixBlocks):
    added = _matrix_axes(granularity, path, leaf, layer_axes, where, who)
  else:
    added = _layers.normalize_axes(
      granularity(_paths.user_path(path), leaf), shape, where, who, 'granularity'
    )
  return tuple(sorted(set(layer_axes) | set(added)))


def _matrix_axes(blocks, path, leaf, layer_axes, where, who):
  shape = tuple(np.shape(leaf))
  rest = [d for d in range(len(shape)) if d not in layer_axes]
  numbers = blocks.dimension_numbers
  if isinstance(numbers, optax_contrib.MuonDimensionNumbers) and len(rest) <= 2:
    numbers = None  # one for every leaf: for those whose layers are not matrices
  elif numbers is not None and not isinstance(numbers, optax_contrib.MuonDimensionNumbers):
    numbers = numbers(_paths.user_path(path), leaf)
    if numbers is not None and not isinstance(numbers, optax_contrib.MuonDimensionNumbers):
      raise TypeError(
        f'{who}: dimension_numbers must give a MuonDimensionNumbers or None for every leaf; '
        f'for {where} it gave {numbers!r}.'
      )
  if numbers is not None and len(rest) >= 2:
    axes = numbers.output_axis if blocks.kind == 'column' else numbers.reduction_axis
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    return _layers.normalize_axes(axes, shape, where, who, 'dimension_numbers')
  if len(rest) <= 1:
    return ()
  if len(rest) == 2:
    return (rest[-1],) if blocks.kind == 'column' else (rest[0],)
  raise ValueError(
    f'{who}: granularity={blocks.kind!r} keeps the {"output" if blocks.kind == "column" else "input"}'
    f' axis of a matrix, but the layers of {where} (shape {shape}, layer axes '
    f'{tuple(layer_axes)}) have {len(rest)} axes: say which to keep with '
    f'optax_sbs.{blocks.kind}s(optax.contrib.MuonDimensionNumbers(...)) or a callable '
    '(path, leaf) -> kept axes.'
  )


def tree_kept_axes(
  granularity: Granularity,
  flat: Any,
  layer_axes: Any,
  who: str,
) -> list[tuple[int, ...]] | None:
  """Per ``(path, leaf)`` of a flattened tree, the axes its blocks keep
  (``layer_axes``: per leaf, its layer axes); None per element."""
  if is_element(granularity):
    return None
  return [kept_axes(granularity, path, x, ax, who) for (path, x), ax in zip(flat, layer_axes)]
