"""What does SBS cost per step, next to plain Optax? Time, compile time, memory.

In one process, side by side, with params and state donated and the median
of many repetitions after warm-up:

1. the optimizer-only step (``update`` + ``apply_updates``) on parameter
   trees shaped like the example's small CNN, VGG11, ResNet-18 and ResNet-50,
   for optax.sgd, sgd(momentum=0.9), adam, MultiSteps(sgd, 4) and SBS
   (default, and the low-memory uint8-count / bf16-CMA variant), with compile
   time and optimizer-state bytes per parameter;
2. how the update time grows with the parameter count (1M -> 25M);
3. the full training step (forward, backward, update) of the small CNN and
   ResNet-18 at batch 16 and 128, SGD vs SBS.

  python benchmarks/update_speed.py            # everything (CPU: ~15 min)
  python benchmarks/update_speed.py --quick    # fewer reps, no batch-128 ResNet-18

Writes ``benchmarks/results/update_speed_<platform>.md``.
"""

import argparse
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples', 'cifar'))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

import models
import train as train_lib


def optimizers():
  return {
    'sgd': lambda: optax.sgd(0.1),
    'sgd m=0.9': lambda: optax.sgd(0.1, momentum=0.9),
    'adam': lambda: optax.adam(1e-3),
    'MultiSteps(sgd, 4)': lambda: optax.MultiSteps(optax.sgd(0.1), 4),
    'sbs': lambda: optax_sbs.sbs(0.1, key=0),
    'sbs uint8 count, bf16 cma': lambda: optax_sbs.sbs(
      0.1, key=0, count_dtype='uint8', cma_dtype='bfloat16'
    ),
  }


def model_params(name):
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


def optimizer_step(tx, params, grads):
  """(step callable, compile seconds, state bytes per parameter)."""

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

  return run, compile_s, state_bytes / n


def train_step(model_name, tx, batch):
  """(step callable, compile seconds) of the example's jitted train step."""
  model = models.create_model(model_name, 10)
  state = train_lib.create_state(model, tx, (32, 32, 3), jax.random.key(0))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
  mean, std = jnp.zeros(3), jnp.ones(3)
  start = time.perf_counter()
  compiled = (
    jax.jit(train_lib.train_step, donate_argnums=0)
    .lower(state, images, labels, mean, std)
    .compile()
  )
  compile_s = time.perf_counter() - start
  box = [state]

  def run():
    box[0], metrics = compiled(box[0], images, labels, mean, std)
    jax.block_until_ready(metrics)

  return run, compile_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--out', default=None)
  args = parser.parse_args()
  reps = 5 if args.quick else 20
  dev = jax.devices()[0]
  command = 'python benchmarks/update_speed.py' + (' --quick' if args.quick else '')
  lines = [
    f'# SBS update cost vs plain Optax ({dev.platform})',
    '',
    f'- command: `{command}`',
    f'- machine: {platform.machine()}, {os.cpu_count()} CPU cores, '
    f'{dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)',
    f'- versions: python {platform.python_version()}, jax {jax.__version__}, '
    f'optax {optax.__version__}, optax_sbs {optax_sbs.__version__}',
    f'- median of {reps} repetitions after warm-up, candidates interleaved within '
    'each repetition; params and state donated; ratios are against `optax.sgd` '
    'in the same run.',
    '',
  ]

  def emit(line=''):
    lines.append(line)
    print(line, flush=True)

  print('\n'.join(lines), flush=True)
  emit('## 1. Optimizer-only step (update + apply_updates)')
  emit()
  emit(
    '| tree | params | leaves | optimizer | step (ms) | / sgd | compile (s) '
    '| / adam compile | state bytes / param |'
  )
  emit('|---|---|---|---|---|---|---|---|---|')
  for name in ('small_cnn', 'vgg11', 'resnet18', 'resnet50'):
    params = materialize(model_params(name))
    grads = materialize(params, seed=1)
    n = sum(x.size for x in jax.tree.leaves(params))
    steps = {
      opt_name: optimizer_step(make(), params, grads) for opt_name, make in optimizers().items()
    }
    times = interleaved_medians({k: v[0] for k, v in steps.items()}, reps)
    base, adam_compile = times['sgd'], steps['adam'][1]
    for opt_name, (_, c, b) in steps.items():
      t = times[opt_name]
      emit(
        f'| {name} | {n / 1e6:.2f}M | {len(jax.tree.leaves(params))} | '
        f'{opt_name} | {1e3 * t:.2f} | {t / base:.1f}x | {c:.2f} | '
        f'{c / adam_compile:.1f}x | {b:.1f} |'
      )

  emit()
  emit('## 2. Update time vs parameter count (one 2-D leaf per 1M, sgd vs sbs)')
  emit()
  emit('| params | sgd (ms) | sbs (ms) | sbs / sgd |')
  emit('|---|---|---|---|')
  for millions in (1, 5, 10, 25):
    params = {f'w{i}': jnp.full((1000, 1000), 0.01) for i in range(millions)}
    grads = materialize(params, seed=2)
    times = interleaved_medians(
      {
        'sgd': optimizer_step(optax.sgd(0.1), params, grads)[0],
        'sbs': optimizer_step(optax_sbs.sbs(0.1, key=0), params, grads)[0],
      },
      reps,
    )
    t_sgd, t_sbs = times['sgd'], times['sbs']
    emit(f'| {millions}M | {1e3 * t_sgd:.2f} | {1e3 * t_sbs:.2f} | {t_sbs / t_sgd:.1f}x |')

  emit()
  emit('## 3. Full training step (forward, backward, update)')
  emit()
  emit('| model | batch | sgd (ms) | sbs (ms) | sbs overhead | sgd compile (s) | sbs compile (s) |')
  emit('|---|---|---|---|---|---|---|')
  cases = [('small_cnn', 16), ('small_cnn', 128), ('resnet18', 16)]
  if not args.quick:
    cases.append(('resnet18', 128))
  for model_name, batch in cases:
    step_reps = max(5, reps // (2 if model_name == 'resnet18' else 1))
    run_sgd, c_sgd = train_step(model_name, optax.sgd(0.1), batch)
    run_sbs, c_sbs = train_step(model_name, optax_sbs.sbs(0.1, key=0), batch)
    times = interleaved_medians({'sgd': run_sgd, 'sbs': run_sbs}, step_reps, warmup=2)
    t_sgd, t_sbs = times['sgd'], times['sbs']
    emit(
      f'| {model_name} | {batch} | {1e3 * t_sgd:.1f} | {1e3 * t_sbs:.1f} | '
      f'{100 * (t_sbs / t_sgd - 1):+.1f}% | {c_sgd:.1f} | {c_sbs:.1f} |'
    )

  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'update_speed_{dev.platform}.md')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'\nwritten to {out}')


if __name__ == '__main__':
  main()
