"""The paper's Tables 3-5 (§5), at the scale this machine allows, honestly reported.

Every cell is a run of the training program (examples/cifar) with several
paired trials: trial t of every cell uses the same data subset, order,
augmentation and initialisation, so differences between cells are paired.

  Table 3: SBS with alpha in {-0.1, 0, 0.1, 1} (lam = 0) and lam in
           {0, -2, -4, -8} (alpha = 0.1), plus the readings the paper leaves
           open (scale_by_count, magnitudes of g instead of g~, one global
           group instead of groups by parameter type), lam = 0 with
           scale_by_count together ("combined"), and a learning-rate check
           (SGD and SBS at 0.5x and 2x the base rate, combined at 2x).
  Table 4: SGD, SBS and the combined reading at several training fractions
           and batch sizes.
  Table 5: SGD, Dropout, adaptive Dropout, Entropy-SGD, Accelerated SGD, SBS.
  Table m: SBS under momentum, Algorithm 2 ('frozen': the wrapper) against
           SBS chained before SGD ('chain'), at batch 32 and 128.

Per cell: the mean over the last 10% of epochs and the maximum over epochs
of the test accuracy, each as mean ± std over trials; for every cell against
its SGD cell, the paired difference with a 95% t confidence interval.

  python benchmarks/paper_tables.py --dataset ../shared/data/cifar10.npz  # CPU scale
  python benchmarks/paper_tables.py --dataset ../shared/data/cifar10.npz --tables m \
      --out benchmarks/results/momentum_semantics_cpu.md
  python benchmarks/paper_tables.py --scale paper   # TFDS cifar10, on an accelerator
  python benchmarks/paper_tables.py --scale paper --dataset svhn_cropped --model vgg11

Every finished trial is cached as JSON in --workdir (by default
``benchmarks/results/trials/paper_tables_<scale>/``, committed, so a later
checkout resumes); a rerun picks up where it stopped, and two processes can
share a table (each trial is claimed by a lock file). Writes ``benchmarks/results/paper_tables_<scale>.md`` and
``paper_tables_<scale>_curves.png``.
"""

import argparse
import dataclasses
import os
import re
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples', 'cifar'))

import numpy as np

from configs.default import Config
import input_pipeline
import report
import train as train_lib
import trial_cache


@dataclasses.dataclass(frozen=True)
class Scale:
  model: str
  epochs: int
  trials: int
  fraction: float  # Tables 3 and 5
  batch_size: int  # Tables 3 and 5
  table4_fractions: tuple[float, ...]
  table4_batch_sizes: tuple[int, ...]
  augment: bool = False  # the paper names no augmentation
  test_examples: int | None = None  # a class-balanced N (None: all)
  # Table m: the paper's batch sizes with momentum 0.3 and 0.9.
  momentum_batch_sizes: tuple[int, int] = (32, 128)


SCALES = {
  # Small CNN, 1/32 of CIFAR-10 (1,562 images) for Tables 3 and 5, no
  # augmentation, so that SGD's train accuracy runs ahead of its test
  # accuracy (57 vs 45 %; the model still underfits, train loss ~1.26);
  # 2000 test images per epoch (the evaluation would otherwise cost more
  # than training).
  'cpu': Scale(
    'small_cnn', 30, 5, 1 / 32, 16, (1 / 16, 1 / 32, 1 / 64), (16, 128), test_examples=2000
  ),
  # The paper's protocol (§5): run on an accelerator.
  'paper': Scale('resnet18', 100, 10, 1 / 8, 16, (1 / 2, 1 / 4, 1 / 8), (16, 32, 64, 128)),
  # Seconds: for the tests of this script.
  'smoke': Scale(
    'small_cnn',
    2,
    2,
    1 / 100,
    16,
    (1 / 100,),
    (16,),
    test_examples=100,
    momentum_batch_sizes=(8, 16),
  ),
}


@dataclasses.dataclass(frozen=True)
class Cell:
  table: str  # where it is reported
  label: str  # its row label there
  method: str  # sgd, sbs, dropout, adrop, esgd, asgd
  overrides: tuple[tuple[str, object], ...] = ()

  def config(self, base: Config) -> Config:
    return dataclasses.replace(base, optimizers=(self.method,), **dict(self.overrides))

  def baseline(self) -> 'Cell':
    """The SGD cell this cell is paired with: same data, batch, rate."""
    keep = ('train_fraction', 'batch_size', 'learning_rate')
    return Cell('', '', 'sgd', tuple((k, v) for k, v in self.overrides if k in keep))


