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
import re
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.sharding import SingleDeviceSharding
import numpy as np
import optax
import orbax.checkpoint as ocp
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
  'temperature': np.float32(0.5),
}
SPECS = {
  'dense': {'kernel': P(None, 'fsdp'), 'bias': P('fsdp')},
  'temperature': P(),
}
ONE_DEVICE = SingleDeviceSharding(jax.devices()[0])


def _value_fn(params):
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(params))


class Member(NamedTuple):
  """A family member: how to build it, and what to expect of it."""

  factory: Callable[[], optax.GradientTransformation]
  copies: int  # per-parameter leaves of its state per parameter
  # Sums across shards: SBS's adaptive statistics, Magma's per-leaf cosines.
  reduces: bool = False
  # Entropy-SGD scales by gamma, then by -lr: XLA folds the two constants
  # into one in some programs, not in others (the last bits differ; more of
  # them under jax 0.12's XLA than 0.10's).
  rtol: float = 0.0


# Every export, with both probabilities of SBS and both granularities of the
# masking methods. Entropy-SGD runs 2 inner steps, or 1 (compile time).
FAMILY = {
  'sbs_adaptive': Member(lambda: optax_sbs.sbs(1e-2, key=0, momentum=0.9), 3, True),
  'sbs_fixed': Member(lambda: optax_sbs.sbs(1e-2, key=0, momentum=0.9, probability=0.5), 3),
  'stochastic_batch_size': Member(
    lambda: optax.chain(optax_sbs.stochastic_batch_size(0), optax.sgd(1e-2)), 2, True
  ),
  'with_stochastic_batch_size': Member(
    lambda: optax_sbs.with_stochastic_batch_size(optax.adam(1e-2), key=0, probability=0.5), 4
  ),
  'masked_updates_element': Member(
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0, granularity='element'), 2
  ),
  'masked_updates_leaf': Member(
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0, granularity='leaf'), 2
  ),
  'magma_leaf': Member(lambda: optax_sbs.magma(optax.adam(1e-2), key=0), 3, True),
  'magma_element': Member(
    lambda: optax_sbs.magma(optax.adam(1e-2), key=0, granularity='element'), 4
  ),
  'sbs_column': Member(lambda: optax_sbs.sbs(1e-2, key=0, granularity='column'), 2, True),
  'masked_updates_row': Member(
    lambda: optax_sbs.masked_updates(optax.adamw(1e-2), key=0, granularity='row'), 2
  ),
  'magma_column': Member(
    lambda: optax_sbs.magma(optax.adam(1e-2), key=0, granularity='column'), 3, True
  ),
  'baselines.accelerated_sgd': Member(lambda: optax_sbs.baselines.accelerated_sgd(1e-2), 1),
  'baselines.entropy_sgd': Member(
    lambda: optax_sbs.baselines.entropy_sgd(1e-2, key=0, num_inner_steps=2), 0, rtol=1e-5
  ),
  'baselines.scale_by_entropy_sgd': Member(
    lambda: optax.chain(
      optax_sbs.baselines.scale_by_entropy_sgd(0, num_inner_steps=1), optax.sgd(1e-2)
    ),
    0,
    rtol=1e-5,
  ),
}


def _export_of(member):
  """The exported function a family member is named after."""
  name = member.split('.')[-1]
  for suffix in ('_adaptive', '_fixed', '_element', '_leaf', '_column', '_row'):
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
  """Gradients of small multiples of 1/64: their sums are exact in any order."""
  rng = np.random.default_rng(100 + step)
  return jax.tree.map(
    lambda p: (np.round(rng.standard_normal(np.shape(p)) * 32) / 64).astype(np.float32), PARAMS
  )


def jitted_update(tx):
  # LLVM's optimisations off: less compile time. Every run of a test (one
  # device, sharded, restored) is compiled alike.
  return jax.jit(
    lambda g, s, p: tx.update(g, s, p, value_fn=_value_fn),
    compiler_options={'xla_backend_optimization_level': 0},
  )


@functools.cache
def built(name):
  """``FAMILY[name]``'s transformation and its jitted update, shared by the
  tests so that a program compiled for some shardings is compiled once."""
  tx = FAMILY[name].factory()
  return tx, jitted_update(tx)


