"""Section 2: how the update time grows with the parameter count."""

from collections.abc import Iterator

import jax.numpy as jnp
import optax

import optax_sbs

from timing import measure


def section(sizes: tuple[int, ...], reps: int) -> Iterator[str]:
  """One 2-D leaf of 1M elements per million, sgd against sbs."""
  yield ''
  yield '## 2. Update time vs parameter count (one 2-D leaf per 1M, sgd vs sbs, back-to-back)'
  yield ''
  yield '| params | sgd (ms) | sbs (ms) | sbs / sgd |'
  yield '|---|---|---|---|'
  for millions in sizes:
    params = {f'w{i}': jnp.full((1000, 1000), 0.01) for i in range(millions)}
    grads = measure.materialize(params, seed=2)
    t_sgd = measure.back_to_back_median(
      measure.optimizer_step(optax.sgd(0.1), params, grads)[0], reps
    )
    t_sbs = measure.back_to_back_median(
      measure.optimizer_step(optax_sbs.sbs(0.1, key=0), params, grads)[0], reps
    )
    yield f'| {millions}M | {1e3 * t_sgd:.2f} | {1e3 * t_sbs:.2f} | {t_sbs / t_sgd:.1f}x |'
