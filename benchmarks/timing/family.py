"""The optimizers timed: plain Optax and the family, and the family again
with an earlier commit's library (``--parent``), compared in pairs."""

from collections.abc import Iterator
import importlib
import os
import subprocess
import sys

import optax

import optax_sbs

from timing import measure


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


def parent_rows(steps: dict, reps: int, tag: str, label: str) -> list[str]:
  """Rows of this checkout against the parent for each row of
  :data:`PARENT_ROWS`: step times timed in pairs (:func:`paired_ratio`) and
  compile times, measured in the same run."""
  rows = []
  for name in PARENT_ROWS:
    if name + tag not in steps:
      continue
    now, before, ratio = measure.paired_ratio(steps[name][0], steps[name + tag][0], reps)
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


def against_parent(tag: str, what: str, rows: list[str]) -> Iterator[str]:
  """The table of ``rows`` (from :func:`parent_rows`) under its caption;
  ``what``: the first column's title."""
  yield ''
  yield AGAINST_PARENT.format(tag.strip())
  yield ''
  yield PARENT_HEAD.replace('| tree |', f'| {what} |')
  yield '|---|---|---|---|---|---|---|---|'
  yield from rows