# The columns of every table.
COLUMNS = (
  'cell',
  'last 10%',
  'max',
  'vs SGD (points)',
  '95% CI',
  'beats SGD',
  'final train loss',
  'SBS: updated per step / mean k',
)

# The reading that came closest at CPU scale: no global term (lam = 0) and the
# step eta~ = k eta of eq. (13) for a parameter that accumulated k batches.
COMBINED = (('alpha', 0.1), ('lam', 0.0), ('scale_by_count', True))


def cells(scale: Scale, tables) -> list[Cell]:
  """The cells of ``tables`` ('3', '4', '5'), table by table in that order."""
  return [c for t in tables for c in _table_cells(scale, t)]


def _table_cells(scale: Scale, table: str) -> list[Cell]:
  base = (('train_fraction', scale.fraction), ('batch_size', scale.batch_size))
  out = []
  if table == '3':
    out.append(Cell('3', 'SGD', 'sgd', base))
    for alpha in (-0.1, 0.0, 0.1, 1.0):
      out.append(
        Cell('3', f'local: alpha={alpha:g}, lam=0', 'sbs', base + (('alpha', alpha), ('lam', 0.0)))
      )
    for lam in (-2.0, -4.0, -8.0):
      out.append(
        Cell('3', f'global: alpha=0.1, lam={lam:g}', 'sbs', base + (('alpha', 0.1), ('lam', lam)))
      )
    paper = base + (('alpha', 0.1), ('lam', -4.0))
    out += [
      # mu~ relative to the group's mean instead of standardised (eq. 19),
      # which freezes layers in small groups (global_normalization).
      Cell(
        '3',
        'global: alpha=0.1, lam=-4, relative (mu - M) / M',
        'sbs',
        paper + (('global_normalization', 'mean'),),
      ),
      Cell(
        '3', 'reading: scale_by_count (eta~ = k eta)', 'sbs', paper + (('scale_by_count', True),)
      ),
      Cell('3', 'reading: magnitudes of g (not g~)', 'sbs', paper + (('magnitude', 'gradient'),)),
      Cell('3', 'reading: one global group (not by type)', 'sbs', paper + (('group', 'single'),)),
      # The two changes that helped most, together.
      Cell('3', 'combined: lam=0 and scale_by_count', 'sbs', base + COMBINED),
    ]
    for factor in (0.5, 2.0):
      lr = (('learning_rate', 0.1 * factor),)
      out.append(Cell('3', f'lr check: SGD, lr={0.1 * factor:g}', 'sgd', base + lr))
      out.append(Cell('3', f'lr check: SBS (0.1, -4), lr={0.1 * factor:g}', 'sbs', paper + lr))
    out.append(
      Cell('3', 'lr check: combined, lr=0.2', 'sbs', base + COMBINED + (('learning_rate', 0.2),))
    )
  if table == '4':
    for batch in scale.table4_batch_sizes:
      for fraction in scale.table4_fractions:
        o = (('train_fraction', fraction), ('batch_size', batch))
        out.append(Cell('4', f'SGD, 1/{round(1 / fraction)}, batch {batch}', 'sgd', o))
        out.append(
          Cell(
            '4',
            f'SBS, 1/{round(1 / fraction)}, batch {batch}',
            'sbs',
            o + (('alpha', 0.1), ('lam', -4.0)),
          )
        )
        out.append(
          Cell('4', f'SBS combined, 1/{round(1 / fraction)}, batch {batch}', 'sbs', o + COMBINED)
        )
  if table == 'm':
    # Algorithm 2 under momentum (the SBS wrapper, 'frozen') against SBS
    # chained before SGD ('chain', what Tables 3-5 ran before): the paper's
    # setting at batch 32 / momentum 0.3, and Table 4's batch-128 cells
    # (momentum 0.9) with the frozen semantics.
    paper = (('alpha', 0.1), ('lam', -4.0))
    small, large = scale.momentum_batch_sizes
    o = (('train_fraction', scale.fraction), ('batch_size', small))
    name = f'1/{round(1 / scale.fraction)}, batch {small}'
    out.append(Cell('m', f'SGD, {name}', 'sgd', o))
    for semantics in ('chain', 'frozen'):
      out.append(
        Cell('m', f'SBS {semantics}, {name}', 'sbs', o + paper + (('sbs_momentum', semantics),))
      )
    for fraction in scale.table4_fractions:
      o = (('train_fraction', fraction), ('batch_size', large))
      name = f'1/{round(1 / fraction)}, batch {large}'
      out.append(Cell('m', f'SGD, {name}', 'sgd', o))
      for reading, options in (('SBS', paper), ('SBS combined', COMBINED)):
        for semantics in ('frozen', 'chain'):
          out.append(
            Cell(
              'm',
              f'{reading} {semantics}, {name}',
              'sbs',
              o + options + (('sbs_momentum', semantics),),
            )
          )
  if table == '5':
    names = {
      'sgd': 'SGD',
      'dropout': 'Dropout (0.5)',
      'adrop': 'adaptive Dropout (depth-linear, 0.5)',
      'esgd': 'Entropy-SGD (L=5)',
      'asgd': 'Accelerated SGD',
      'sbs': 'SBS (alpha=0.1, lam=-4)',
    }
    for method, label in names.items():
      extra = (('alpha', 0.1), ('lam', -4.0)) if method == 'sbs' else ()
      out.append(Cell('5', label, method, base + extra))
  return out