def per_parameter(tx, state, params, fn):
  """``[fn(leaf, param)]`` over the leaves of ``state``: ``param`` is the leaf's
  parameter for the per-parameter leaves (as ``optax.tree.map_params`` finds
  them), ``None`` for the others."""
  out = []
  optax.tree.map_params(
    tx,
    lambda leaf, param: out.append(fn(leaf, param)) or leaf,
    state,
    params,
    transform_non_params=lambda leaf: out.append(fn(leaf, None)) or leaf,
  )
  return out


def state_shardings(tx, state, params):
  """Per leaf of ``state``, its param's sharding, or replicated where the params are."""
  sharding = jax.tree.leaves(params)[0].sharding
  if isinstance(sharding, NamedSharding):
    sharding = NamedSharding(sharding.mesh, P())
  return optax.tree.map_params(
    tx,
    lambda _, param: param.sharding,
    state,
    params,
    transform_non_params=lambda _: sharding,
  )


def numeric(tree):
  """Leaves as numpy arrays, typed keys as their data."""
  return [np.asarray(x) for x in jax.tree.leaves(optax_sbs.key_data_tree(tree))]


# Whether sums across shards round as one device's sum does, bit for bit.
SHARD_SUMS_EXACT = jax.__version_info__ < (0, 11)


def assert_same_run(got, want, reduces=False, rtol=0.0):
  """Leafwise equality; ``rtol`` allows XLA's differently folded constants.

  Where a method sums across shards (``reduces``), the partial sums of a
  sharded leaf could round differently from one device's sum: first check
  the results are close with almost all masks (integer counts) equal, then
  that they are in fact equal bit for bit, as they are under jax 0.10's XLA
  (under 0.12's, some shard sums round differently: close is all it
  promises).
  """
  got, want = numeric(got), numeric(want)
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert a.shape == b.shape and a.dtype == b.dtype
    if reduces and jnp.issubdtype(a.dtype, jnp.inexact):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    elif reduces:
      assert np.mean(a != b) < 1e-3, 'masks differ beyond rounding of p'
  if reduces and not SHARD_SUMS_EXACT:
    return
  for a, b in zip(got, want):
    if rtol and jnp.issubdtype(a.dtype, jnp.inexact):
      np.testing.assert_allclose(a, b, rtol=rtol, atol=0)
    else:
      message = 'equal up to the rounding of sums across shards only' if reduces else ''
      np.testing.assert_array_equal(a, b, err_msg=message)


@functools.cache
def single_device_run(name):
  """Per step, (updates, state) of ``FAMILY[name]`` on one device."""
  tx, update = built(name)
  params = jax.device_put(PARAMS, ONE_DEVICE)
  state, out = jax.device_put(tx.init(params), ONE_DEVICE), []
  for step in range(STEPS):
    updates, state = update(jax.device_put(dyadic_grads(step), ONE_DEVICE), state, params)
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


def layout(tree, explicit):
  """Per leaf, shape, dtype, weak type and full spec; in explicit mode its whole
  type (``jax.typeof``, sharding included). In the default mode ``init`` leaves
  scalars on the default device, uncommitted: their type names no mesh."""

  def of(x):
    t = jax.typeof(x)
    return (t if explicit else None, t.shape, t.dtype, t.weak_type, spec_of(x))

  return jax.tree.map(of, tree)


# 1 and 3: explicit and default (FSDP) modes on the 2x4 mesh.


@pytest.mark.parametrize('mode', [AxisType.Explicit, AxisType.Auto], ids=['explicit', 'auto'])
@pytest.mark.parametrize('name', sorted(FAMILY))
def test_sharded_updates_equal_single_device(name, mode):
  member = FAMILY[name]
  tx, update = built(name)
  reference = single_device_run(name)  # outside the mesh context
  mesh = make_mesh(mode)
  explicit = mode == AxisType.Explicit
  with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
    params = jax.device_put(PARAMS, param_shardings(mesh))
    state = tx.init(params)  # eagerly, on sharded params
    copies = member.copies * len(jax.tree.leaves(PARAMS))
    assert assert_laid_out_like_params(tx, state, params) == copies
    types = layout(state, explicit)
    if not explicit:  # commit the scalars to the mesh, or the second step recompiles
      state = jax.device_put(state, state_shardings(tx, state, params))
    for step, want in enumerate(reference):
      grads = jax.device_put(dyadic_grads(step), param_shardings(mesh))
      updates, state = update(grads, state, params)
      assert layout(state, explicit) == types
      assert assert_laid_out_like_params(tx, state, params) == copies
      assert [spec_of(u) for u in jax.tree.leaves(updates)] == [
        spec_of(p) for p in jax.tree.leaves(params)
      ]
      assert_same_run((updates, state), want, member.reduces, member.rtol)


