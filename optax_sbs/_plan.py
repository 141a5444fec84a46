"""The plan of a step: each leaf's layout, decided once per trace.

Every transformation of the family does its per-layer work (statistics,
probabilities, masks, Magma's scores) through one :class:`Plan`, built at
trace time from static facts only: each leaf's path, shape, dtype, sharding
and layer axes, and the mask granularity. The words used throughout:

* a *layer* is a slice of a stacked leaf along its layer axes (``nn.scan`` /
  ``nnx.scan``); an ordinary leaf is one layer. Per-layer quantities of a
  leaf live in its *statistics shape* (the layer axes' sizes, 1 elsewhere).
* a *group* is one of ``group_fn``'s parameter groups (``_groups``): the
  layers whose mean magnitudes are compared by the global term.
* a *block* is what one mask draw decides: an element, a layer
  (``granularity='leaf'``), a column or row of a layer's kernel, or any
  part the granularity names by the axes a block keeps (``_granularity``).
  A leaf's blocks take consecutive places in the step's random stream,
  after the blocks of the leaves before it in ``jax.tree.leaves`` order,
  in row-major order over its block grid.
* a *bundle* is a set of leaves computed in one call because they share a
  shape, dtype, sharding and layer axes (``_bundles``): it changes what XLA
  compiles, never a value.
"""

from collections.abc import Hashable
from collections.abc import Sequence
import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_sbs import _layers
from optax_sbs import _sharding

# Leaves (or block grids) of at most this many elements are bundled with the
# others of their kind. A larger one is computed alone: a bundle is a copy
# (and a temporary as large as its leaves), which costs more step time than
# the leaf's own kernels cost to compile.
MAX_BUNDLED_SIZE = 1 << 16


def compute_dtype(dtype: Any) -> Any:
  """The dtype the family computes a leaf's statistics and states in:
  float32, or the leaf's dtype if it is wider (float64)."""
  return jnp.promote_types(dtype, jnp.float32)