def balanced_test_subset(data: input_pipeline.Dataset, size: int) -> input_pipeline.Dataset:
  """The first ``size / num_classes`` test images of every class.

  Fixed for all cells (paired), and class-balanced whatever the order of the
  test split (the shared CIFAR-10 copy's is class-major).
  """
  per_class = size // data.num_classes
  index = np.sort(
    np.concatenate([np.flatnonzero(data.y_test == c)[:per_class] for c in range(data.num_classes)])
  )
  return dataclasses.replace(data, x_test=data.x_test[index], y_test=data.y_test[index])


# Config fields added after trials were cached, with their defaults: at the
# default they stay out of the key, so the committed trials remain valid.
ADDED_FIELDS = {'global_normalization': 'std'}


def cell_key(config: Config) -> str:
  """The cache key of a cell's configuration (``trial_cache.config_key``)."""
  return trial_cache.config_key(config, added_fields=ADDED_FIELDS)


def run_cell(config: Config, data, workdir: str, train: bool = True) -> tuple[list[dict], float]:
  """Rows of every trial of one cell and its training seconds.

  Trial ``t`` runs alone as ``trials=1, seed=seed+t`` (the training program
  derives everything of a trial from ``seed + trial``, so it is the same
  run) and is cached in ``workdir`` as soon as it finishes: a stopped
  table loses at most one trial. A trial that another live process is
  training (its lock file) is skipped, so two processes can share a table;
  render it at the end with ``--cached-only``. With ``train=False``, only
  the cached trials.
  """
  return trial_cache.run_trials(
    config,
    cell_key(config),
    lambda single: train_lib.run(single, data),
    workdir,
    train=train,
  )


def per_trial(rows: list[dict], epochs: int) -> tuple[np.ndarray, np.ndarray]:
  """Per trial: mean accuracy over the last 10% of epochs, and the max."""
  summary = train_lib.summarize(rows, epochs)
  (s,) = summary.values()
  maxima = [
    max(r['val_accuracy'] for r in rows if r['trial'] == t)
    for t in sorted({r['trial'] for r in rows})
  ]
  return np.asarray(s['per_trial_last']), np.asarray(maxima)


def last_epoch(rows: list[dict], key: str) -> np.ndarray:
  """Per trial: ``key`` of the last epoch (e.g. the final training loss)."""
  last = {}
  for r in rows:
    if r['epoch'] >= last.get(r['trial'], {'epoch': 0})['epoch']:
      last[r['trial']] = r
  return np.asarray([last[t][key] for t in sorted(last)])


def final_train_loss(rows: list[dict]) -> np.ndarray:
  """Per trial: the training loss of the last epoch (under- or overfitting)."""
  return last_epoch(rows, 'train_loss')


def sbs_statistics(rows: list[dict]) -> str:
  """SBS's fraction of elements updated per step and mean count k, both
  averaged over epochs and trials; empty for other methods."""
  fractions = [r['sbs_update_fraction'] for r in rows if 'sbs_update_fraction' in r]
  counts = [r['sbs_mean_count'] for r in rows if 'sbs_mean_count' in r]
  if not fractions or not counts:
    return ''
  return f'{np.mean(fractions):.3f} / {np.mean(counts):.2f}'