# 2: the compiled update of a large leaf draws each shard's bits on its device.

BIG = (8192, 1024)
# Leaves of one shape are bundled up to _plan.MAX_BUNDLED_SIZE elements.
STACKED = (512, 128)
COLLECTIVES = ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute', 'reduce-scatter')
HLO_CASES = {
  'sbs_fixed': (lambda: optax_sbs.sbs(0.1, key=0, probability=0.5), set()),
  'sbs_adaptive': (lambda: optax_sbs.sbs(0.1, key=0), {'all-reduce'}),  # the leaf's means
  # The kept fraction: one scalar per leaf, summed over the shards.
  'masked_updates_element': (
    lambda: optax_sbs.masked_updates(optax.sgd(0.1), key=0),
    {'all-reduce'},
  ),
}


def abstract_state(tx, params):
  """The state ``tx.init(params)`` would make, as ``jax.ShapeDtypeStruct`` with
  each leaf's sharding (its param's, or replicated)."""
  state = jax.eval_shape(tx.init, params)
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    state,
    state_shardings(tx, state, params),
  )


def hlo_arrays(hlo):
  """The shapes (``u32[1024,1024]``, ...) of the arrays in an HLO text."""
  return set(re.findall(r'\b[a-z]+[0-9]*\[[0-9,]*\]', hlo))


def full_size(shapes, leaf=BIG):
  """The shapes among ``shapes`` with as many elements as the whole leaf, or more."""
  sizes = {s: math.prod(int(d) for d in s[s.index('[') + 1 : -1].split(',') if d) for s in shapes}
  return {s for s, n in sizes.items() if n >= math.prod(leaf)}


def hlo_collectives(hlo):
  return {op for op in COLLECTIVES if re.search(rf'\b{op}(-start)?\(', hlo)}


def big_leaf(mesh, count=1, shape=BIG):
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  return {
    f'w{i}': jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding) for i in range(count)
  }


@pytest.mark.parametrize('count', [1, 3], ids=['one_leaf', 'three_stacked_leaves'])
@pytest.mark.parametrize('mode', [AxisType.Explicit, AxisType.Auto], ids=['explicit', 'auto'])
@pytest.mark.parametrize('name', sorted(HLO_CASES))
def test_random_bits_are_generated_per_shard(name, mode, count):
  """Also for small leaves of one shape and sharding, drawn stacked in one
  call: each device draws the rows of its shards only, with no collective."""
  factory, collectives = HLO_CASES[name]
  tx = factory()
  mesh = make_mesh(mode)
  shape = BIG if count == 1 else STACKED
  with jax.set_mesh(mesh) if mode == AxisType.Explicit else contextlib.nullcontext():
    params = big_leaf(mesh, count, shape)
    hlo = jax.jit(tx.update).lower(params, abstract_state(tx, params), params).compile().as_text()
  shapes = hlo_arrays(hlo)
  assert not full_size(shapes, shape)
  # The bits of one shard (1/8 of the rows), or of the stacked shards.
  rows, cols = shape[0] // 8, shape[1]
  assert (f'u32[{rows},{cols}]' if count == 1 else f'u32[{count},{rows},{cols}]') in shapes
  assert hlo_collectives(hlo) == collectives


def test_hlo_checks_see_a_gathered_leaf():
  """The checks above can fail: a leaf gathered onto every device is seen."""
  mesh = make_mesh(AxisType.Auto)
  gather = jax.jit(lambda p: 2 * p['w0'], out_shardings=NamedSharding(mesh, P()))
  hlo = gather.lower(big_leaf(mesh)).compile().as_text()
  assert full_size(hlo_arrays(hlo)) == {'f32[8192,1024]'}
  assert hlo_collectives(hlo) == {'all-gather'}


# 4: Flax NNX's FSDP pattern.


class FsdpMlp(nnx.Module):
  """Linear kernels sharded on their output axis ('fsdp'), a replicated norm."""

  def __init__(self, rngs):
    kernel = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, 'fsdp'))
    bias = nnx.with_partitioning(nnx.initializers.zeros_init(), ('fsdp',))
    self.hidden = nnx.Linear(8, 16, kernel_init=kernel, bias_init=bias, rngs=rngs)
    self.out = nnx.Linear(16, 8, kernel_init=kernel, use_bias=False, rngs=rngs)
    self.norm = nnx.LayerNorm(8, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.out(nnx.relu(self.hidden(x))))


