"""Sharded parameters on 8 CPU devices, for every transformation the library exports.

Tests:
  * JAX's explicit sharding mode (``jax.set_mesh`` over a 2x4 ``('data', 'fsdp')``
    mesh of ``AxisType.Explicit`` axes) and the default mode (``Auto`` axes,
    arrays placed with ``NamedSharding``, FSDP-style): ``init`` (eager) and
    jitted updates run; the state's types (``jax.typeof``, sharding included)
    are the same after an update as after ``init``; per-parameter state leaves
    and updates are sharded like their params; values equal the single-device
    run.
  * The compiled update of a large leaf sharded 8 ways draws the random bits
    of each shard on its own device: no full-size array and no collective
    beyond the adaptive rule's global statistics, in both modes.
  * Flax NNX's FSDP pattern (``nnx.with_partitioning``, ``nnx.Optimizer``,
    ``nnx.get_partition_spec``, a jitted sharded state, ``nnx.jit`` step).
  * Orbax checkpoints written on the 2x4 mesh and restored on one device and
    on a 4-device mesh continue exactly as the original run.
"""

from collections.abc import Callable
import contextlib
import functools
import inspect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.sharding import SingleDeviceSharding
import numpy as np
import optax
import pytest

import optax_sbs

NUM_DEVICES = 8
STEPS = 2

pytestmark = pytest.mark.skipif(
  jax.device_count() < NUM_DEVICES,
  reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8',
)

_RNG = np.random.default_rng(0)
PARAMS = {
  'dense': {
    'kernel': _RNG.standard_normal((16, 32)).astype(np.float32),
    'bias': _RNG.standard_normal(32).astype(np.float32),
  },
  'norm': {'scale': _RNG.standard_normal(4).astype(np.float32)},
  'temperature': np.float32(0.5),
}
SPECS = {
  'dense': {'kernel': P(None, 'fsdp'), 'bias': P('fsdp')},
  'norm': {'scale': P()},
  'temperature': P(),
}


def _value_fn(params):
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(params))


class Member(NamedTuple):
  """A family member: how to build it, and what to expect of it."""

  factory: Callable[[], optax.GradientTransformation]
  copies: int  # per-parameter leaves of its state per parameter
  adaptive: bool = False  # SBS's adaptive rule: statistics across shards
  # Entropy-SGD scales by gamma, then by -lr: XLA folds the two constants
  # into one on one device, not in the partitioned explicit-mode program.
  explicit_rtol: float = 0.0


# Every export, with both probabilities of SBS and both granularities of the
# masking methods. Entropy-SGD runs 2 inner steps (compile time).
FAMILY = {
  'sbs_adaptive': Member(lambda: optax_sbs.sbs(1e-2, key=0, momentum=0.9), 3, True),
  'sbs_fixed': Member(lambda: optax_sbs.sbs(1e-2, key=0, momentum=0.9, probability=0.5), 3),
  'stochastic_batch_size': Member(
    lambda: optax.chain(optax_sbs.stochastic_batch_size(0), optax.sgd(1e-2)), 2, True
  ),
  'with_stochastic_batch_size': Member(
    lambda: optax_sbs.with_stochastic_batch_size(optax.adam(1e-2), key=0), 4, True
  ),
  'masked_updates_element': Member(
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0, granularity='element'), 2
  ),
  'masked_updates_leaf': Member(
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0, granularity='leaf'), 2
  ),
  'magma_leaf': Member(lambda: optax_sbs.magma(optax.adam(1e-2), key=0), 3),
  'magma_element': Member(
    lambda: optax_sbs.magma(optax.adam(1e-2), key=0, granularity='element'), 4
  ),
  'baselines.accelerated_sgd': Member(lambda: optax_sbs.baselines.accelerated_sgd(1e-2), 1),
  'baselines.entropy_sgd': Member(
    lambda: optax_sbs.baselines.entropy_sgd(1e-2, key=0, num_inner_steps=2), 0, False, 1e-6
  ),
  'baselines.scale_by_entropy_sgd': Member(
    lambda: optax.chain(
      optax_sbs.baselines.scale_by_entropy_sgd(0, num_inner_steps=2), optax.sgd(1e-2)
    ),
    0,
    False,
    1e-6,
  ),
}


def _export_of(member):
  """The exported function a family member is built with."""
  name = member.split('.')[-1]
  for suffix in ('_adaptive', '_fixed', '_element', '_leaf'):
    name = name.removesuffix(suffix)
  return name


def _exported_transformations():
  """The exports that return an Optax transformation (their annotation says so)."""
  found = set()
  for module in (optax_sbs, optax_sbs.baselines):
    for name in module.__all__:
      fn = getattr(module, name)
      if inspect.isfunction(fn) and inspect.signature(fn).return_annotation in (
        optax.GradientTransformation,
        optax.GradientTransformationExtraArgs,
      ):
        found.add(name)
  return found


def test_family_covers_every_exported_transformation():
  assert {_export_of(m) for m in FAMILY} == _exported_transformations()


# Meshes, shardings and the comparison of runs.


def make_mesh(axis_type, shape=(2, 4), devices=None):
  devices = jax.devices()[: math.prod(shape)] if devices is None else devices
  return Mesh(
    np.asarray(devices).reshape(shape), ('data', 'fsdp'), axis_types=(axis_type,) * len(shape)
  )