def best_rates(todo: list[Cell], results: dict, base: Config, epochs: int) -> list[str]:
  """Table 3's learning-rate check: each method at its own best base rate.

  SGD's cells and the paper's SBS setting (alpha 0.1, lam -4, no other
  reading) at every learning rate of the table; the best rate of each by the
  mean over trials of the last-10% accuracy, and SBS at its best rate against
  SGD at its best, paired by trial.
  """
  paper = dataclasses.replace(base, optimizers=('sbs',), alpha=0.1, lam=-4.0)
  by_rate = {'sgd': {}, 'sbs': {}}
  for cell in (c for c in todo if c.table == '3'):
    config = cell.config(base)
    reference = dataclasses.replace(base, optimizers=('sgd',)) if cell.method == 'sgd' else paper
    if cell_key(config) in results and config == dataclasses.replace(
      reference,
      train_fraction=config.train_fraction,
      batch_size=config.batch_size,
      learning_rate=config.learning_rate,
    ):
      by_rate[cell.method][config.learning_rate] = per_trial(results[cell_key(config)], epochs)[0]
  if len(by_rate['sgd']) < 2 or len(by_rate['sbs']) < 2:
    return []
  best = {m: max(r, key=lambda lr: r[lr].mean()) for m, r in by_rate.items()}
  mean, lo, hi, wins = trial_cache.paired_difference(
    by_rate['sbs'][best['sbs']], by_rate['sgd'][best['sgd']]
  )
  rates = lambda m: ', '.join(f'{lr:g}: {a.mean():.2f}' for lr, a in sorted(by_rate[m].items()))
  return [
    f'Learning-rate check (last 10%, by base rate): SGD {rates("sgd")}; '
    f'SBS (alpha 0.1, lam -4) {rates("sbs")}. SBS at its best rate '
    f'({best["sbs"]:g}) vs SGD at its best ({best["sgd"]:g}), paired: '
    f'{mean:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}], better in '
    f'{wins}/{len(by_rate["sbs"][best["sbs"]])} trials.'
  ]


def frozen_vs_chain(todo: list[Cell], results: dict, base: Config, epochs: int) -> list[str]:
  """Table m: per pair of cells that differ only in ``sbs_momentum``, the
  paired difference frozen - chain."""
  lines = []
  for cell in (c for c in todo if c.table == 'm'):
    options = dict(cell.overrides)
    if options.get('sbs_momentum') != 'frozen':
      continue
    chain = Cell(
      'm', '', 'sbs', tuple((k, 'chain' if k == 'sbs_momentum' else v) for k, v in cell.overrides)
    )
    keys = cell_key(cell.config(base)), cell_key(chain.config(base))
    if not all(k in results for k in keys):
      continue
    frozen_last, chain_last = (per_trial(results[k], epochs)[0] for k in keys)
    mean, lo, hi, wins = trial_cache.paired_difference(frozen_last, chain_last)
    lines.append(
      f'- {cell.label.replace(" frozen", "")}: frozen - chain '
      f'{mean:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}], frozen '
      f'better in {wins}/{len(frozen_last)} trials.'
    )
  return ['Frozen vs chain, paired by trial:'] + lines if lines else []


def curves(rows: list[dict], key: str = 'val_accuracy') -> np.ndarray:
  """``key`` by epoch, mean over trials."""
  trials = sorted({r['trial'] for r in rows})
  return np.array(
    [
      [r[key] for r in sorted((r for r in rows if r['trial'] == t), key=lambda r: r['epoch'])]
      for t in trials
    ]
  ).mean(0)