NNX_FAMILY = {
  'sbs': FAMILY['sbs_adaptive'],
  'stochastic_batch_size': FAMILY['stochastic_batch_size'],
  'with_stochastic_batch_size': Member(
    lambda: optax_sbs.with_stochastic_batch_size(optax.adamw(1e-2), key=0), 4, True
  ),
  'masked_updates': FAMILY['masked_updates_element'],
  'magma': FAMILY['magma_leaf'],
}


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
  grads = nnx.grad(lambda m: jnp.mean(jnp.square(m(x) - y)))(model)
  optimizer.update(model, grads)


def assert_state_sharded_like_params(model, optimizer):
  """Leaves of the optimizer state in a param's place (their path ends with the
  param's, their shape is its) have the param's spec, as metadata and as
  placement; the other leaves are replicated. Returns the number of the former.

  The param's placement can differ from its metadata after a step: under
  ``Auto`` axes XLA propagates the LayerNorm's 'fsdp'-sharded input onto its
  (replicated) scale, with ``optax.adamw`` too.
  """
  param_state = nnx.state(model, nnx.Param)
  params = dict(nnx.to_flat_state(param_state))
  param_specs = dict(nnx.to_flat_state(nnx.get_partition_spec(param_state)))
  specs = dict(nnx.to_flat_state(nnx.get_partition_spec(nnx.state(optimizer))))
  copies = 0
  for path, variable in nnx.to_flat_state(nnx.state(optimizer)):
    value = variable.get_value()
    like = [q for q, p in params.items() if path[-len(q) :] == q and p.shape == value.shape]
    if like:
      want_meta = full_spec(param_specs[like[0]].get_value(), value.ndim)
      want = spec_of(params[like[0]].get_value())
    else:
      want_meta = want = (None,) * value.ndim
    assert full_spec(specs[path].get_value(), value.ndim) == want_meta, path
    assert spec_of(value) == want, path
    copies += bool(like)
  return copies


@pytest.mark.parametrize('name', sorted(NNX_FAMILY))
def test_nnx_fsdp(name):
  member = NNX_FAMILY[name]
  mesh = make_mesh(AxisType.Auto)

  def create():
    model = FsdpMlp(nnx.Rngs(0))
    return model, nnx.Optimizer(model, member.factory(), wrt=nnx.Param)

  with jax.set_mesh(mesh):
    # The sharded state made by a jitted init, as Flax's guide shows.
    graphdef, abstract = nnx.split(nnx.eval_shape(create))
    shardings = jax.tree.map(
      lambda spec: NamedSharding(mesh, spec), nnx.get_partition_spec(abstract)
    )
    model, optimizer = nnx.merge(
      graphdef, jax.jit(lambda: nnx.split(create())[1], out_shardings=shardings)()
    )
    assert spec_of(model.hidden.kernel.get_value()) == (None, 'fsdp')
    copies = member.copies * len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert assert_state_sharded_like_params(model, optimizer) == copies

    x = jax.device_put(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), P('data'))
    before = np.asarray(model.hidden.kernel.get_value())
    nnx_train_step(model, optimizer, x, jnp.flip(x, 1))
    assert not np.array_equal(np.asarray(model.hidden.kernel.get_value()), before)
    assert int(optimizer.step.get_value()) == 1
    assert assert_state_sharded_like_params(model, optimizer) == copies


# 5: Orbax checkpoints restored on other meshes continue the run exactly.

ORBAX_FAMILY = ('with_stochastic_batch_size', 'magma_leaf')  # at p = 0.5
K = 3


def continue_run(update, state, params, first_step):
  """K steps from ``state``: per step, (updates, state)."""
  out = []
  for step in range(first_step, first_step + K):
    grads = jax.device_put(dyadic_grads(step), jax.tree.map(lambda p: p.sharding, params))
    updates, state = update(grads, state, params)
    out.append((updates, state))
  return out