def full_spec(spec, ndim):
  """``spec`` padded with ``None`` to ``ndim`` entries (``P('a')`` is ``P('a', None)``)."""
  return tuple(spec) + (None,) * (ndim - len(spec))


def param_shardings(mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS)


def dyadic_grads(step):
  """Gradients of small multiples of 1/64: sums and means of them are exact."""
  rng = np.random.default_rng(100 + step)
  return jax.tree.map(
    lambda p: (np.round(rng.standard_normal(np.shape(p)) * 32) / 64).astype(np.float32), PARAMS
  )


def jitted_update(tx):
  return jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=_value_fn))


def per_parameter(tx, state, params, fn):
  """``[fn(path, leaf, param)]`` over the per-parameter leaves of ``state``
  (as ``optax.tree.map_params`` finds them); other leaves go to ``fn`` with
  ``param=None``."""
  out = []
  optax.tree.map_params(
    tx,
    lambda leaf, param: out.append(fn(leaf, param)) or leaf,
    state,
    params,
    transform_non_params=lambda leaf: out.append(fn(leaf, None)) or leaf,
  )
  return out


def numeric(tree):
  """Leaves as numpy arrays, typed keys as their data."""
  return [np.asarray(x) for x in jax.tree.leaves(optax_sbs.key_data_tree(tree))]


def assert_same_run(got, want, adaptive=False, rtol=0.0):
  """Leafwise equality; ``rtol`` allows XLA's differently folded constants.

  For the adaptive rule, whose statistics are means across shards, a
  reduction order could round differently: first check the results are close
  with almost all masks (integer counts) equal, then that they are in fact
  equal bit for bit, as they are here.
  """
  got, want = numeric(got), numeric(want)
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert a.shape == b.shape and a.dtype == b.dtype
    if adaptive and jnp.issubdtype(a.dtype, jnp.inexact):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    elif adaptive:
      assert np.mean(a != b) < 1e-3, 'masks differ beyond rounding of p'
  for a, b in zip(got, want):
    if rtol and jnp.issubdtype(a.dtype, jnp.inexact):
      np.testing.assert_allclose(a, b, rtol=rtol, atol=0)
    else:
      np.testing.assert_array_equal(a, b)


@functools.cache
def single_device_run(name):
  """Per step, (updates, state) of ``FAMILY[name]`` on the default device."""
  tx = FAMILY[name][0]()
  update = jitted_update(tx)
  state, out = tx.init(PARAMS), []
  for step in range(STEPS):
    updates, state = update(dyadic_grads(step), state, PARAMS)
    out.append((updates, state))
  return out


def spec_of(x):
  """The full partition spec of ``x``: from its type in explicit mode, else from
  its placement (an array on one device counts as replicated)."""
  sharding = jax.typeof(x).sharding
  if not (
    isinstance(sharding, NamedSharding)
    and any(t == AxisType.Explicit for t in sharding.mesh.axis_types)
  ):
    sharding = x.sharding
  if isinstance(sharding, SingleDeviceSharding):
    return (None,) * x.ndim
  return full_spec(sharding.spec, x.ndim)


def assert_laid_out_like_params(tx, state, params):
  """Per-parameter leaves of ``state`` sharded like their param, others
  replicated; returns the number of per-parameter leaves."""

  def check(leaf, param):
    want = (None,) * leaf.ndim if param is None else spec_of(param)
    assert spec_of(leaf) == want, (leaf.shape, spec_of(leaf), want)
    return param is not None

  return sum(per_parameter(tx, state, params, check))


def layout(tree):
  """Per leaf, its type (with the sharding in explicit mode) and full spec."""
  return jax.tree.map(lambda x: (jax.typeof(x), spec_of(x)), tree)


# 1 and 3: explicit and default (FSDP) modes on the 2x4 mesh.


@pytest.mark.parametrize('mode', [AxisType.Explicit, AxisType.Auto], ids=['explicit', 'auto'])
@pytest.mark.parametrize('name', sorted(FAMILY))
def test_sharded_updates_equal_single_device(name, mode):
  member = FAMILY[name]
  tx = member.factory()
  mesh = make_mesh(mode)
  explicit = mode == AxisType.Explicit
  with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
    params = jax.device_put(PARAMS, param_shardings(mesh))
    state = tx.init(params)  # eagerly, on sharded params
    assert assert_laid_out_like_params(tx, state, params) == member.copies * len(
      jax.tree.leaves(PARAMS)
    )
    types = layout(state)
    update = jitted_update(tx)
    for step, want in enumerate(single_device_run(name)):
      grads = jax.device_put(dyadic_grads(step), param_shardings(mesh))
      updates, state = update(grads, state, params)
      assert layout(state) == types
      assert assert_laid_out_like_params(tx, state, params) == member.copies * len(
        jax.tree.leaves(PARAMS)
      )
      assert [spec_of(u) for u in jax.tree.leaves(updates)] == [
        spec_of(p) for p in jax.tree.leaves(params)
      ]
      rtol = member.explicit_rtol if explicit else 0.0
      assert_same_run((updates, state), want, member.adaptive, rtol)
