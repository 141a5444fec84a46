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

Each section is a module of ``benchmarks/timing`` (``optimizer_only``,
``growth``, ``training``, ``breakdown``, ``leaves``) over ``timing.measure``
(inputs, medians, compiled steps, kernels), ``timing.trees`` and
``timing.family`` (the optimizers, and the comparison with ``--parent``); this
script is their command line.

Writes ``benchmarks/results/update_speed_<platform>.md``. What the numbers
mean, and the alternatives measured and not kept, are in
``docs/evidence/cost.md``.
"""

import argparse
import json
import os
import shlex
import sys

import jax

from harness import report
from timing import breakdown
from timing import family
from timing import growth
from timing import leaves
from timing import optimizer_only
from timing import training
from timing import trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_cases(text: str) -> list[tuple[str, int]]:
  """``'small_cnn:16,resnet18:128'`` -> ``[('small_cnn', 16), ('resnet18', 128)]``."""
  cases = []
  for item in filter(None, text.split(',')):
    name, _, batch = item.partition(':')
    if name not in trees.cnn_names() or not batch.isdigit():
      raise argparse.ArgumentTypeError(f'bad training case {item!r}: want MODEL:BATCH')
    cases.append((name, int(batch)))
  return cases


def parse_trees(text: str) -> list[str]:
  names = [t for t in text.split(',') if t]
  known = sorted(trees.cnn_names()) + sorted(trees.TRANSFORMERS)
  for t in names:
    if t not in known:
      raise argparse.ArgumentTypeError(f'unknown tree {t!r}; choose from {", ".join(known)}')
  return names


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
    print(json.dumps(leaves.collective_counts()))
    return 0
  if args.smoke:
    trees_run, cases, reps, sizes = ['small_cnn', 'transformer_tiny'], [('small_cnn', 16)], 3, (1,)
    leaf_counts: tuple[int, ...] = (8, 16)
  else:
    trees_run = ['small_cnn', 'vgg11', 'resnet18', 'resnet50', 'transformer']
    cases = [('small_cnn', 16), ('small_cnn', 128), ('resnet18', 16)]
    if not args.quick:
      cases.append(('resnet18', 128))
    reps, sizes = (5 if args.quick else 20), (1, 5, 10, 25)
    leaf_counts = trees.LEAF_COUNTS
  trees_run = args.trees or trees_run
  cases = args.train_cases if args.train_cases is not None else cases
  reps = args.reps or reps
  leaf_counts = args.leaf_counts or leaf_counts
  sections = set(args.sections.split(','))
  parent = None
  if args.parent is not None:
    parent = (family.load_library(args.parent), family.parent_tag(args.parent))
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
  parts = {
    '1': lambda: optimizer_only.section(trees_run, reps, parent),
    '2': lambda: growth.section(sizes, reps),
    '3': lambda: training.section(cases, reps),
    '4': lambda: breakdown.section('resnet18' if not args.smoke else 'small_cnn', reps),
    '5': lambda: leaves.section(leaf_counts, reps, parent),
  }
  for number, part in parts.items():
    if number in sections:
      for line in part():
        emit(line)

  print(f'\nwritten to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
