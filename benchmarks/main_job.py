"""Runs the project's main job and writes its results file.

  python benchmarks/main_job.py            # results/main_job_cpu.md (about 2 minutes)
  python benchmarks/main_job.py --out /tmp/main_job.md

The main job is ``python examples/cifar/main.py`` with no arguments: SGD vs
SBS on the CIFAR-10 sample committed with the example. This runs it as a
user would, in its own process with a fresh workdir, and writes its summary
under a header naming the machine, the versions and the command, so the
numbers that the example's README quotes come from a file a test checks them
against.
"""

import argparse
import os
import subprocess
import sys
import tempfile

from harness import report

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHMARKS)
MAIN = os.path.join('examples', 'cifar', 'main.py')


def main(argv: list[str] | None = None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--out', default=os.path.join(BENCHMARKS, 'results', 'main_job_cpu.md'), help='the results file'
  )
  parser.add_argument(
    'args',
    nargs='*',
    help="arguments for the example's main.py after --, for tests (default: none)",
  )
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    subprocess.run(
      [sys.executable, MAIN, *args.args, '--workdir', workdir],
      cwd=ROOT,
      check=True,
      stdout=subprocess.DEVNULL,
    )
    with open(os.path.join(workdir, 'summary.md'), encoding='utf-8') as f:
      summary = f.read().strip()
  command = ' '.join(
    ['python', 'benchmarks/main_job.py', *(['--', *args.args] if args.args else [])]
  )
  lines = [
    '# The main job: SGD vs SBS on the CIFAR-10 sample',
    '',
    f"- command: `{command}` (runs `python {MAIN}` with no arguments, the README's first set-up"
    ' command)',
    *report.machine_and_versions('flax'),
    '',
    summary,
    '',
  ]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  print('\n'.join(lines))
  return args.out


if __name__ == '__main__':
  main()
