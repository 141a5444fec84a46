"""Is it faster to run independent trials vectorised with jax.vmap, in one program?

Times the training step of the example's small CNN (and optionally other
models) for K trials: K sequential calls of the single-trial jitted step vs
one call of the step vmapped over K stacked train states and K batches.
Median over repetitions after warm-up; both in the same process.

  python benchmarks/trials_vmap.py [--trials 3] [--batch-size 32] [--model small_cnn]
"""

import argparse
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax

from harness import examples
from harness import report

CIFAR = examples.EXAMPLES['cifar']


def step_fn(state, images, labels):
  x = images.astype(jnp.float32) / 255.0

  def loss_fn(params):
    logits, updates = state.apply_fn(
      {'params': params, 'batch_stats': state.batch_stats}, x, train=True, mutable=['batch_stats']
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads, batch_stats=updates['batch_stats']), loss


def median_time(fn, reps):
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=3)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--model', default='small_cnn')
  parser.add_argument('--reps', type=int, default=30)
  parser.add_argument(
    '--out', default=os.path.join(ROOT, 'benchmarks', 'results', 'trials_vmap.md')
  )
  args = parser.parse_args()
  k, bs = args.trials, args.batch_size
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (k, bs, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (k, bs)).astype(np.int32)
  models, steps, train = (CIFAR.module(m) for m in ('models', 'steps', 'train'))
  model = models.create_model(args.model, 10)
  config = CIFAR.module('configs.default').Config(batch_size=bs)
  lines = [
    f'# Trials: sequential vs jax.vmap ({args.model}, batch {bs}, {k} trials)',
    '',
    f'- command: `python benchmarks/trials_vmap.py --trials {k} --batch-size {bs} '
    f'--model {args.model} --reps {args.reps}`',
    *report.machine_and_versions(),
    f'- median of {args.reps} steps after warm-up, in one process',
    '',
    *report.table_head(
      'optimizer', f'{k} sequential steps (ms)', 'one vmapped step (ms)', 'vmapped / sequential'
    ),
  ]
  for name in ('sgd', 'sbs'):
    tx = train.build_tx(config, name, 1000)
    single = [
      steps.create_state(model, tx, (32, 32, 3), jax.random.key(t), jax.random.key(t))
      for t in range(k)
    ]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *single)
    seq_step = jax.jit(step_fn)
    vec_step = jax.jit(jax.vmap(step_fn))
    x_dev, y_dev = jnp.asarray(images), jnp.asarray(labels)
    states = list(single)

    def run_seq():
      out = []
      for t in range(k):
        states[t], loss = seq_step(states[t], x_dev[t], y_dev[t])
        out.append(loss)
      return out

    box = [stacked]

    def run_vec():
      box[0], loss = vec_step(box[0], x_dev, y_dev)
      return loss

    for _ in range(3):
      run_seq(), run_vec()
    t_seq = median_time(run_seq, args.reps)
    t_vec = median_time(run_vec, args.reps)
    lines.append(f'| {name} | {1e3 * t_seq:.1f} | {1e3 * t_vec:.1f} | {t_vec / t_seq:.2f} |')
    print(lines[-1], flush=True)
  print('\n'.join(lines))
  report.write_results(args.out, lines)


if __name__ == '__main__':
  main()
