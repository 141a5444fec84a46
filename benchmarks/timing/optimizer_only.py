"""Section 1: the optimizer-only step (``update`` + ``apply_updates``) on
model-shaped trees, plain Optax against the family (and the parent)."""

from collections.abc import Iterator

import jax

from timing import family
from timing import measure
from timing import trees as trees_lib


def section(trees: list[str], reps: int, parent=None) -> Iterator[str]:
  """The section's lines, each as soon as it is measured."""
  yield '## 1. Optimizer-only step (update + apply_updates)'
  yield ''
  yield (
    '| tree | params | leaves | optimizer | interleaved (ms) | back-to-back (ms) | / sgd '
    '| / adam | compile (s) | / adam compile | state bytes / param | kernels |'
  )
  yield '|---|---|---|---|---|---|---|---|---|---|---|---|'
  against = []
  for name in trees:
    params, grads, n = measure.step_inputs(trees_lib.tree_shapes(name))
    steps = {
      opt_name: measure.optimizer_step(make(), params, grads)
      for opt_name, make in family.optimizers(parent).items()
    }
    interleaved = measure.interleaved_medians({k: v[0] for k, v in steps.items()}, reps)
    b2b = {k: measure.back_to_back_median(v[0], reps) for k, v in steps.items()}
    sgd, adam, adam_compile = b2b['sgd'], b2b['adam'], steps['adam'][1]
    for opt_name, (_, c, b, kernels, *_) in steps.items():
      t = b2b[opt_name]
      yield (
        f'| {name} | {n / 1e6:.2f}M | {len(jax.tree.leaves(params))} | {opt_name} | '
        f'{1e3 * interleaved[opt_name]:.2f} | {1e3 * t:.2f} | {t / sgd:.1f}x | '
        f'{t / adam:.1f}x | {c:.2f} | {c / adam_compile:.1f}x | {b:.1f} | {kernels} |'
      )
    if parent is not None:
      against += family.parent_rows(steps, max(reps, family.PAIRED_REPS), parent[1], name)
    del steps, params, grads
  if against:
    yield from family.against_parent(parent[1], 'tree', against)
