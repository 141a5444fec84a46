"""Table 4's ResNet-18 slice on an accelerator: SGD vs SBS, 1/8 of CIFAR-10, batch 128.

The paper's Table 4 trains ResNet-18 on fractions of CIFAR-10; this is its
batch-128, 1/8 cell (6,250 images) for SGD and SBS (the paper's alpha = 0.1,
lam = -4, momentum 0.9 at batch 128), with the example's methods, model,
sigmoid learning-rate schedule and per-trial setup
(``examples/cifar``: trial t has its own class-balanced subset,
normalisation, init and SBS key, the same for both methods, so the trials are
paired). Built for a GPU: the example's on-device loop (``examples/cifar/device_loop.py``)
runs every trial of a method as one program.

No augmentation (the paper names none, as in our CPU tables). Reported: the
test accuracy of the last epoch and its mean over the last 10% of epochs,
mean ± std over trials, SBS minus SGD paired per trial with a 95% t interval,
the train accuracy, and the time per step of each method (the ratio is the
step overhead of SBS inside a real training step).

  python benchmarks/paper_slice.py --dataset PATH/TO/cifar10.npz   # GPU
  python benchmarks/paper_slice.py --smoke --out /tmp/slice.md             # CPU, seconds

The methods advance an epoch each in turn; with ``--time-budget`` both stop
after the last epoch that fits (paired, the learning rate then not fully
decayed: the table says so). Writes ``benchmarks/results/paper_slice_<platform>.md``
and ``.json`` after every epoch, so a run killed by a time limit keeps what finished.
"""

import argparse
import dataclasses
import math
import os
import shlex
import sys

import jax
import numpy as np

from harness import examples
from harness import report
from harness import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = examples.EXAMPLES['cifar']
device_loop = CIFAR.module('device_loop')
input_pipeline = CIFAR.module('input_pipeline')
train_lib = CIFAR.module('train')
Config = CIFAR.config_class()

METHODS = ('sgd', 'sbs')


@dataclasses.dataclass(frozen=True)
class Slice:
  model: str
  fraction: float
  batch_size: int
  epochs: int
  trials: int
  eval_batch_size: int


SLICES = {
  # Table 4's batch-128 row at 1/8 (the paper: 100 epochs, 10 trials).
  'paper': Slice('resnet18', 1 / 8, 128, 100, 3, 1000),
  # The same program on a CPU in seconds (synthetic data unless --dataset).
  'smoke': Slice('small_cnn', 1 / 4, 16, 2, 2, 50),
}


def synthetic_dataset(n_train=256, n_test=100, hw=32):
  """The smoke run's made-up data (no flips, as the slice trains)."""
  return input_pipeline.synthetic(n_train, n_test, hw, flip=False)


def export_subset(data, fraction: float, test_examples: int, path: str) -> None:
  """Writes class-balanced subsets of the training and test sets (seed 0)."""
  rng = np.random.default_rng(0)
  train = input_pipeline.class_balanced_subset(data.y_train, fraction, rng)
  test = input_pipeline.class_balanced_subset(
    data.y_test, min(1.0, test_examples / len(data.y_test)), rng
  )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez_compressed(
    path,
    x_train=data.x_train[train],
    y_train=data.y_train[train],
    x_test=data.x_test[test],
    y_test=data.y_test[test],
  )
  print(f'{path}: {len(train)} training and {len(test)} test images')


def make_config(sl: Slice, learning_rate: float) -> Config:
  """The example's configuration of the slice (its fields named alike)."""
  same = {f.name: getattr(sl, f.name) for f in dataclasses.fields(sl) if f.name != 'fraction'}
  return Config(**same, train_fraction=sl.fraction, learning_rate=learning_rate, augment=False)


def summary_rows(results: dict) -> list[str]:
  per_method = {}
  for method, r in results.items():
    test = np.asarray(r['curves']['test_accuracy'])  # [epochs, trials]
    last = max(1, math.ceil(0.1 * len(test)))
    per_method[method] = dict(
      final=test[-1],
      last10=test[-last:].mean(0),
      train=np.asarray(r['curves']['train_accuracy'])[-1],
      train_loss=np.asarray(r['curves']['train_loss'])[-1],
    )
  rows = report.table_head(
    'method',
    'trials',
    'test, last epoch',
    'test, last 10%',
    'vs SGD (points)',
    '95% CI',
    'wins',
    'train acc',
    'train loss',
    'step (ms)',
    'step / SGD',
  )
  base = per_method.get('sgd')
  for method, m in per_method.items():
    r = results[method]
    diff = ci = wins = '—'
    if base is not None and method != 'sgd' and len(base['last10']) == len(m['last10']):
      d, lo, hi, w = stats.paired_difference(m['last10'], base['last10'])
      diff, ci, wins = f'{d:+.2f}', f'[{lo:+.2f}, {hi:+.2f}]', f'{w}/{len(m["last10"])}'
    ratio = r['step_ms'] / results['sgd']['step_ms'] if 'sgd' in results else float('nan')
    rows.append(
      f'| {method} | {len(m["final"])} | {stats.mean_std(m["final"])} | '
      f'{stats.mean_std(m["last10"])} | {diff} | {ci} | {wins} | '
      f'{stats.mean_std(m["train"])} | {stats.mean_std(m["train_loss"], 3)} | '
      f'{r["step_ms"]:.2f} | {ratio:.2f}x |'
    )
  return rows


