"""Runs a study of ``benchmarks/studies``, or writes its results from the cache.

  python benchmarks/run.py --list                      # the studies
  python benchmarks/run.py lm                          # train what the cache lacks, write results
  python benchmarks/run.py lm --cached-only            # write the results from the cache alone
  python benchmarks/run.py overfit --dataset PATH/cifar10.npz --cells 'SGD|SBS'
  python benchmarks/run.py paper_tables --scale smoke --workdir /tmp/c --out /tmp/t.md
  python benchmarks/run.py lm_tuned lm_corpus --local-data PATH --until-done  # a campaign

Every finished run is appended to the study's cache
(``benchmarks/results/trials/<cache>.jsonl``, committed), so a stopped study
resumes where it stopped and two processes can share one. Results are
written to ``benchmarks/results/<study>_<scale>.md`` (``--out``), with their
JSON and figures beside them. With ``--until-done`` the named studies are
passed through in turn, again and again, until a pass trains nothing and no
other process holds a run they wait for (a sweep's next rate waits for the
runs before it, which may be training in another process).
"""

import argparse
import importlib
import os
import sys
import time

from harness import report as report_lib
from harness import runner as runner_lib


def main(argv: list[str] | None = None) -> str | None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('studies', nargs='*', metavar='study', help='the studies (see --list)')
  parser.add_argument('--list', action='store_true', help='name the studies and exit')
  parser.add_argument('--scale', default=None, help="one of the study's scales (its default: cpu)")
  parser.add_argument(
    '--dataset',
    default=None,
    help="a TFDS name or a local file (.npz, .txt); default: the data the scale's results used",
  )
  parser.add_argument('--data-dir', default=None, help='TFDS data_dir')
  parser.add_argument(
    '--local-data',
    default=None,
    metavar='FOLDER',
    help="the folder holding local copies of the scales' data files, by the names their "
    'results give (instead of --dataset: each study finds its own)',
  )
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
  parser.add_argument(
    '--until-done',
    action='store_true',
    help='pass through the studies again until none trains anything and no other process '
    'holds one of their runs (waiting a minute while others do)',
  )
  parser.add_argument(
    '--start-no-run-after',
    type=float,
    default=None,
    metavar='HOURS',
    help='start no run once this many hours have passed (a run already started finishes)',
  )
  args = parser.parse_args(argv)
  if args.list:
    for name in runner_lib.study_names():
      print(f'{name:24s} {runner_lib.summary(runner_lib.load_study(name))}')
    return None
  if not args.studies:
    parser.error('name a study (see --list)')
  if len(args.studies) > 1 and args.out:
    parser.error('--out names one results file: name one study')
  if args.cached_only and args.until_done:
    parser.error('--until-done trains: it does not go with --cached-only')
  deadline = None
  if args.start_no_run_after is not None:
    deadline = time.time() + 3600 * args.start_no_run_after
  out = None
  while True:
    trained = held = deferred = 0
    for name in args.studies:
      runner, out = _run(parser, args, name, deadline)
      trained, held, deferred = (
        trained + runner.trained,
        held + runner.held_elsewhere,
        deferred + runner.deferred,
      )
    if not args.until_done or trained + held == 0:
      return out
    if trained == 0:
      time.sleep(60)  # another process trains what the studies wait for


def _run(parser, args, name: str, deadline: float | None):
  """One pass through study ``name``: trains what it can, writes its results."""
  try:
    study = runner_lib.load_study(name)
    chosen = ('dataset', 'data_dir', 'cells', 'cached_only', 'workdir', 'out', 'local_data')
    options = runner_lib.Options(
      study=name,
      scale=args.scale or study.DEFAULT_SCALE,
      start_no_run_after=deadline,
      **{field: getattr(args, field) for field in chosen},
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
  return runner, runner.out


if __name__ == '__main__':
  main()
