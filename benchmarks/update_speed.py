"""What does SBS cost per step, next to plain Optax? Time, compile time, memory.

In one process, side by side, with params and state donated and the median
of many repetitions after warm-up:

1. the optimizer-only step (``update`` + ``apply_updates``) on parameter
   trees shaped like the example's small CNN, VGG11, ResNet-18 and ResNet-50
   and a GPT-style transformer, for optax.sgd, sgd(momentum=0.9), adam,
   MultiSteps(sgd, 4), SBS (its default lam = -4, and the low-memory
   uint8-count / bf16-CMA variant), ``with_stochastic_batch_size(adam)``
   (its default lam = 0, and lam = -4), ``masked_updates(adam)`` and
   ``magma(adam)``: the time interleaved and
   back-to-back, compile time, optimizer-state bytes per parameter and the
   number of kernels of the compiled step;
2. how the update time grows with the parameter count (1M -> 25M);
3. the full training step (forward, backward, update) of the small CNN and
   ResNet-18 at batch 16 and 128, SGD vs SBS;
4. where SBS's time goes on the ResNet-18 tree: the generator (replaced by
   a 2-instruction hash), the statistics (a fixed probability), and the page
   faults per step (fresh memory for XLA's temporaries);
5. cost vs number of leaves (50, 100, 400, 1000 small leaves of four shapes,
   an unscanned transformer): compile time, kernels (all, and distinct:
   what XLA compiles) and step time for adam and the family, ratios to adam
   in the same run; the collectives of the step on an FSDP-sharded tree
   (8 CPU devices, in a child process).

With ``--parent DIR`` (a worktree of an earlier commit), sections 1 and 5
also compile and time the family's main rows with that commit's library, in
the same process and the same run, and tabulate this checkout against it.

  python benchmarks/update_speed.py            # everything (CPU: ~25 min)
  python benchmarks/update_speed.py --quick    # fewer reps, no batch-128 ResNet-18
  python benchmarks/update_speed.py --smoke --out /tmp/speed.md   # tiny, seconds
  python benchmarks/update_speed.py --trees resnet18,transformer --sections 1,3 \\
      --train-cases resnet18:128                # what benchmarks/device_check.sh runs
  python benchmarks/update_speed.py --quick --trees resnet18,transformer --sections 1,5
                                                # results/update_speed_leaves_cpu.md

  git worktree add /tmp/parent HEAD~1 && \\
    python benchmarks/update_speed.py --parent /tmp/parent   # against a commit

Writes ``benchmarks/results/update_speed_<platform>.md``. What the numbers
mean, and the alternatives measured and not kept, are in
``docs/evidence/cost.md``.
"""

import argparse
import importlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples', 'cifar'))

import jax  # pylint: disable=g-import-not-at-top
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs
from optax_sbs import _threefry

from harness import report
import models
import steps


def family(lib=optax_sbs, tag=''):
  """The family's optimizers of section 1, from ``lib`` (this checkout's
  library, or the one loaded by :func:`load_library`, its rows marked with
  ``tag``). Each label names ``lam`` where the rule is adaptive."""
  return {
    f'sbs (lam=-4){tag}': lambda: lib.sbs(0.1, key=0, lam=-4.0),
    f'sbs (lam=-4), uint8 count, bf16 cma{tag}': lambda: lib.sbs(
      0.1, key=0, lam=-4.0, count_dtype='uint8', cma_dtype='bfloat16'
    ),
    f'with_stochastic_batch_size(adam, lam=0){tag}': lambda: lib.with_stochastic_batch_size(
      optax.adam(1e-3), key=0, lam=0.0
    ),
    f'with_stochastic_batch_size(adam, lam=-4){tag}': lambda: lib.with_stochastic_batch_size(
      optax.adam(1e-3), key=0, lam=-4.0
    ),
    f'masked_updates(adam){tag}': lambda: lib.masked_updates(optax.adam(1e-3), key=0),
    f'magma(adam){tag}': lambda: lib.magma(optax.adam(1e-3), key=0),
  }


