"""Section 5: cost against the number of leaves, and the collectives of the
step on an FSDP-sharded tree (8 CPU devices, in a child process)."""

from collections.abc import Iterator
import json
import os
import re
import subprocess
import sys

import jax
import optax

from harness import report
from timing import family
from timing import measure
from timing import trees

# The command line that runs the collectives in a child process.
UPDATE_SPEED = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'update_speed.py'
)


def leaf_scaling(counts, reps, parent=None):
  """Rows of section 5 (compile time, kernels and step time per leaf count)
  and, with ``parent``, rows against it."""
  rows, against = [], []
  for count in counts:
    params, grads, n = measure.step_inputs(trees.many_leaves(count))
    steps = {
      name: measure.optimizer_step(make(), params, grads)
      for name, make in family.leaf_optimizers(parent).items()
    }
    times = {name: measure.back_to_back_median(step[0], reps) for name, step in steps.items()}
    if parent is not None:
      against += family.parent_rows(
        steps, max(reps, family.PAIRED_REPS), parent[1], f'{count} leaves'
      )
    adam_t, adam_c = times['adam'], steps['adam'][1]
    for name, (_, c, _, kernels, unique, temp) in steps.items():
      rows.append(
        f'| {count} | {n / 1e6:.2f}M | {name} | {c:.2f} | {c / adam_c:.1f}x | {kernels} | '
        f'{unique} | {1e3 * times[name]:.2f} | {times[name] / adam_t:.1f}x | {temp:.1f} |'
      )
    del steps, params, grads
  return rows, against


COLLECTIVE_OPS = ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute', 'reduce-scatter')


def collective_counts(count: int = 100) -> dict:
  """Per optimizer, the collectives of its compiled step on a tree of
  ``count`` leaves sharded along their first axis over all devices (FSDP)."""
  mesh = jax.make_mesh((jax.device_count(),), ('fsdp',), axis_types=(jax.sharding.AxisType.Auto,))
  spec = jax.sharding.PartitionSpec('fsdp')
  shapes = trees.many_leaves(count)
  params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.NamedSharding(mesh, spec)), shapes
  )
  out = {}
  for name, make in family.leaf_optimizers().items():
    tx = make()

    def step(params, state, grads, tx=tx):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    state = jax.eval_shape(tx.init, params)
    hlo = jax.jit(step).lower(params, state, params).compile().as_text()
    out[name] = {op: len(re.findall(rf'\b{op}(-start)?\(', hlo)) for op in COLLECTIVE_OPS}
  return out


def collectives_section(devices: int) -> list[str]:
  """Section 5b, measured in a child process with ``devices`` CPU devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={devices}'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  child = subprocess.run(
    [sys.executable, UPDATE_SPEED, '--collectives-json'],
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  if child.returncode:
    return [f'(the child process failed: {child.stderr.strip().splitlines()[-1:]})']
  counts = json.loads(child.stdout.strip().splitlines()[-1])
  rows = report.table_head('optimizer', *COLLECTIVE_OPS)
  for name, ops in counts.items():
    rows.append(f'| {name} | ' + ' | '.join(str(ops[op]) for op in COLLECTIVE_OPS) + ' |')
  return rows


def section(counts: tuple[int, ...], reps: int, parent=None) -> Iterator[str]:
  """Compile time, kernels and step time per leaf count, against adam."""
  yield ''
  yield '## 5. Cost vs number of leaves (transformer-like tree of small leaves, four shapes)'
  yield ''
  yield (
    '| leaves | params | optimizer | compile (s) | / adam compile | kernels | distinct kernels '
    '| step, back-to-back (ms) | / adam | temporary bytes / param |'
  )
  yield '|---|---|---|---|---|---|---|---|---|---|'
  rows, against = leaf_scaling(counts, reps, parent)
  yield from rows
  if against:
    yield from family.against_parent(parent[1], 'leaves', against)
  yield ''
  yield (
    'Collectives in the compiled step on 100 of these leaves, each sharded along its first '
    'axis over 8 CPU devices (FSDP; default sharding mode):'
  )
  yield ''
  yield from collectives_section(8)
