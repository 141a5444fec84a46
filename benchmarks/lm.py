"""AdamW against update masks around it on a character-level transformer.

Runs the training program of ``examples/lm`` (a small Flax NNX transformer on
Tiny Shakespeare) for five methods: AdamW, ``masked_updates(AdamW)``
(SkipUpdate: updates kept with probability p, rescaled by 1/p),
``magma(AdamW)``, Learning-Rate Dropout (``masked_updates`` per element,
not rescaled) and SBS (``with_stochastic_batch_size`` around AdamW, with the
paper's settings and without its global term, lam = 0). Every cell (a method
and its options) runs at every peak learning rate of a small sweep on the same paired
trials (trial t: same init, same training windows, same optimizer key); each
method is reported at its own best rate (lowest mean final validation loss),
against AdamW at its best rate, with the paired difference of the final
validation loss (nats per character), its 95% t interval
(``scipy.stats.ttest_rel``) and the number of trials in which the method is
lower. The rate is chosen on the validation loss that is reported, so the
table also gives the test loss of the same runs.

  python benchmarks/lm.py                       # scale cpu: ~1 h on 2 CPU cores
  python benchmarks/lm.py --cached-only         # tables from the cached trials
  python benchmarks/lm.py --scale smoke --workdir /tmp/t --out /tmp/lm.md  # seconds

Every finished trial is cached as JSON in --workdir (by default
``benchmarks/results/trials/lm_<scale>/``), named by a hash of its
configuration (without the workdir, the dataset by file name), so a rerun
resumes. Writes ``benchmarks/results/lm_<scale>.md``, ``lm_<scale>.json``
and ``lm_<scale>_curves.png``.
"""

import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The example's modules (configs, train, ...) come first: examples/cifar has
# modules of the same names.
sys.path.insert(0, os.path.join(ROOT, 'examples', 'lm'))

import numpy as np

from configs.default import Config
import input_pipeline
import models
import report
import results as results_lib
import train as train_lib
import trial_cache

# The shared offline copy of the file TFDS's tiny_shakespeare downloads.
SHARED_TEXT = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'tinyshakespeare.txt')


@dataclasses.dataclass(frozen=True)
class Scale:
  num_layers: int
  num_heads: int
  embed_dim: int
  context_length: int
  batch_size: int
  steps: int
  warmup_steps: int
  eval_interval: int
  eval_batches: int
  trials: int
  learning_rates: tuple[float, ...]


SCALES = {
  # 2 CPU cores: one run of 1000 steps takes about a minute, compilation
  # included, so the 5 methods x 4 rates x 3 trials = 60 runs take about 1 h
  # (0.71 h for the first 45, before 0.1 was added: four methods were best
  # at 0.03, the edge). The model (2 blocks, width 64, ~110k parameters)
  # sees 2M characters, 2 passes over the train split.
  'cpu': Scale(2, 4, 64, 64, 32, 1000, 50, 100, 8, 3, (3e-3, 1e-2, 3e-2, 1e-1)),
  # Seconds: for the tests (which train their other tiny runs at this scale too).
  'smoke': Scale(1, 2, 16, 16, 8, 20, 2, 10, 2, 2, (3e-3, 1e-2)),
}

# Every cell: its method and options (the paper's or the library's defaults),
# beside the rate. A cell is named by its method, or by method and reading.
CELLS = {
  'adamw': ('adamw', {}),
  'masked_updates': ('masked_updates', {'probability': 0.5, 'granularity': 'leaf'}),
  'magma': ('magma', {'probability': 0.5, 'tau': 2.0, 'granularity': 'leaf'}),
  'lr_dropout': ('lr_dropout', {'probability': 0.5}),
  'sbs': ('sbs', {'alpha': 0.1, 'lam': -4.0}),
  # The README's advice for SBS: no global term (it froze the head above).
  'sbs_lam0': ('sbs', {'alpha': 0.1, 'lam': 0.0}),
  # Controls for what SBS lam = 0 does (run on the confirmation seeds only):
  # random delays at a fixed p, and a deterministic average of 2 batches.
  'sbs_p05': ('sbs', {'sbs_probability': 0.5}),
  'adamw_accumulate2': ('adamw_accumulate', {'accumulate_steps': 2}),
}
# The cells of the main comparison (the rest are controls, run by name).
MAIN_CELLS = ('adamw', 'masked_updates', 'magma', 'lr_dropout', 'sbs', 'sbs_lam0')
# Config fields added after trials were cached, at their defaults.
ADDED_FIELDS = {'accumulate_steps': 2, 'scan_layers': False}
OPTIONS = {cell: options for cell, (_, options) in CELLS.items()}


def cell_name(cell: str) -> str:
  method, options = CELLS[cell]
  text = ', '.join(f'{k}={v}' for k, v in options.items())
  return f'{method} ({text})' if text else method


def base_config(scale: Scale, dataset: str, data_dir: str | None) -> Config:
  return Config(
    dataset=dataset,
    data_dir=data_dir,
    num_layers=scale.num_layers,
    num_heads=scale.num_heads,
    embed_dim=scale.embed_dim,
    context_length=scale.context_length,
    batch_size=scale.batch_size,
    steps=scale.steps,
    warmup_steps=scale.warmup_steps,
    eval_interval=scale.eval_interval,
    eval_batches=scale.eval_batches,
    trials=scale.trials,
    workdir='',
  )