# The rows timed again with an earlier commit's library (--parent).
PARENT_ROWS = (
  'sbs (lam=-4)',
  'with_stochastic_batch_size(adam, lam=0)',
  'masked_updates(adam)',
  'magma(adam)',
)


def optimizers(parent=None):
  """Section 1's optimizers: plain Optax, the family, and with ``parent``
  (a ``(library, tag)`` pair) the rows of :data:`PARENT_ROWS` from it."""
  out = {
    'sgd': lambda: optax.sgd(0.1),
    'sgd m=0.9': lambda: optax.sgd(0.1, momentum=0.9),
    'adam': lambda: optax.adam(1e-3),
    'MultiSteps(sgd, 4)': lambda: optax.MultiSteps(optax.sgd(0.1), 4),
    **family(),
  }
  if parent is not None:
    lib, tag = parent
    rows = family(lib, tag)
    out.update({name + tag: rows[name + tag] for name in PARENT_ROWS})
  return out


def load_library(root: str):
  """The ``optax_sbs`` package under ``root`` (a worktree of another commit),
  loaded beside the one already imported: its modules bind one another at
  import time, so both run side by side in this process."""
  mine = {k: v for k, v in sys.modules.items() if k.split('.')[0] == 'optax_sbs'}
  for name in mine:
    del sys.modules[name]
  sys.path.insert(0, root)
  try:
    lib = importlib.import_module('optax_sbs')
  finally:
    sys.path.remove(root)
    for name in [k for k in sys.modules if k.split('.')[0] == 'optax_sbs']:
      del sys.modules[name]
    sys.modules.update(mine)
  if not os.path.abspath(lib.__file__).startswith(os.path.abspath(root) + os.sep):
    raise SystemExit(f'--parent {root}: optax_sbs was not loaded from there ({lib.__file__})')
  return lib


def parent_tag(root: str) -> str:
  """`` @ <short commit>`` of the checkout at ``root``."""
  commit = subprocess.run(
    ['git', '-C', root, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True
  ).stdout.strip()
  return f' @ {commit}'


def paired_ratio(run, other, reps: int, warmup: int = 3) -> tuple[float, float, float]:
  """Medians of ``run``'s and ``other``'s times and of their ratio, timed in
  pairs (the order alternating): each ratio is of two steps taken under the
  same background load, so it is steadier than a ratio of two medians."""
  for _ in range(warmup):
    run()
    other()
  mine, theirs = [], []
  for i in range(reps):
    for fn, out in ((run, mine), (other, theirs))[:: 1 if i % 2 == 0 else -1]:
      start = time.perf_counter()
      fn()
      out.append(time.perf_counter() - start)
  ratio = np.median(np.array(mine) / np.array(theirs))
  return float(np.median(mine)), float(np.median(theirs)), float(ratio)


def parent_rows(steps: dict, reps: int, tag: str, label: str) -> list[str]:
  """Rows of this checkout against the parent for each row of
  :data:`PARENT_ROWS`: step times timed in pairs (:func:`paired_ratio`) and
  compile times, measured in the same run."""
  rows = []
  for name in PARENT_ROWS:
    if name + tag not in steps:
      continue
    now, before, ratio = paired_ratio(steps[name][0], steps[name + tag][0], reps)
    c_now, c_before = steps[name][1], steps[name + tag][1]
    rows.append(
      f'| {label} | {name} | {1e3 * before:.2f} | {1e3 * now:.2f} | {ratio:.2f}x | '
      f'{c_before:.2f} | {c_now:.2f} | {c_now / c_before:.2f}x |'
    )
  return rows


PAIRED_REPS = 60
AGAINST_PARENT = (
  'Against the parent commit ({}): medians of the step times and of their ratio over '
  f'at least {PAIRED_REPS} pairs (this and parent timed in turn, the order alternating); '
  'one compile each:'
)

PARENT_HEAD = (
  '| tree | optimizer | parent (ms) | this (ms) | this / parent (paired) | parent compile (s) '
  '| this compile (s) | this / parent compile |'
)


def transformer_params(layers: int, width: int, vocab: int, context: int):
  """Shapes of a GPT-style decoder: token and position embeddings, per block
  two LayerNorms, a fused QKV and an output projection, a 4x MLP, all with
  biases; a final LayerNorm (the head tied to the token embedding)."""
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  norm = lambda: {'scale': f32(width), 'bias': f32(width)}
  dense = lambda i, o: {'kernel': f32(i, o), 'bias': f32(o)}
  params = {'wte': {'embedding': f32(vocab, width)}, 'wpe': {'embedding': f32(context, width)}}
  for i in range(layers):
    params[f'block_{i}'] = {
      'ln_1': norm(),
      'attn': {'qkv': dense(width, 3 * width), 'out': dense(width, width)},
      'ln_2': norm(),
      'mlp': {'fc': dense(width, 4 * width), 'proj': dense(4 * width, width)},
    }
  params['ln_f'] = norm()
  return params


TRANSFORMERS = {
  # 8 blocks of width 512, 8k vocabulary: 29.6M parameters in 100 leaves.
  'transformer': dict(layers=8, width=512, vocab=8192, context=1024),
  'transformer_tiny': dict(layers=2, width=64, vocab=256, context=64),
}


def tree_shapes(name):
  """Parameter shapes of a CIFAR model of the example, or a transformer."""
  if name in TRANSFORMERS:
    return transformer_params(**TRANSFORMERS[name])
  model = models.create_model(name, 10)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  return variables['params']


def materialize(shapes, seed=0):
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
    [jax.random.normal(k, x.shape, jnp.float32) * 0.01 for k, x in zip(keys, leaves)]
  )


