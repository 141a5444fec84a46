"""optax_sbs._bundles and the plan's bundles: the helpers change no value, and
the compiled update of every export keeps its kernels as leaves of one shape
are added (they are bundled, not handled one by one)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_sbs
from optax_sbs import _bundles
from optax_sbs import _plan


def test_row_indices_materialize_and_split_blocks_change_no_value():
  key = jax.random.key(0)
  rows = jax.jit(lambda k: _bundles.row_indices(70, k))(key)
  assert [int(r) for r in rows] == list(range(70))
  mask = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 4, 5)) < 0.5)
  np.testing.assert_array_equal(jax.jit(_bundles.materialize)(mask), mask)
  # Per-layer blocks: scalars for ordinary leaves, (3, 1) and (2,) grids for stacked ones.
  specs = [((4,), ()), ((3, 5), (0,)), ((2,), ()), ((2, 7), (0,)), ((3, 5), (0,)), ((6, 2), ())]
  leaves = [jax.ShapeDtypeStruct(s, jnp.float32) for s, _ in specs]
  axes = [ax for _, ax in specs]
  plan = _plan.build(leaves, axes, block_axes=axes)
  shapes = [leaf.block_shape for leaf in plan.leaves]
  assert shapes == [(), (3, 1), (), (2, 1), (3, 1), ()]
  assert plan.block_bundles == ((0, 2, 5), (1, 4), (3,))
  vector = jnp.arange(plan.num_blocks, dtype=jnp.float32)
  got = jax.jit(lambda v, k: _bundles.split_blocks(v, plan, k))(vector, key)
  start = 0
  for block, shape in zip(got, shapes):
    n = int(np.prod(shape))
    np.testing.assert_array_equal(block, np.arange(start, start + n).reshape(shape))
    start += n


@pytest.mark.parametrize(
  'shape, axes',
  [
    ((3, 1024), (1,)),  # the last axis cut into chunks of 256
    ((2, 4, 509), (1, 2)),  # a prime last axis: no chunk, one int32 sum
    ((2, 5, 3, 300), (1, 3)),  # a layer axis between the reduced ones
    ((4, 6, 7), (1,)),  # the last axis kept
    ((5, 255 * 3), (1,)),
    ((3,), ()),  # nothing reduced: each entry its own fraction
  ],
)
def test_kept_fraction_counts_exactly(shape, axes):
  mask = np.random.default_rng(sum(shape)).random(shape) < 0.3
  got = jax.jit(_bundles.kept_fraction, static_argnums=1)(jnp.asarray(mask), axes)
  want = mask.sum(axis=axes) / np.prod([shape[a] for a in axes])
  np.testing.assert_allclose(got, want.astype(np.float32), rtol=3e-7)  # a float32 ulp
  assert got.dtype == jnp.float32


def test_the_bundle_rule():
  keys, sizes = ['a', 'b', 'a', 'c', 'b', 'a', 'a'], [1, 2, 1, 0, 2, _plan.MAX_BUNDLED_SIZE + 1, 5]
  # Equal keys together, by first position; a size-0 position in none; a large one alone.
  assert _plan.bundle(keys, sizes) == ((0, 2, 6), (1, 4), (5,))


def test_join_and_in_position_order_change_no_value():
  arrays = [jnp.full((2,), float(i)) for i in range(5)]
  joined = _bundles.join(arrays, [(0, 2), (1, 4), (3,)])
  np.testing.assert_array_equal(joined[0], [[0, 0], [2, 2]])
  np.testing.assert_array_equal(joined[2], [[3, 3]])
  # Position 0 has 2 entries, 1 has 1, 2 has 3, 3 (in no bundle) has 2, 4 has 0.
  counts = [2, 1, 3, 2, 0]
  parts = [((0, 2), jnp.asarray([0.0, 0.5, 2.0, 2.25, 2.5])), ((1, 4), jnp.asarray([1.0]))]
  got = jax.jit(lambda: _bundles.in_position_order(parts, counts, jnp.float32))()
  np.testing.assert_array_equal(got, [0.0, 0.5, 1.0, 2.0, 2.25, 2.5, 0.0, 0.0])
  assert got.dtype == jnp.float32


def _distinct_fusions(hlo: str) -> int:
  """Fused computations that differ other than by names (what XLA compiles)."""
  bodies = set()
  for block in re.split(r'\n(?=\S.*\{\n)', hlo):
    head, _, body = block.partition('\n')
    if head.startswith('%fused'):
      text = re.sub(r', metadata=\{[^}]*\}', '', head.split(' ', 1)[1] + body)
      bodies.add(re.sub(r'\b[\w\-]+\.\d+\b', '_', re.sub(r'%[\w.\-]+', '%', text)))
  return len(bodies)


def _reduction_kernels(hlo: str) -> int:
  """Kernels of the entry computation that reduce (a reduction is the root
  of its kernel, so every per-leaf reduction is a kernel of its own), the
  opaque row indices (tuples of int32 scalars, one kernel per 32 rows) left
  out."""
  bodies = {}
  for block in re.split(r'\n(?=\S.*\{\n)', hlo):
    head, _, body = block.partition('\n')
    bodies[head.split(' ', 1)[0].lstrip('%')] = body
  entry = hlo[hlo.index('\nENTRY') :]
  count = 0
  for line in entry[: entry.index('\n}')].splitlines()[1:]:
    if ' = (s32[], ' in line:
      continue
    called = re.search(r'calls=%?([\w.\-]+)', line)
    text = bodies.get(called.group(1), '') if called else line
    count += bool(re.search(r' reduce(-window)?\(', text))
  return count


def _tree(blocks):
  return {
    f'block_{i:03d}': {
      'attn': {'kernel': jnp.full((8, 24), 0.1 * (i + 1))},
      'mlp': {'kernel': jnp.full((8, 32), 0.01 * (i + 1)), 'bias': jnp.zeros(32)},
      'ln': {'scale': jnp.ones(8)},
    }
    for i in range(blocks)
  }


@pytest.mark.parametrize(
  'make',
  [
    lambda: optax_sbs.sbs(0.1, key=0),
    lambda: optax_sbs.sbs(0.1, key=0, probability=0.5),
    lambda: optax_sbs.with_stochastic_batch_size(optax.adam(1e-3), key=0),
    lambda: optax_sbs.masked_updates(optax.adam(1e-3), key=0),
    lambda: optax_sbs.magma(optax.adam(1e-3), key=0),
  ],
  ids=['sbs', 'sbs_fixed', 'wrapper', 'masked_updates', 'magma'],
)
def test_compiled_kernels_do_not_grow_with_leaves_of_one_shape(make):
  """Three times the blocks (32 leaves more): the same generator code (xor
  count), a few more distinct kernels at most (per-shape kernels whose row
  count changes, e.g. the opaque row indices), not one per leaf, and the
  same reductions: the per-layer statistics and cosines of a shape are row
  reductions of its leaves stacked, not one kernel per leaf."""

  def compiled(blocks):
    tx = make()
    params = _tree(blocks)
    grads = jax.tree.map(lambda p: p * 0.5 + 0.01, params)
    return jax.jit(tx.update).lower(grads, tx.init(params), params).compile().as_text()

  small, large = compiled(4), compiled(12)
  assert large.count(' xor(') == small.count(' xor(')
  assert _distinct_fusions(large) <= _distinct_fusions(small) + 8
  assert _reduction_kernels(large) == _reduction_kernels(small)
