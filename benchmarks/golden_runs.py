"""Golden runs: short trainings of each example whose rows are committed.

  python benchmarks/golden_runs.py lm --write      # writes benchmarks/golden/lm.json
  python benchmarks/golden_runs.py cifar --check   # retrains, compares, exits 1 on a change

Regenerating a study's results from its cache only re-renders stored rows;
it says nothing about whether the library still trains as it did. These
runs do: a few steps of SBS around each example's optimizer, at a fixed
``p = 0.5`` and with the adaptive ``p``, on data the repository holds (the
CIFAR-10 sample committed with the cifar example; a text the script writes
for the lm example). ``--check`` trains them again and compares every row:
timing fields and the params' hash aside, the floats within ``RTOL`` (XLA
may round differently from version to version, and its multi-threaded
convolutions from run to run) and, for the runs at a fixed ``p``, the logged
SBS update fractions exactly (the masks depend on the key and the shapes
alone).
One example per process: the examples' modules share names. Like the
tests, it runs with XLA's backend optimisations off (unless
``OPTAX_SBS_TEST_XLA_OPTIMIZE=1``): they change float rounding.
"""

import argparse
import json
import math
import os
import sys
import tempfile

FAST_COMPILE = '--xla_backend_optimization_level=0'
if __name__ == '__main__' and os.environ.get('OPTAX_SBS_TEST_XLA_OPTIMIZE') != '1':
  if FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + FAST_COMPILE).strip()

from harness import examples

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(BENCHMARKS, 'golden')
SAMPLE = os.path.join(examples.ROOT, 'examples', 'cifar', 'data', 'cifar10_sample.npz')
RTOL = 1e-4
# Fields that measure the machine, not the computation.
TIMING = ('tokens_per_sec', 'images_per_sec', 'seconds')
# Fields that a fixed-p run must reproduce exactly.
EXACT = ('sbs_update_fraction', 'sbs_mean_count')
# Hashes of floats, left out: even on one machine and jax version, XLA:CPU's
# multi-threaded convolutions may sum in another order from run to run (seen
# under load: every row within RTOL, the params' hash different).
FLOAT_HASHES = ('params_sha256',)

# example -> (the scale the loader reads, runs: name -> the example's fields).
RUNS = {
  'lm': (
    {'config': {'context_length': 16}},
    {
      'sbs p=0.5': dict(
        method='sbs', sbs_probability=0.5, num_layers=2, num_heads=2, embed_dim=16,
        context_length=16, batch_size=8, steps=20, warmup_steps=2, eval_interval=10,
        eval_batches=2, scan_layers=True, learning_rate=1e-2,
      ),
      'sbs lam=0': dict(
        method='sbs', alpha=0.1, lam=0.0, num_layers=2, num_heads=2, embed_dim=16,
        context_length=16, batch_size=8, steps=20, warmup_steps=2, eval_interval=10,
        eval_batches=2, learning_rate=1e-2,
      ),
    },
  ),
  'cifar': (
    {'test_examples': 100},
    {
      'sbs p=0.5': dict(
        method='sbs', probability=0.5, model='small_cnn', epochs=2, train_fraction=0.05,
        batch_size=16,
      ),
      'sbs adaptive': dict(
        method='sbs', model='small_cnn', epochs=2, train_fraction=0.05, batch_size=16,
      ),
    },
  ),
}  # fmt: skip


def _corpus(folder: str) -> str:
  """A small text the lm runs train on (the same bytes every time)."""
  lines = ['to be or not to be, that is the question.\n', 'all the world is a stage.\n']
  path = os.path.join(folder, 'corpus.txt')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(''.join(lines[i % 2] for i in range(200)))
  return path


def train(name: str) -> dict[str, list[dict]]:
  """The rows of every golden run of example ``name``, timing fields aside."""
  example = examples.EXAMPLES[name]
  scale, runs = RUNS[name]
  with tempfile.TemporaryDirectory() as folder:
    dataset = _corpus(folder) if name == 'lm' else SAMPLE
    data = example.load(dataset, None, scale)
    out = {}
    for run_name, fields in runs.items():
      rows = example.train(example.config(**fields), data, dataset, None)
      out[run_name] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  return out


def differences(expected: dict, found: dict) -> list[str]:
  """What differs between two sets of golden rows, in words (float hashes
  left out)."""
  problems = []
  for run_name, rows in expected.items():
    exact = 'p=0.5' in run_name
    got = found.get(run_name, [])
    if len(got) != len(rows):
      problems.append(f'{run_name}: {len(got)} rows, expected {len(rows)}')
      continue
    for i, (want, have) in enumerate(zip(rows, got)):
      if set(want) != set(have):
        problems.append(f'{run_name} row {i}: fields {sorted(have)}, expected {sorted(want)}')
        continue
      for key, value in want.items():
        other = have[key]
        if key in FLOAT_HASHES:
          continue
        if isinstance(value, float) and not (exact and key in EXACT):
          if not math.isclose(other, value, rel_tol=RTOL, abs_tol=1e-7):
            problems.append(f'{run_name} row {i}: {key} {other!r}, expected {value!r}')
        elif other != value:
          problems.append(f'{run_name} row {i}: {key} {other!r}, expected exactly {value!r}')
  return problems


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('example', choices=sorted(RUNS))
  action = parser.add_mutually_exclusive_group(required=True)
  action.add_argument('--write', action='store_true', help='train and write the golden rows')
  action.add_argument('--check', action='store_true', help='train and compare with them')
  args = parser.parse_args(argv)
  path = os.path.join(GOLDEN, f'{args.example}.json')
  import jax  # noqa: PLC0415

  computed_as = {
    'jax': jax.__version__,
    'xla_optimized': FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''),
  }
  found = train(args.example)
  if args.write:
    os.makedirs(GOLDEN, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      json.dump({**computed_as, 'runs': found}, f, indent=1, sort_keys=True)
      f.write('\n')
    print(f'wrote {path}')
    return 0
  with open(path, encoding='utf-8') as f:
    golden = json.load(f)
  expected = golden['runs']
  problems = differences(expected, found)
  for problem in problems:
    print(problem, file=sys.stderr)
  print(f'{args.example}: {len(problems)} differences in {len(expected)} runs')
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main())