def step_inputs(shapes):
  """Params and gradients of ``shapes`` and their number of elements."""
  params = materialize(shapes)
  grads = materialize(params, seed=1)
  return params, grads, sum(x.size for x in jax.tree.leaves(params))


def interleaved_medians(runs, reps, warmup=3):
  """Median seconds of each callable, timed in turn within every repetition.

  Interleaving puts every candidate under the same background load, so the
  ratios between them are steadier than those of back-to-back blocks.
  """
  for run in runs.values():
    for _ in range(warmup):
      run()
  times = {name: [] for name in runs}
  for _ in range(reps):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def back_to_back_median(run, reps, warmup=3):
  """Median seconds of ``run`` called ``reps`` times in a row, after warm-up:
  the step as a training loop runs it (its buffers donated from the previous
  call, caches warm with its own data)."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


# Entry-computation instructions that launch no work of their own.
_NOT_KERNELS = frozenset(
  ('parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'after-all', 'opt-barrier')
)


def kernel_count(compiled) -> int:
  """Instructions of the compiled program's entry computation that run as
  kernels (fusions, copies, library calls, loops), i.e. launches per step on
  a GPU; parameters, constants, tuples and bitcasts excluded."""
  text = compiled.as_text()
  entry = text[text.index('\nENTRY') :]
  entry = entry[: entry.index('\n}')]
  count = 0
  for line in entry.splitlines()[1:]:
    match = re.search(r'=\s.*?\s([a-z][a-z0-9-]*)\(', line)
    if match and match.group(1) not in _NOT_KERNELS:
      count += 1
  return count


def unique_kernel_count(compiled) -> int:
  """Distinct kernels of the compiled program: fusions whose computations
  are the same up to names are compiled to machine code once."""
  text = compiled.as_text()
  bodies = {}
  for block in re.split(r'\n(?=\S.*\{\n)', text):
    head, _, body = block.partition('\n')
    if head.startswith('%fused') or head.startswith('fused'):
      bodies[head.split(' ', 1)[0]] = _canonical(head.split(' ', 1)[1] + body)
  entry = text[text.index('\nENTRY') :]
  entry = entry[: entry.index('\n}')]
  kinds = set()
  for line in entry.splitlines()[1:]:
    match = re.search(r'=\s.*?\s([a-z][a-z0-9-]*)\(', line)
    if not match or match.group(1) in _NOT_KERNELS:
      continue
    called = re.search(r'calls=(%?[\w.\-]+)', line)
    if called and called.group(1) in bodies:
      kinds.add(bodies[called.group(1)])
    else:
      kinds.add(_canonical(line.split('=', 1)[1]))
  return len(kinds)


def _canonical(hlo: str) -> str:
  """HLO text without names and metadata (what makes two kernels the same)."""
  hlo = re.sub(r', metadata=\{[^}]*\}', '', hlo)
  hlo = re.sub(r'%[\w.\-]+', '%', hlo)
  return re.sub(r'\b[\w\-]+\.\d+\b', '_', hlo)


def optimizer_step(tx, params, grads):
  """(step callable, compile seconds, state bytes per parameter, kernels,
  distinct kernels, temporary bytes per parameter)."""

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.copy, params)
  state = tx.init(params)
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
  compile_s = time.perf_counter() - start
  n = sum(x.size for x in jax.tree.leaves(params))
  state_bytes = sum(
    (jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x).nbytes
    for x in jax.tree.leaves(state)
  )
  box = [params, state]

  def run():
    box[0], box[1] = compiled(box[0], box[1], grads)
    jax.block_until_ready(box[0])

  memory = compiled.memory_analysis()
  temp = memory.temp_size_in_bytes / n if memory is not None else float('nan')
  return (
    run,
    compile_s,
    state_bytes / n,
    kernel_count(compiled),
    unique_kernel_count(compiled),
    temp,
  )


def train_step(model_name, tx, batch):
  """(step callable, compile seconds) of the example's jitted train step."""
  model = models.create_model(model_name, 10)
  state = steps.create_state(model, tx, (32, 32, 3), jax.random.key(0), jax.random.key(1))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
  mean, std = jnp.zeros(3), jnp.ones(3)
  start = time.perf_counter()
  compiled = (
    jax.jit(steps.train_step, donate_argnums=0).lower(state, images, labels, mean, std).compile()
  )
  compile_s = time.perf_counter() - start
  box = [state]

  def run():
    box[0], metrics = compiled(box[0], images, labels, mean, std)
    jax.block_until_ready(metrics)

  return run, compile_s