def plot(panels: dict[str, dict[str, tuple[np.ndarray, tuple | None]]], path: str) -> None:
  """One panel per entry: ``{label: (curve, group)}``. Lines of one group
  (e.g. one data fraction and batch size) share a colour and take the line
  styles in turn; lines without a group get the default colours."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  styles = ('-', '--', ':', '-.', (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
  for ax, (title, lines) in zip(axes[0], panels.items()):
    seen = {}  # group -> lines of it drawn so far
    for label, (curve, group) in lines.items():
      style = {}
      if group is not None:
        seen[group] = seen.get(group, -1) + 1
        style = dict(
          color=f'C{list(seen).index(group) % 10}', linestyle=styles[seen[group] % len(styles)]
        )
      ax.plot(np.arange(1, len(curve) + 1), curve, label=label, **style)
    ax.set_title(title)
    ax.set_xlabel('epoch')
    ax.set_ylabel('test accuracy (%), mean over trials')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', default='cpu', choices=sorted(SCALES))
  parser.add_argument(
    '--tables',
    default='5,4,3',
    help='which tables, run in this order (5 and 4 hold the '
    "paper's main claims, so they run first); m: SBS under "
    'momentum, frozen vs chain',
  )
  parser.add_argument(
    '--dataset',
    default='cifar10',
    help='a TFDS name (cifar10, downloaded and prepared by TFDS) or a .npz path '
    '(e.g. ../shared/data/cifar10.npz, what the committed CPU tables used)',
  )
  parser.add_argument('--data-dir', default=None, help='TFDS data_dir')
  parser.add_argument(
    '--model', default=None, help="the scale's model instead (e.g. vgg11, resnet50)"
  )
  parser.add_argument('--trials', type=int, default=None)
  parser.add_argument('--epochs', type=int, default=None)
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--out', default=None, help='markdown path')
  parser.add_argument(
    '--cells',
    default=None,
    help='a regular expression: only the cells whose label it matches (and their SGD cells)',
  )
  parser.add_argument(
    '--cached-only',
    action='store_true',
    help='train nothing: write the tables from the cached trials, listing unfinished cells as such',
  )
  args = parser.parse_args(argv)
  scale = SCALES[args.scale]
  if args.trials:
    scale = dataclasses.replace(scale, trials=args.trials)
  if args.epochs:
    scale = dataclasses.replace(scale, epochs=args.epochs)
  if args.model:
    scale = dataclasses.replace(scale, model=args.model)
  tables = [t for t in args.tables.split(',') if t]
  if not set(tables) <= {'3', '4', '5', 'm'}:
    parser.error(f'--tables takes 3, 4, 5 and m, got {args.tables}')
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'paper_tables_{args.scale}.md')
  # The cache is committed beside the results, so a later session (a fresh
  # checkout) resumes the table instead of retraining it.
  workdir = args.workdir or os.path.join(
    ROOT, 'benchmarks', 'results', 'trials', f'paper_tables_{args.scale}'
  )
  command = 'python benchmarks/paper_tables.py ' + shlex.join(
    sys.argv[1:] if argv is None else argv
  )

  try:
    data = input_pipeline.load(args.dataset, args.data_dir)
  except input_pipeline.DataError as e:
    parser.exit(2, f'error: {e}\n')
  subset = bool(scale.test_examples) and scale.test_examples < len(data.y_test)
  if subset:
    data = balanced_test_subset(data, scale.test_examples)
  base = dataclasses.replace(
    Config(),
    dataset=args.dataset,
    data_dir=args.data_dir,
    model=scale.model,
    epochs=scale.epochs,
    trials=scale.trials,
    augment=scale.augment,
    workdir=workdir,
  )
  todo = cells(scale, tables)
  if args.cells:
    try:
      wanted = re.compile(args.cells)
    except re.error as e:
      parser.error(f'--cells is not a regular expression: {e}')
    todo = [c for c in todo if wanted.search(c.label)]
    if not todo:
      parser.error(f'--cells {args.cells!r} matches no cell of tables {args.tables}')
  results, unfinished, total_seconds = {}, {}, 0.0
  started = time.perf_counter()
  for cell in todo + [c.baseline() for c in todo]:
    config = cell.config(base)
    key = cell_key(config)
    if key in results or key in unfinished:
      continue
    print(
      f'[{time.perf_counter() - started:7.0f}s] table {cell.table or "-"}'
      f' {cell.label or "SGD baseline"} {dict(cell.overrides)}',
      flush=True,
    )
    rows, seconds = run_cell(config, data, workdir, train=not args.cached_only)
    total_seconds += seconds
    finished = len({r['trial'] for r in rows})
    if finished == scale.trials:
      results[key] = rows
    else:  # --cached-only: reported as unfinished
      unfinished[key] = finished

  lines = [
    f'# The paper\'s Tables 3-5, scale "{args.scale}"',
    '',
    f'- command: `{command.strip()}`'
    + (
      ' (tables from the cached trials, which `python benchmarks/paper_tables.py` trained)'
      if args.cached_only
      else ''
    ),
    f'- data: `{os.path.basename(args.dataset)}`'
    + (
      ' (this CIFAR-10 copy has JPEG-decoded pixels: see `shared/data/README.md`)'
      if args.dataset.endswith('cifar10.npz')
      else ''
    ),
    f'- scale: {scale.model}, {scale.epochs} epochs, {scale.trials} paired '
    f'trials per cell, sigmoid learning rate 0.1 -> 0.001, momentum by the '
    f"paper's batch-size pairing (SBS under momentum: Algorithm 2, "
    f'"frozen", unless a row says "chain"), '
    + ('random crop + flip' if scale.augment else 'no augmentation (the paper names none)')
    + ', test accuracy after every epoch on '
    + (
      f'a fixed class-balanced subset of {len(data.y_test)} test images'
      if subset
      else f'all {len(data.y_test)} test images'
    ),
    *report.machine_and_versions(),
    f'- training time of all cells (sum over their cached trials): {total_seconds / 3600:.2f} h',
    '',
    'Accuracy columns: mean ± std over trials of (a) the mean over the last '
    '10% of epochs, (b) the maximum over epochs. "vs SGD": the paired '
    'difference of (a) against the SGD cell with the same data, batch size '
    'and learning rate, with its 95% t confidence interval and the number of '
    'trials in which the cell beat SGD; the training loss of the last epoch, '
    'mean over trials (high: the cell underfits); for SBS, the fraction of '
    'parameter elements updated per step and the mean count k (batches '
    'accumulated), averaged over epochs and trials.',
    '',
  ]
  titles = {
    '3': 'Table 3: SBS settings and readings (batch '
    f'{scale.batch_size}, 1/{round(1 / scale.fraction)} of the '
    'training set)',
    '4': 'Table 4: SGD vs SBS by training fraction and batch size',
    '5': f"Table 5: the paper's methods (batch {scale.batch_size}, "
    f'1/{round(1 / scale.fraction)} of the training set)',
    'm': 'SBS under momentum: Algorithm 2 (frozen: a waiting element '
    'keeps its value and momentum) vs SBS chained before SGD '
    '(chain: momentum moves waiting elements)',
  }
  panels = {}
  for table in sorted(tables):
    lines += [
      f'## {titles[table]}',
      '',
      '| ' + ' | '.join(COLUMNS) + ' |',
      '|' + '---|' * len(COLUMNS),
    ]
    for cell in (c for c in todo if c.table == table):
      config = cell.config(base)
      key, base_key = cell_key(config), cell_key(cell.baseline().config(base))
      if key in unfinished or base_key in unfinished:
        done = ', '.join(
          f'{unfinished.get(k, scale.trials)}/{scale.trials}'
          for k in dict.fromkeys((key, base_key))
        )
        lines.append(
          f'| {cell.label} | not run yet (trials cached, cell and '
          f'its SGD: {done}) |' + ' |' * (len(COLUMNS) - 2)
        )
        continue
      rows = results[key]
      last, best = per_trial(rows, scale.epochs)
      base_last, _ = per_trial(results[base_key], scale.epochs)
      if cell.method == 'sgd' and cell.baseline() == Cell('', '', 'sgd', cell.overrides):
        versus = '(baseline) | | '
      else:
        mean, lo, hi, wins = trial_cache.paired_difference(last, base_last)
        versus = f'{mean:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {wins}/{len(last)}'
      lines.append(
        f'| {cell.label} | {trial_cache.mean_std(last)} | {trial_cache.mean_std(best)} | {versus} | '
        f'{final_train_loss(rows).mean():.3f} | {sbs_statistics(rows)} |'
      )
      if table in ('4', '5', 'm'):
        # Table 4: a panel per batch size, a colour per training fraction.
        panel, group = f'Table {table}', None
        if table in ('4', 'm'):
          panel += f', batch {config.batch_size}'
          group = (config.train_fraction, config.batch_size)
        panels.setdefault(panel, {})[cell.label] = (curves(rows), group)
    lines.append('')
    if table == '3':
      lines += best_rates(todo, results, base, scale.epochs) + ['']
    if table == 'm':
      lines += frozen_vs_chain(todo, results, base, scale.epochs) + ['']
  os.makedirs(os.path.dirname(out), exist_ok=True)
  plot_path = os.path.splitext(out)[0] + '_curves.png'
  if panels:
    plot(panels, plot_path)
    lines.append(f'Learning curves: `{os.path.basename(plot_path)}`.')
  report.write_results(out, lines)
  print('\n'.join(lines))
  print(f'written to {out}')
  return out


if __name__ == '__main__':
  main()