@dataclasses.dataclass(frozen=True)
class LeafLayout:
  """One leaf as the step sees it.

  Attributes:
    shape: the leaf's shape.
    dtype: the dtype its statistics are computed in.
    sharding: its explicit sharding, or None (see ``_sharding``).
    layer_axes: the axes that index stacked layers, increasing (``()``: none).
    first_layer: the index of its first layer among all leaves' layers.
    num_layers: how many layers it holds (1 for an ordinary leaf).
    block_axes: the axes its mask blocks keep (the mask varies along them):
      every axis per element, the layer axes per layer, the layer axes and
      one more per column or row.
    block_shape: the shape of its grid of mask blocks: the leaf's shape with
      1 on every axis a block spans (``()`` when a block is the whole leaf).
    block_sharding: the sharding of that grid, or None.
    offset: the place of its first block in the step's random stream.
  """

  shape: tuple[int, ...]
  dtype: Any
  sharding: Any
  layer_axes: tuple[int, ...]
  first_layer: int
  num_layers: int
  block_axes: tuple[int, ...]
  block_shape: tuple[int, ...]
  block_sharding: Any
  offset: int

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def stats_shape(self) -> tuple[int, ...]:
    """The shape of per-layer quantities (``()`` for an ordinary leaf)."""
    return _layers.stat_shape(self.shape, self.layer_axes) if self.layer_axes else ()

  @property
  def stats_sharding(self) -> Any:
    """The sharding of per-layer quantities: the leaf's, on its layer axes."""
    if not self.layer_axes:
      return None
    return _sharding.keep_axes(self.sharding, self.layer_axes, len(self.shape))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The layout of every leaf of a step, and its bundles.

  Attributes:
    leaves: per leaf, in ``jax.tree.leaves`` order, its layout.
    bundles: the leaves computed together (statistics, probabilities, masks
      drawn from per-element probabilities): positions of one shape, dtype,
      sharding, layer axes and block axes, ordered by first position. A leaf larger than
      ``MAX_BUNDLED_SIZE`` is a bundle of its own; a size-0 leaf is in none.
    block_bundles: the leaves whose block grids are handled together
      (masks drawn at one fixed probability, per-block vectors split into
      leaves): positions whose grids share a shape and sharding, by the same
      rule.
    num_layers: the layers of all leaves.
    num_blocks: the blocks of all leaves: the length of the random stream.
  """

  leaves: tuple[LeafLayout, ...]
  bundles: tuple[tuple[int, ...], ...]
  block_bundles: tuple[tuple[int, ...], ...]
  num_layers: int
  num_blocks: int

  def __len__(self) -> int:
    return len(self.leaves)


def bundle(keys: Sequence[Hashable], sizes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
  """Positions with equal keys, ordered by first position: the one rule of a
  bundle. A position of size above ``MAX_BUNDLED_SIZE`` is alone; one of
  size 0 is in no bundle."""
  bundles: dict[Hashable, list[int]] = {}
  for i, (key, size) in enumerate(zip(keys, sizes)):
    if size == 0:
      continue
    bundles.setdefault(key if size <= MAX_BUNDLED_SIZE else ('alone', i), []).append(i)
  return tuple(tuple(b) for b in bundles.values())


def build(
  leaves: Sequence[Any],
  layer_axes: Sequence[tuple[int, ...]] | None = None,
  block_axes: Sequence[tuple[int, ...]] | None = None,
  dtypes: Sequence[Any] | None = None,
) -> Plan:
  """The plan of a step over ``leaves`` (arrays, tracers or
  ``jax.ShapeDtypeStruct``s: only their shapes, dtypes and shardings are read).

  Args:
    leaves: per leaf, an array-like.
    layer_axes: per leaf, its validated layer axes, or None for none.
    block_axes: per leaf, the validated axes its mask blocks keep
      (``_granularity.kept_axes``), or None for every axis (one block per
      element).
    dtypes: per leaf, the dtype its statistics are computed in (default:
      the leaf's).

  Returns:
    The :class:`Plan`.
  """
  if layer_axes is None:
    layer_axes = [()] * len(leaves)
  if dtypes is None:
    dtypes = [x.dtype for x in leaves]
  if block_axes is None:
    block_axes = [tuple(range(np.ndim(x))) for x in leaves]
  layouts = []
  first_layer = offset = 0
  for x, axes, kept, dtype in zip(leaves, layer_axes, block_axes, dtypes):
    shape = tuple(np.shape(x))
    sharding = _sharding.explicit_sharding(x)
    num_layers = _layers.num_slices(shape, axes) if axes else 1
    kept = tuple(kept)
    if len(kept) == len(shape):
      block_shape, block_sharding = shape, sharding
    elif kept:
      block_shape = tuple(n if d in kept else 1 for d, n in enumerate(shape))
      block_sharding = _sharding.keep_axes(sharding, kept, len(shape))
    else:
      block_shape, block_sharding = (), None
    layouts.append(
      LeafLayout(
        shape=shape,
        dtype=jnp.dtype(dtype),
        sharding=sharding,
        layer_axes=tuple(axes),
        first_layer=first_layer,
        num_layers=num_layers,
        block_axes=kept,
        block_shape=block_shape,
        block_sharding=block_sharding,
        offset=offset,
      )
    )
    first_layer += num_layers
    offset += math.prod(block_shape)
  bundles = bundle(
    [(x.shape, x.dtype, x.sharding, x.layer_axes, x.block_axes) for x in layouts],
    [x.size for x in layouts],
  )
  block_bundles = bundle(
    [(x.block_shape, x.block_sharding) for x in layouts],
    [math.prod(x.block_shape) for x in layouts],
  )
  return Plan(tuple(layouts), bundles, block_bundles, first_layer, offset)


def tree_layer_axes(
  layer_axes: Any, flat: Sequence[tuple[Any, Any]], who: str
) -> list[tuple[int, ...]]:
  """Per ``(path, leaf)`` of a flattened tree, its validated layer axes
  (``layer_axes``: the user's callable, or None)."""
  return [_layers.leaf_axes(layer_axes, path, leaf, who) for path, leaf in flat]