def page_faults() -> int:
  """Minor page faults of this process so far (0 where not reported)."""
  try:
    import resource  # noqa: PLC0415  (POSIX only)
  except ImportError:
    return 0
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cheap_bits(key, offset, shape, sharding=None):
  """A stand-in for the threefry bits: one multiply-xorshift of the counter
  (statistically poor; only to measure what the generator costs). Like
  ``_threefry.random_bits``, a sequence of offsets stacks one block each."""
  del sharding
  counter = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  if isinstance(offset, int):
    counter = counter + np.uint32(offset)
  else:
    counter = counter[None] + np.asarray(offset, np.uint32).reshape((-1,) + (1,) * len(shape))
  x = (counter ^ jax.random.key_data(key)[0]) * np.uint32(0x9E3779B1)
  return x ^ (x >> np.uint32(15))


def breakdown(tree: str, reps: int) -> list[str]:
  """Where the SBS step's time goes: back-to-back times and page faults per
  step of SBS, SBS at a fixed probability (no statistics), each with the
  threefry generator replaced by a 2-instruction hash, next to sgd and adam."""
  params = materialize(tree_shapes(tree))
  grads = materialize(params, seed=1)
  variants = {
    'sgd': (optax.sgd(0.1), False),
    'adam': (optax.adam(1e-3), False),
    'sbs': (optax_sbs.sbs(0.1, key=0), False),
    'sbs, threefry replaced': (optax_sbs.sbs(0.1, key=0), True),
    'sbs p=0.5': (optax_sbs.sbs(0.1, key=0, probability=0.5), False),
    'sbs p=0.5, threefry replaced': (optax_sbs.sbs(0.1, key=0, probability=0.5), True),
    'masked_updates(sgd)': (optax_sbs.masked_updates(optax.sgd(0.1), key=0), False),
  }
  rows = []
  original = _threefry.random_bits
  try:
    for name, (tx, replace) in variants.items():
      _threefry.random_bits = cheap_bits if replace else original
      run, _, _, kernels, *_ = optimizer_step(tx, params, grads)
      t = back_to_back_median(run, reps)
      before = page_faults()
      for _ in range(reps):
        run()
      faults = (page_faults() - before) / reps
      rows.append((name, t, faults, kernels))
  finally:
    _threefry.random_bits = original
  sgd = rows[0][1]
  return [
    f'| {name} | {1e3 * t:.2f} | {t / sgd:.1f}x | {faults:.0f} | {kernels} |'
    for name, t, faults, kernels in rows
  ]


