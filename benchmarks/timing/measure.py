"""How the timing modules measure: inputs, medians, compiled steps, kernels.

Every measurement runs in this process, side by side with its baseline,
params and state donated, after warm-up; the ratios that matter are taken
within one run (:func:`interleaved_medians`, :func:`paired_ratio`).
"""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


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


def page_faults() -> int:
  """Minor page faults of this process so far (0 where not reported)."""
  try:
    import resource  # noqa: PLC0415  (POSIX only)
  except ImportError:
    return 0
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