@pytest.mark.parametrize('name', ORBAX_FAMILY)
def test_orbax_checkpoint_restored_on_other_meshes_continues_the_run(name, tmp_path):
  tx, update = built(name)
  mesh = make_mesh(AxisType.Auto)
  params = jax.device_put(PARAMS, param_shardings(mesh))
  state = tx.init(params)
  state = jax.device_put(state, state_shardings(tx, state, params))
  state = continue_run(update, state, params, 0)[-1][1]
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / 'state', state)
  want = continue_run(update, state, params, K)

  four = make_mesh(AxisType.Auto, (1, 4), jax.devices()[4:])
  targets = {
    'one device': jax.tree.map(lambda _: ONE_DEVICE, PARAMS),
    '4-device mesh': param_shardings(four),
  }
  for where, shardings in targets.items():
    params = jax.device_put(PARAMS, shardings)
    template = abstract_state(tx, params)
    with ocp.StandardCheckpointer() as ckpt:
      restored = ckpt.restore(tmp_path / 'state', template)
    for x, t in zip(jax.tree.leaves(restored), jax.tree.leaves(template)):
      assert x.sharding.is_equivalent_to(t.sharding, x.ndim), where
    assert_same_run(restored, state)
    assert_same_run(continue_run(update, restored, params, K), want, FAMILY[name].reduces)


# Stacked layers on sharded leaves, and an eager call outside the mesh.

LAYERS = optax_sbs.layers_under('layers')
STACKED_FAMILY = {
  'sbs_adaptive': lambda: optax_sbs.sbs(1e-2, key=0, layer_axes=LAYERS),
  'masked_updates_leaf': lambda: optax_sbs.masked_updates(
    optax.adam(1e-2), key=0, granularity='leaf', layer_axes=LAYERS
  ),
  'magma_leaf': lambda: optax_sbs.magma(optax.adam(1e-2), key=0, layer_axes=LAYERS),
  'sbs_column': lambda: optax_sbs.sbs(1e-2, key=0, layer_axes=LAYERS, granularity='column'),
  'magma_row': lambda: optax_sbs.magma(
    optax.adam(1e-2), key=0, granularity='row', layer_axes=LAYERS
  ),
}


@pytest.mark.parametrize('layer_spec', [P(None, None, 'fsdp'), P('data', None, 'fsdp')])
@pytest.mark.parametrize('name', sorted(STACKED_FAMILY))
def test_stacked_leaves_sharded_in_explicit_mode(name, layer_spec):
  """A stacked kernel sharded over its features, or over its layers too: the
  per-slice statistics, masks and scores run in explicit mode and agree with
  one device's up to the rounding of sums across shards."""
  rng = np.random.default_rng(1)
  params = {'layers': {'kernel': rng.standard_normal((4, 16, 32)).astype(np.float32)}}
  grads = [
    jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    for _ in range(STEPS)
  ]
  tx = STACKED_FAMILY[name]()
  update = jitted_update(tx)

  def run(params, put):
    state, out = tx.init(params), []
    for g in grads:
      updates, state = update(put(g), state, params)
      out.append((updates, state))
    return out

  want = run(jax.device_put(params, ONE_DEVICE), lambda g: jax.device_put(g, ONE_DEVICE))
  mesh = make_mesh(AxisType.Explicit)
  shardings = {'layers': {'kernel': NamedSharding(mesh, layer_spec)}}
  with jax.set_mesh(mesh):
    got = run(jax.device_put(params, shardings), lambda g: jax.device_put(g, shardings))
    for updates, _ in got:
      assert spec_of(updates['layers']['kernel']) == full_spec(layer_spec, 3)
  for (gu, gs), (wu, ws) in zip(got, want):
    for a, b in zip(numeric((gu, gs)), numeric((wu, ws))):
      if jnp.issubdtype(a.dtype, jnp.inexact):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
      else:
        assert np.mean(a != b) < 1e-3


@pytest.mark.parametrize('name', ['sbs_fixed', 'masked_updates_element', 'magma_element'])
def test_eager_update_outside_the_mesh_context(name):
  """Explicitly sharded arrays updated eagerly without ``jax.set_mesh``: the
  masks are created on the arrays' own mesh, as in the jitted update."""
  mesh = make_mesh(AxisType.Explicit)
  tx = FAMILY[name].factory()
  with jax.set_mesh(mesh):
    params = jax.device_put(PARAMS, param_shardings(mesh))
    grads = jax.device_put(dyadic_grads(0), param_shardings(mesh))
  updates, _ = tx.update(grads, tx.init(params), params, value_fn=_value_fn)
  want, _ = single_device_run(name)[0]
  assert spec_of(updates['dense']['kernel']) == (None, 'fsdp')
  for a, b in zip(numeric(updates), numeric(want)):
    np.testing.assert_array_equal(a == 0, b == 0)  # the same masks
    np.testing.assert_allclose(a, b, rtol=1e-6)  # eager and fused arithmetic