LEAF_COUNTS = (50, 100, 400, 1000)


def many_leaves(count: int, width: int = 64):
  """The first ``count`` leaves of a transformer-like tree of small blocks:
  per block an attention kernel ``(w, 3w)``, an MLP kernel ``(w, 4w)`` and
  its bias ``(4w,)``, and a LayerNorm scale ``(w,)`` (an unscanned model of
  many layers, four shapes)."""
  kinds = (
    ('attn', 'kernel', (width, 3 * width)),
    ('mlp', 'kernel', (width, 4 * width)),
    ('mlp', 'bias', (4 * width,)),
    ('ln', 'scale', (width,)),
  )
  params: dict = {}
  for i in range(count):
    module, name, shape = kinds[i % len(kinds)]
    block = params.setdefault(f'block_{i // len(kinds):04d}', {})
    block.setdefault(module, {})[name] = jax.ShapeDtypeStruct(shape, jnp.float32)
  return params


def leaf_optimizers(parent=None):
  out = {
    'adam': lambda: optax.adam(1e-3),
    **{k: v for k, v in family().items() if k in PARENT_ROWS},
  }
  if parent is not None:
    lib, tag = parent
    rows = family(lib, tag)
    out.update({name + tag: rows[name + tag] for name in PARENT_ROWS})
  return out


def leaf_scaling(counts, reps, parent=None):
  """Rows of section 5 (compile time, kernels and step time per leaf count)
  and, with ``parent``, rows against it."""
  rows, against = [], []
  for count in counts:
    params, grads, n = step_inputs(many_leaves(count))
    steps = {
      name: optimizer_step(make(), params, grads) for name, make in leaf_optimizers(parent).items()
    }
    times = {name: back_to_back_median(step[0], reps) for name, step in steps.items()}
    if parent is not None:
      against += parent_rows(steps, max(reps, PAIRED_REPS), parent[1], f'{count} leaves')
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
  shapes = many_leaves(count)
  params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.NamedSharding(mesh, spec)), shapes
  )
  out = {}
  for name, make in leaf_optimizers().items():
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
    [sys.executable, os.path.abspath(__file__), '--collectives-json'],
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


def parse_cases(text: str) -> list[tuple[str, int]]:
  """``'small_cnn:16,resnet18:128'`` -> ``[('small_cnn', 16), ('resnet18', 128)]``."""
  cases = []
  for item in filter(None, text.split(',')):
    name, _, batch = item.partition(':')
    if name not in models.MODELS or not batch.isdigit():
      raise argparse.ArgumentTypeError(f'bad training case {item!r}: want MODEL:BATCH')
    cases.append((name, int(batch)))
  return cases


