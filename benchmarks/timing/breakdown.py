"""Section 4: where the SBS step's time goes: the generator (replaced by a
2-instruction hash), the statistics (a fixed probability), and the page
faults per step (fresh memory for XLA's temporaries)."""

from collections.abc import Iterator
import contextlib
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs
from optax_sbs import _threefry

from timing import measure
from timing import trees


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


@contextlib.contextmanager
def stand_in_generator() -> Iterator[None]:
  """Within it, the library draws its masks from :func:`cheap_bits`.

  The library has no option for this (a benchmark's need is not an API):
  the context replaces the private ``optax_sbs._threefry.random_bits``, and
  raises if that name has moved, rather than timing the real generator
  twice. Only steps traced within it see the stand-in.
  """
  original = getattr(_threefry, 'random_bits', None)
  if original is None:
    raise RuntimeError('optax_sbs._threefry.random_bits has moved: update stand_in_generator')
  _threefry.random_bits = cheap_bits
  try:
    yield
  finally:
    _threefry.random_bits = original


def _rows(tree: str, reps: int) -> list[str]:
  """Where the SBS step's time goes: back-to-back times and page faults per
  step of SBS, SBS at a fixed probability (no statistics), each with the
  threefry generator replaced by a 2-instruction hash, next to sgd and adam."""
  params = measure.materialize(trees.tree_shapes(tree))
  grads = measure.materialize(params, seed=1)
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
  for name, (tx, replace) in variants.items():
    with stand_in_generator() if replace else contextlib.nullcontext():
      run, _, _, kernels, *_ = measure.optimizer_step(tx, params, grads)
    t = measure.back_to_back_median(run, reps)
    before = measure.page_faults()
    for _ in range(reps):
      run()
    faults = (measure.page_faults() - before) / reps
    rows.append((name, t, faults, kernels))
  sgd = rows[0][1]
  return [
    f'| {name} | {1e3 * t:.2f} | {t / sgd:.1f}x | {faults:.0f} | {kernels} |'
    for name, t, faults, kernels in rows
  ]


def section(tree: str, reps: int) -> Iterator[str]:
  """The breakdown on ``tree``."""
  yield ''
  yield f"## 4. Where the SBS step's time goes ({tree} tree, back-to-back)"
  yield ''
  yield '| variant | step (ms) | / sgd | page faults / step | kernels |'
  yield '|---|---|---|---|---|'
  yield from _rows(tree, reps)
