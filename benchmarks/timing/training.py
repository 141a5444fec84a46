"""Section 3: the full training step of the cifar example (forward,
backward, update), SGD against SBS."""

from collections.abc import Iterator
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

from harness import examples
from timing import measure


def train_step(model_name, tx, batch):
  """(step callable, compile seconds) of the example's jitted train step."""
  models, steps = (examples.EXAMPLES['cifar'].module(m) for m in ('models', 'steps'))
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


def section(cases: list[tuple[str, int]], reps: int) -> Iterator[str]:
  """``cases``: (model, batch) pairs, each timed interleaved."""
  yield ''
  yield '## 3. Full training step (forward, backward, update; interleaved)'
  yield ''
  yield '| model | batch | sgd (ms) | sbs (ms) | sbs overhead | sgd compile (s) | sbs compile (s) |'
  yield '|---|---|---|---|---|---|---|'
  for model_name, batch in cases:
    step_reps = max(3, reps // (2 if model_name.startswith('resnet') else 1))
    run_sgd, c_sgd = train_step(model_name, optax.sgd(0.1), batch)
    run_sbs, c_sbs = train_step(model_name, optax_sbs.sbs(0.1, key=0), batch)
    times = measure.interleaved_medians({'sgd': run_sgd, 'sbs': run_sbs}, step_reps, warmup=2)
    t_sgd, t_sbs = times['sgd'], times['sbs']
    yield (
      f'| {model_name} | {batch} | {1e3 * t_sgd:.1f} | {1e3 * t_sbs:.1f} | '
      f'{100 * (t_sbs / t_sgd - 1):+.1f}% | {c_sgd:.1f} | {c_sbs:.1f} |'
    )