def parse_trees(text: str) -> list[str]:
  trees = [t for t in text.split(',') if t]
  for t in trees:
    if t not in models.MODELS and t not in TRANSFORMERS:
      raise argparse.ArgumentTypeError(
        f'unknown tree {t!r}; choose from {", ".join(sorted(models.MODELS) + sorted(TRANSFORMERS))}'
      )
  return trees


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='5 repetitions, no batch-128 ResNet-18')
  parser.add_argument(
    '--smoke', action='store_true', help='tiny trees and steps: checks the script in seconds'
  )
  parser.add_argument('--trees', type=parse_trees, default=None, help='comma-separated trees')
  parser.add_argument(
    '--sections', default='1,2,3,4,5', help='which sections to run, e.g. 1,3 (default all)'
  )
  parser.add_argument(
    '--train-cases', type=parse_cases, default=None, help='section 3: MODEL:BATCH,...'
  )
  parser.add_argument('--reps', type=int, default=None, help='repetitions per measurement')
  parser.add_argument(
    '--leaf-counts',
    type=lambda text: tuple(int(c) for c in text.split(',') if c),
    default=None,
    help='section 5: numbers of leaves, e.g. 50,100,400 (default 50,100,400,1000)',
  )
  parser.add_argument(
    '--out',
    default=None,
    help='markdown path (default: results/update_speed_PLATFORM.md; '
    'needed with --smoke, which must not overwrite the committed table)',
  )
  parser.add_argument(
    '--parent',
    default=None,
    metavar='DIR',
    help='a checkout of an earlier commit (e.g. a git worktree): sections 1 and 5 time the '
    "family's rows again with its optax_sbs, in the same run, and compare",
  )
  parser.add_argument('--collectives-json', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke and args.out is None:
    parser.error('--smoke needs --out')
  if args.collectives_json:
    print(json.dumps(collective_counts()))
    return 0
  if args.smoke:
    trees, cases, reps, sizes = ['small_cnn', 'transformer_tiny'], [('small_cnn', 16)], 3, (1,)
    leaf_counts: tuple[int, ...] = (8, 16)
  else:
    trees = ['small_cnn', 'vgg11', 'resnet18', 'resnet50', 'transformer']
    cases = [('small_cnn', 16), ('small_cnn', 128), ('resnet18', 16)]
    if not args.quick:
      cases.append(('resnet18', 128))
    reps, sizes = (5 if args.quick else 20), (1, 5, 10, 25)
    leaf_counts = LEAF_COUNTS
  trees = args.trees or trees
  cases = args.train_cases if args.train_cases is not None else cases
  reps = args.reps or reps
  leaf_counts = args.leaf_counts or leaf_counts
  sections = set(args.sections.split(','))
  parent = None
  if args.parent is not None:
    parent = (load_library(args.parent), parent_tag(args.parent))
  dev = jax.devices()[0]
  command = shlex.join(
    ['python', 'benchmarks/update_speed.py'] + list(sys.argv[1:] if argv is None else argv)
  )
  lines = [
    f'# SBS update cost vs plain Optax ({dev.platform})',
    '',
    f'- command: `{command}`',
    *report.machine_and_versions(),
    f'- medians of {reps} repetitions after warm-up, params and state donated. '
    '"interleaved": the candidates timed in turn within each repetition (the same background '
    'load for all); "back-to-back": each candidate timed in a row, as a training loop runs it. '
    'Ratios are of back-to-back times, against `optax.sgd` and `optax.adam` in the same run.',
    "- kernels: instructions of the compiled step's entry computation that launch work "
    '(fusions, copies, library calls, loops).',
  ]
  if parent is not None:
    lines.append(
      f'- rows marked `{parent[1].strip()}`: the same optimizers with the library of that '
      'commit (a worktree of it), compiled and timed in this run.'
    )
  lines.append('')

  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'update_speed_{dev.platform}.md')

  def emit(line=''):
    """Prints a line and rewrites the file: a run stopped by a time limit
    keeps every row it measured."""
    lines.append(line)
    print(line, flush=True)
    report.write_results(out, lines)

  print('\n'.join(lines), flush=True)
  if '1' in sections:
    emit('## 1. Optimizer-only step (update + apply_updates)')
    emit()
    emit(
      '| tree | params | leaves | optimizer | interleaved (ms) | back-to-back (ms) | / sgd '
      '| / adam | compile (s) | / adam compile | state bytes / param | kernels |'
    )
    emit('|---|---|---|---|---|---|---|---|---|---|---|---|')
    against = []
    for name in trees:
      params, grads, n = step_inputs(tree_shapes(name))
      steps = {
        opt_name: optimizer_step(make(), params, grads)
        for opt_name, make in optimizers(parent).items()
      }
      interleaved = interleaved_medians({k: v[0] for k, v in steps.items()}, reps)
      b2b = {k: back_to_back_median(v[0], reps) for k, v in steps.items()}
      sgd, adam, adam_compile = b2b['sgd'], b2b['adam'], steps['adam'][1]
      for opt_name, (_, c, b, kernels, *_) in steps.items():
        t = b2b[opt_name]
        emit(
          f'| {name} | {n / 1e6:.2f}M | {len(jax.tree.leaves(params))} | {opt_name} | '
          f'{1e3 * interleaved[opt_name]:.2f} | {1e3 * t:.2f} | {t / sgd:.1f}x | '
          f'{t / adam:.1f}x | {c:.2f} | {c / adam_compile:.1f}x | {b:.1f} | {kernels} |'
        )
      if parent is not None:
        against += parent_rows(steps, max(reps, PAIRED_REPS), parent[1], name)
      del steps, params, grads
    if against:
      emit()
      emit(AGAINST_PARENT.format(parent[1].strip()))
      emit()
      emit(PARENT_HEAD)
      emit('|---|---|---|---|---|---|---|---|')
      for row in against:
        emit(row)

  if '2' in sections:
    emit()
    emit('## 2. Update time vs parameter count (one 2-D leaf per 1M, sgd vs sbs, back-to-back)')
    emit()
    emit('| params | sgd (ms) | sbs (ms) | sbs / sgd |')
    emit('|---|---|---|---|')
    for millions in sizes:
      params = {f'w{i}': jnp.full((1000, 1000), 0.01) for i in range(millions)}
      grads = materialize(params, seed=2)
      t_sgd = back_to_back_median(optimizer_step(optax.sgd(0.1), params, grads)[0], reps)
      t_sbs = back_to_back_median(optimizer_step(optax_sbs.sbs(0.1, key=0), params, grads)[0], reps)
      emit(f'| {millions}M | {1e3 * t_sgd:.2f} | {1e3 * t_sbs:.2f} | {t_sbs / t_sgd:.1f}x |')

  if '4' in sections:
    tree = 'resnet18' if not args.smoke else 'small_cnn'
    emit()
    emit(f"## 4. Where the SBS step's time goes ({tree} tree, back-to-back)")
    emit()
    emit('| variant | step (ms) | / sgd | page faults / step | kernels |')
    emit('|---|---|---|---|---|')
    for row in breakdown(tree, reps):
      emit(row)

  if '3' in sections:
    emit()
    emit('## 3. Full training step (forward, backward, update; interleaved)')
    emit()
    emit(
      '| model | batch | sgd (ms) | sbs (ms) | sbs overhead | sgd compile (s) | sbs compile (s) |'
    )
    emit('|---|---|---|---|---|---|---|')
    for model_name, batch in cases:
      step_reps = max(3, reps // (2 if model_name.startswith('resnet') else 1))
      run_sgd, c_sgd = train_step(model_name, optax.sgd(0.1), batch)
      run_sbs, c_sbs = train_step(model_name, optax_sbs.sbs(0.1, key=0), batch)
      times = interleaved_medians({'sgd': run_sgd, 'sbs': run_sbs}, step_reps, warmup=2)
      t_sgd, t_sbs = times['sgd'], times['sbs']
      emit(
        f'| {model_name} | {batch} | {1e3 * t_sgd:.1f} | {1e3 * t_sbs:.1f} | '
        f'{100 * (t_sbs / t_sgd - 1):+.1f}% | {c_sgd:.1f} | {c_sbs:.1f} |'
      )

  if '5' in sections:
    emit()
    emit('## 5. Cost vs number of leaves (transformer-like tree of small leaves, four shapes)')
    emit()
    emit(
      '| leaves | params | optimizer | compile (s) | / adam compile | kernels | distinct kernels '
      '| step, back-to-back (ms) | / adam | temporary bytes / param |'
    )
    emit('|---|---|---|---|---|---|---|---|---|---|')
    rows, against = leaf_scaling(leaf_counts, reps, parent)
    for row in rows:
      emit(row)
    if against:
      emit()
      emit(AGAINST_PARENT.format(parent[1].strip()))
      emit()
      emit(PARENT_HEAD.replace('| tree |', '| leaves |'))
      emit('|---|---|---|---|---|---|---|---|')
      for row in against:
        emit(row)
    emit()
    emit(
      'Collectives in the compiled step on 100 of these leaves, each sharded along its first '
      'axis over 8 CPU devices (FSDP; default sharding mode):'
    )
    emit()
    for row in collectives_section(8):
      emit(row)

  print(f'\nwritten to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