def run_config(base: Config, cell: str, learning_rate: float) -> Config:
  method, options = CELLS[cell]
  return dataclasses.replace(base, methods=(method,), learning_rate=learning_rate, **options)


def cell_key(config: Config) -> str:
  """The cache key of a configuration (``trial_cache.config_key``)."""
  return trial_cache.config_key(
    config, ignore=('workdir', 'data_dir', 'download'), added_fields=ADDED_FIELDS
  )


def run_cell(config: Config, data, workdir: str, train: bool = True) -> tuple[list[dict], float]:
  """Rows of every finished trial of one configuration, and their seconds
  (``trial_cache.run_trials``: trial by trial, cached as each finishes)."""
  return trial_cache.run_trials(
    config, cell_key(config), lambda single: train_lib.run(single, data), workdir, train=train
  )


def final_losses(rows: list[dict], key: str = 'val_loss') -> np.ndarray:
  """Per trial (in trial order): ``key`` of the trial's last evaluation."""
  (method,) = {r['method'] for r in rows}
  return np.asarray([r[key] for r in train_lib.final_rows(rows, method)])


def mean_std(values: np.ndarray) -> str:
  return trial_cache.mean_std(values, digits=4)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', default='cpu', choices=sorted(SCALES))
  parser.add_argument(
    '--dataset',
    default=SHARED_TEXT if os.path.isfile(SHARED_TEXT) else 'tiny_shakespeare',
    help='a .txt path (split as TFDS splits tiny_shakespeare) or the TFDS name; '
    'default: the shared offline copy if present',
  )
  parser.add_argument('--data-dir', default=None, help='TFDS data_dir')
  parser.add_argument(
    '--methods',
    nargs='+',
    default=list(MAIN_CELLS),
    choices=list(CELLS),
    help='cells to run (default: the main comparison)',
  )
  parser.add_argument('--trials', type=int, default=None, help="the scale's trials instead")
  parser.add_argument(
    '--learning-rates',
    type=float,
    nargs='+',
    default=None,
    help="the scale's sweep instead (e.g. one rate, to confirm a finding on fresh seeds)",
  )
  parser.add_argument(
    '--seed',
    type=int,
    default=0,
    help='trial t uses seed + t; another seed gives trials independent of the sweep that '
    'chose the rates',
  )
  parser.add_argument('--workdir', default=None, help='the trial cache')
  parser.add_argument('--out', default=None, help='markdown path (.json and _curves.png beside)')
  parser.add_argument(
    '--cached-only',
    action='store_true',
    help='train nothing: write the results from the cached trials, listing unfinished runs',
  )
  args = parser.parse_args(argv)
  scale = SCALES[args.scale]
  if args.trials:
    scale = dataclasses.replace(scale, trials=args.trials)
  if args.learning_rates:
    scale = dataclasses.replace(scale, learning_rates=tuple(args.learning_rates))
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'lm_{args.scale}.md')
  workdir = args.workdir or os.path.join(
    ROOT, 'benchmarks', 'results', 'trials', f'lm_{args.scale}'
  )
  command = 'python benchmarks/lm.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
  try:
    data = input_pipeline.load(args.dataset, args.data_dir)
    input_pipeline.check_lengths(data, scale.context_length)
  except input_pipeline.DataError as e:
    parser.exit(2, f'error: {e}\n')
  base = base_config(scale, args.dataset, args.data_dir)
  if args.seed:  # seed 0 is the default: the keys of the cached trials stay
    base = dataclasses.replace(base, seed=args.seed)
  methods = [m for m in CELLS if m in args.methods]  # cells, in CELLS' order

  # Every method at every rate, trial by trial (cached).
  runs: dict[tuple[str, float], list[dict]] = {}
  unfinished: dict[tuple[str, float], int] = {}
  total_seconds, started = 0.0, time.perf_counter()
  for method in methods:
    for lr in scale.learning_rates:
      print(f'[{time.perf_counter() - started:7.0f}s] {method} lr={lr:g}', flush=True)
      rows, seconds = run_cell(run_config(base, method, lr), data, workdir, not args.cached_only)
      total_seconds += seconds
      finished = len({r['trial'] for r in rows})
      if finished == scale.trials:
        runs[method, lr] = rows
      else:
        unfinished[method, lr] = finished

  # Each method at its best rate (lowest mean final validation loss).
  best = {}
  for method in methods:
    done = {
      lr: final_losses(runs[method, lr]).mean()
      for lr in scale.learning_rates
      if (method, lr) in runs
    }
    if len(done) == len(scale.learning_rates):
      best[method] = min(done, key=done.get)
  base_val = final_losses(runs['adamw', best['adamw']]) if 'adamw' in best else None
  cells, table, curves = [], [], {}
  for method in methods:
    if method not in best:
      table.append(
        f'| {cell_name(method)} | not run yet ('
        + ', '.join(
          f'lr {lr:g}: {unfinished.get((method, lr), scale.trials)}/{scale.trials}'
          for lr in scale.learning_rates
        )
        + ' trials cached) |'
        + ' |' * 7
      )
      continue
    lr = best[method]
    rows = runs[method, lr]
    val, test = final_losses(rows), final_losses(rows, 'test_loss')
    versus, cols = None, '(baseline) | | '
    if method != 'adamw' and base_val is not None:
      diff, lo, hi, wins = trial_cache.paired_difference(val, base_val, better='lower')
      ci95 = None if np.isnan(lo) else [lo, hi]  # one trial: no interval
      versus = {'diff': diff, 'ci95': ci95, 'wins': wins}
      cols = f'{diff:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {wins}/{len(val)}'
    elif method != 'adamw':
      cols = 'adamw not run yet | | '
    cells.append(
      {
        'name': cell_name(method),
        'method': CELLS[method][0],
        'options': dict(OPTIONS[method], learning_rate=lr),
        'trials': len(val),
        'val_loss': float(val.mean()),
        'vs_adamw': versus,
      }
    )
    tokens_per_sec = np.mean([r['tokens_per_sec'] for r in rows])
    # A best rate at the edge of the sweep may not be the method's best.
    edge = (
      '*'
      if len(scale.learning_rates) > 1
      and lr in (min(scale.learning_rates), max(scale.learning_rates))
      else ''
    )
    table.append(
      f'| {cell_name(method)} | {lr:g}{edge} | {mean_std(val)} | {mean_std(test)} | {cols} | '
      f'{tokens_per_sec:.0f} |'
    )
    curves[f'{cell_name(method)}, lr {lr:g}'] = results_lib.curves(rows, CELLS[method][0])

  sweep = []
  for method in methods:
    entries = [
      f'{final_losses(runs[method, lr]).mean():.4f}' if (method, lr) in runs else 'not run yet'
      for lr in scale.learning_rates
    ]
    sweep.append(f'| {method} | ' + ' | '.join(entries) + ' |')

  n_params = models.num_params(base, data.vocab_size)
  lines = [
    f'# AdamW vs update masks on a character-level transformer, scale "{args.scale}"',
    '',
    f'- command: `{command.strip()}`'
    + (
      ' (from the cached trials, which `python benchmarks/lm.py` trained)'
      if args.cached_only
      else ''
    ),
    f'- data: `{os.path.basename(args.dataset)}`: {len(data.train):,} / {len(data.validation):,}'
    f" / {len(data.test):,} characters (train / validation / test, TFDS tiny_shakespeare's split),"
    f' vocabulary {data.vocab_size}',
    f'- model: decoder-only transformer (Flax NNX), {scale.num_layers} block(s), width'
    f' {scale.embed_dim}, {scale.num_heads} heads, context {scale.context_length}, {n_params:,}'
    ' parameters',
    f'- training: {scale.steps} steps of {scale.batch_size} random windows, AdamW (b1 0.9, b2'
    f' 0.99, weight decay {base.weight_decay} on matrices and embeddings), linear warm-up'
    f' {scale.warmup_steps} steps then cosine to {base.end_learning_rate_ratio}x, gradient'
    f' clipping at norm {base.clip_norm}; peak rates swept: '
    + ', '.join(f'{lr:g}' for lr in scale.learning_rates)
    + f'; {scale.trials} paired trials per method and rate (seeds {base.seed}..'
    f'{base.seed + scale.trials - 1})',
    f'- evaluation: loss in nats per character on {scale.eval_batches * scale.batch_size} fixed'
    ' windows of each split, after the last step',
    *report.machine_and_versions('flax'),
    f'- training time of all runs (sum over their cached trials): {total_seconds / 3600:.2f} h',
    '',
    'Each method at its best peak rate (lowest mean final validation loss over the sweep). '
    '"vs AdamW": the paired difference of the final validation loss against AdamW at its best '
    'rate (negative: lower than AdamW), its 95% t confidence interval and the number of trials '
    'in which the method is lower. The rate is chosen on the same validation loss, so the test '
    'loss of the same runs is given too. *: the best rate is at an edge of the sweep.',
    '',
    '| method | best rate | val loss | test loss | vs AdamW (nats/char) | 95% CI | lower than AdamW | tokens/s |',
    '|---|---|---|---|---|---|---|---|',
    *table,
    '',
    '## Learning-rate sweep: mean final validation loss',
    '',
    '| method | ' + ' | '.join(f'lr {lr:g}' for lr in scale.learning_rates) + ' |',
    '|---|' + '---|' * len(scale.learning_rates),
    *sweep,
    '',
  ]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  stem = os.path.splitext(out)[0]
  if curves:
    results_lib.plot_curves(
      curves, stem + '_curves.png', title=f'mean ± std over trials, scale {args.scale}'
    )
    lines.append(
      f'Learning curves (validation loss, each method at its best rate): `{os.path.basename(stem)}_curves.png`.'
    )
  report.write_results(out, lines, {'cells': cells}, indent=2)
  print('\n'.join(lines))
  print(f'written to {out} and {stem}.json')
  return out


if __name__ == '__main__':
  main()