def write(out: str, header: list[str], results: dict, config: Config, sl: Slice) -> None:
  done = min(r['epochs'] for r in results.values())
  lines = header + summary_rows(results)
  if done < config.epochs:
    lines += [
      '',
      f'**Stopped by the time budget after epoch {done} of {config.epochs}**: the learning '
      'rate had not finished its decay; both methods stopped after the same epoch (paired).',
    ]
  lines += [
    '',
    f'Test accuracy in %, mean ± std over trials; "last 10%" is the mean over the last '
    f"{max(1, math.ceil(0.1 * done))} epoch(s) run, the paper's reading; the difference "
    'is paired per trial (same subset, order and init). Step times: median epoch time after '
    'the first (which compiles) over the steps of an epoch, all trials at once.',
  ]
  payload = dict(slice=dataclasses.asdict(sl), config=dataclasses.asdict(config), results=results)
  report.write_results(out, lines, payload)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--smoke', action='store_true', help='tiny sizes for a CPU (seconds)')
  parser.add_argument('--dataset', default=None, help='a .npz path or TFDS name (smoke: synthetic)')
  parser.add_argument('--data-dir', default=None, help='TFDS data_dir')
  parser.add_argument('--epochs', type=int, default=None, help="the slice's epochs instead")
  parser.add_argument('--trials', type=int, default=None, help="the slice's trials instead")
  parser.add_argument('--learning-rate', type=float, default=0.1)
  parser.add_argument(
    '--train-fraction',
    type=float,
    default=None,
    help="the slice's fraction of the training set instead (1 for a file that is the subset)",
  )
  parser.add_argument(
    '--export-subset',
    default=None,
    metavar='NPZ',
    help='write a class-balanced subset of --dataset (the fraction of the training set, '
    '--export-test test images) to NPZ and exit: the data to carry to a machine without it',
  )
  parser.add_argument('--export-test', type=int, default=5000)
  parser.add_argument(
    '--time-budget',
    type=float,
    default=None,
    metavar='SECONDS',
    help='stop both methods after the last epoch that fits (results are written every epoch)',
  )
  parser.add_argument('--out', default=None, help='markdown path (the .json goes beside it)')
  args = parser.parse_args(argv)
  sl = SLICES['smoke' if args.smoke else 'paper']
  sl = dataclasses.replace(
    sl,
    epochs=sl.epochs if args.epochs is None else args.epochs,
    trials=sl.trials if args.trials is None else args.trials,
    fraction=sl.fraction if args.train_fraction is None else args.train_fraction,
  )
  if not 0 < sl.fraction <= 1:
    parser.error('--train-fraction must be in (0, 1]')
  if sl.epochs < 1 or sl.trials < 1:
    parser.error('--epochs and --trials must be >= 1')
  if args.dataset is None and not args.smoke:
    parser.error('--dataset is required (a CIFAR-10 .npz or cifar10 with --data-dir)')
  if args.dataset is None:
    data = synthetic_dataset()
  else:
    try:
      data = input_pipeline.load(args.dataset, args.data_dir, download=False)
    except input_pipeline.DataError as e:
      parser.exit(2, f'error: {e}\n')
  if args.export_subset:
    export_subset(data, sl.fraction, args.export_test, args.export_subset)
    return 0
  config = make_config(sl, args.learning_rate)
  dev = jax.devices()[0]
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'paper_slice_{dev.platform}.md')
  command = shlex.join(
    ['python', 'benchmarks/paper_slice.py'] + list(sys.argv[1:] if argv is None else argv)
  )
  header = [
    f'# Table 4 slice: {sl.model}, {sl.fraction:g} of the training set, batch {sl.batch_size} '
    f'({dev.platform})',
    '',
    f'- command: `{command}`',
    *report.machine_and_versions(),
    f'- data: {data.name}, {sl.epochs} epochs, {sl.trials} paired trials, learning rate '
    f'{config.learning_rate} -> {config.end_learning_rate} (sigmoid), momentum '
    f"{train_lib.default_momentum(sl.batch_size)} (the paper's pairing with batch {sl.batch_size}), "
    f'SBS alpha={config.alpha}, lam={config.lam}',
    '',
  ]
  print('\n'.join(header), flush=True)
  results = device_loop.run_on_device(
    config,
    data,
    args.time_budget,
    log=lambda s: print(s, flush=True),
    on_epoch=lambda results: write(out, header, results, config, sl),
    methods=METHODS,
  )
  print('\n'.join(summary_rows(results)))
  print(f'\nwritten to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
