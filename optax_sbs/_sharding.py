"""Shardings of the arrays the optimizers create, for JAX's explicit mode.

Under ``jax.set_mesh`` with ``AxisType.Explicit`` axes every array's type
carries its sharding, and elementwise ops need operands sharded alike. The
masks and counters created here from nothing (iotas) must therefore be
created with the sharding of the leaf they belong to. In the default mode
(no mesh, or ``Auto`` axes) the compiler propagates shardings itself and
these helpers return ``None``: nothing changes there.
"""

from collections.abc import Callable
from collections.abc import Sequence
import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec


def explicit_sharding(x: Any) -> NamedSharding | None:
  """The sharding in the type of ``x`` if it names explicit mesh axes, else None."""
  try:
    sharding = jax.typeof(x).sharding
  except (TypeError, AttributeError):
    return None
  if not isinstance(sharding, NamedSharding):
    return None
  mesh = sharding.mesh
  if not any(t == AxisType.Explicit for t in getattr(mesh, 'axis_types', ())):
    return None
  if all(entry is None for entry in sharding.spec):
    return None
  return sharding


def keep_axes(sharding: NamedSharding | None, axes: Sequence[int], ndim: int) -> Any:
  """``sharding`` restricted to ``axes``: the others become unsharded (size 1)."""
  if sharding is None:
    return None
  spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
  kept = PartitionSpec(*(spec[d] if d in axes else None for d in range(ndim)))
  if all(entry is None for entry in kept):
    return None
  return NamedSharding(sharding.mesh, kept)


def broadcast_like(x: jax.Array, like: jax.Array) -> jax.Array:
  """``x`` broadcast to the shape of ``like``, sharded like it in explicit mode."""
  if jnp.ndim(x) == 0 or jnp.shape(x) == jnp.shape(like):
    return x
  sharding = explicit_sharding(like)
  if sharding is None:
    return jnp.broadcast_to(x, jnp.shape(like))
  return jnp.broadcast_to(x, jnp.shape(like), out_sharding=sharding)


def replicated(x: jax.Array) -> jax.Array:
  """``x`` resharded to replicated in explicit mode (small vectors of
  per-layer statistics), unchanged otherwise."""
  sharding = explicit_sharding(x)
  if sharding is None:
    return x
  return jax.sharding.reshard(x, PartitionSpec())


def under_leaf_mesh(update_fn: Callable[..., Any]) -> Callable[..., Any]:
  """Runs ``update_fn`` under the mesh of its explicitly sharded updates when
  it is called eagerly outside ``jax.set_mesh``.

  Arrays created with a sharding (the masks' counters) need the mesh in
  context; jitted code and code inside ``jax.set_mesh`` have it already.
  """

  @functools.wraps(update_fn)
  def wrapped(updates, state, params=None, **extra_args):
    context: Any = contextlib.nullcontext()
    if jax.sharding.get_abstract_mesh().empty:
      for leaf in jax.tree.leaves(updates):
        if not isinstance(leaf, jax.core.Tracer) and explicit_sharding(leaf) is not None:
          context = jax.set_mesh(leaf.sharding.mesh)
          break
    with context:
      return update_fn(updates, state, params, **extra_args)

  return wrapped
