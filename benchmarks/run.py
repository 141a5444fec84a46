"""Runs a study of ``benchmarks/studies``, or writes its results from the cache.

  python benchmarks/run.py --list                      # the studies
  python benchmarks/run.py lm                          # train what the cache lacks, write results
  python benchmarks/run.py lm --cached-only            # write the results from the cache alone
  python benchmarks/run.py overfit --dataset PATH/cifar10.npz --cells 'SGD|SBS'
  python benchmarks/run.py paper_tables --scale smoke --workdir /tmp/c --out /tmp/t.md

Every finished run is appended to the study's cache
(``benchmarks/results/trials/<cache>.jsonl``, committed), so a stopped study
resumes where it stopped and two processes can share one. Results are
written to ``benchmarks/results/<study>_<scale>.md`` (``--out``), with their
JSON and figures beside them.
"""

import argparse
import importlib
import os
import sys

from harness import report as report_lib
from harness import runner as runner_lib


def main(argv: list[str] | None = None) -> str | None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('study', nargs='?', help='the study (see --list)')
  parser.add_argument('--list', action='store_true', help='name the studies and exit')
  parser.add_argument('--scale', default=None, help="one of the study's scales (its default: cpu)")
  parser.add_argument(
    '--dataset',
    default=None,
    help="a TFDS name or a local file (.npz, .txt); default: the data the scale's results used",
  )
  parser.add_argument('--data-dir', default=None, help='TFDS data_dir')
  parser.add_argument(
    '--cells', default=None, help='a regular expression: only the cells whose name it matches'
  )
  parser.add_argument(
    '--cached-only',
    action='store_true',
    help='train nothing: write the results from the cache, listing unfinished cells as such',
  )
  parser.add_argument('--workdir', default=None, help='the folder of the cache files')
  parser.add_argument('--out', default=None, help='the markdown path (JSON and figures beside)')
  parser.add_argument('--no-figures', action='store_true', help='write no figures')
  args = parser.parse_args(argv)
  if args.list:
    for name in runner_lib.study_names():
      print(f'{name:24s} {runner_lib.summary(runner_lib.load_study(name))}')
    return None
  if not args.study:
    parser.error('name a study (see --list)')
  try:
    study = runner_lib.load_study(args.study)
    chosen = ('dataset', 'data_dir', 'cells', 'cached_only', 'workdir', 'out')
    options = runner_lib.Options(
      study=args.study,
      scale=args.scale or study.DEFAULT_SCALE,
      **{name: getattr(args, name) for name in chosen},
    )
    runner = runner_lib.Runner(study, options)
    analysis = importlib.import_module(f'harness.analyses.{study.ANALYSIS}')
    result = analysis.report(runner)
  except ValueError as e:
    parser.exit(2, f'error: {e}\n')
  report_lib.write_results(runner.out, result.lines, result.payload, result.indent)
  if not args.no_figures:
    stem = os.path.splitext(runner.out)[0]
    for suffix, draw in result.figures.items():
      draw(stem + suffix)
  print('\n'.join(result.lines))
  print(f'written to {runner.out}', file=sys.stderr)
  return runner.out


if __name__ == '__main__':
  main()
