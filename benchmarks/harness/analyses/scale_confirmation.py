"""A rate sweep, then a confirmation on fresh seeds at the rates it chose.

The study supplies ``SCALES`` (dicts: ``config``, the example's fields of
every run; ``learning_rates``; ``sweep_trials`` and ``sweep_seed``, the
sweep's paired trials; optionally ``sweep_start``, the slice of the rates a
swept cell runs first, widened one rate at a time while its best rate is at
an edge, and ``sweep_span``, a factor: widened further while the rates run do
not reach the best rate divided and multiplied by it; ``trials`` and
``seed``, the confirmation's),
``CELLS`` (name -> (the example's method, its options, the kind the JSON
names)), ``SWEEP`` (the cells whose rate is swept; AdamW, ``'adamw'``,
among them) and ``CONFIRM`` (cell -> the swept cell whose best rate it runs
at). A swept cell's best rate has the lowest mean final validation loss.
Every cell is compared with AdamW at its best rate on the same seeds: the
paired difference of the final validation loss, its 95% t interval and the
trials it wins. Train loss is measured as the validation loss is
(evaluation mode, fixed windows of the training split). A run *stalls* when
its final validation loss is not finite or no lower than the training
split's character entropy (what predicting the character frequencies
scores).
"""

import dataclasses

import numpy as np

from harness import stats
from harness.analyses import Report
from harness.analyses import rate_sweep
from harness.report import table_head


@dataclasses.dataclass
class Cell:
  """The finished runs of one cell at one rate on one set of seeds."""

  name: str
  rate: float
  rows: list[dict]
  config: dict
  seeds: list[int]
  tag: str = ''  # a tuning variant's name

  def final(self, key: str = 'val_loss') -> np.ndarray:
    return stats.final(self.rows, key, order='step')

  def mean_val(self) -> float:
    val = self.final()
    return float(val.mean()) if np.all(np.isfinite(val)) else float('inf')

  def tokens_per_sec(self) -> float:
    """The median over runs of each run's mean training throughput."""
    per_trial = stats.by_trial(self.rows, 'step')
    return float(np.median([np.mean([r['tokens_per_sec'] for r in t]) for t in per_trial]))


def _options(kind: str, config: dict) -> dict:
  """The options the JSON gives a cell of this kind, from its configuration."""
  if kind == 'sbs':
    return {
      'lam': config['lam'],
      'alpha': config['alpha'],
      'probability': config['sbs_probability'],
    }
  if kind == 'dropout':
    return {'rate': config['dropout']}
  if kind == 'lr_dropout':
    return {'probability': config['probability']}
  return {}


class _Grid:
  """The study's runs, fetched (or trained) through the runner."""

  def __init__(self, runner):
    self.runner, self.study, self.scale = runner, runner.study, runner.scale
    self.waiting: dict[str, str] = {}  # label -> what it waits for

  def cell(
    self, name: str, rate: float, phase: str, extra: dict | None = None, tag: str = ''
  ) -> Cell | None:
    """The runs of cell ``name`` at ``rate``: the sweep's seeds, or the
    confirmation's (``phase == 'confirmation'``); ``extra`` changes more of
    the example's fields (a tuning variant: ``tag`` names it in the label)."""
    method, options, _ = self.study.CELLS[name]
    trials, seed = (
      (self.scale['trials'], self.scale['seed'])
      if phase == 'confirmation'
      else (self.scale['sweep_trials'], self.scale['sweep_seed'])
    )
    config = self.runner.config(
      method=method,
      **self.scale['config'],
      **options,
      **(extra or {}),
      learning_rate=rate,
      seed=seed,
    )
    label = f'{phase} {name}{f" ({tag})" if tag else ""} lr={rate:g}'
    rows = self.runner.rows(config, trials, label) if self.runner.wanted(label) else None
    if rows is None:
      done = self.runner.missing.get(label, 0)
      self.waiting[label] = f'{done}/{trials} trials cached'
      return None
    return Cell(name, rate, rows, config, list(range(seed, seed + trials)), tag)


def _sweep(
  grid: _Grid,
  name: str,
  rates: tuple[float, ...],
  start: tuple[int, int],
  span: float | None = None,
) -> tuple[dict[float, Cell | None], float | None]:
  """The sweep of ``name``: first the rates ``rates[start[0]:start[1]]``,
  then one more step of the grid beyond an edge while the best rate is at
  that edge (so it ends inside the rates run, or at the grid's end), and,
  given a ``span``, while the rates run do not reach ``best / span`` below
  or ``best * span`` above (within the grid).
  Returns the cells run (None: not cached yet) and the best rate (None
  until every cell run so far has finished)."""
  lo, hi = start
  cells: dict[float, Cell | None] = {}
  while True:
    for lr in rates[lo:hi]:
      if lr not in cells:
        cells[lr] = grid.cell(name, lr, 'sweep')
    finished = [c for c in cells.values() if c is not None]
    if len(finished) < len(cells):
      return cells, None
    best = min(finished, key=lambda c: c.mean_val()).rate
    i = rates.index(best)
    short_below = span is not None and rates[lo] > best / span * (1 + 1e-9)
    short_above = span is not None and rates[hi - 1] < best * span * (1 - 1e-9)
    if (i == lo or short_below) and lo > 0:
      lo -= 1
    elif (i == hi - 1 or short_above) and hi < len(rates):
      hi += 1
    else:
      return dict(sorted(cells.items())), best


@dataclasses.dataclass
class Tuning:
  """The tuning of a baseline's fixed settings at one rate (``study.TUNE``)."""

  candidates: dict[str, Cell | None]  # variant -> its runs at the tuning rate
  changes: dict[str, dict]  # variant -> the fields it changes
  winner: str | None = None
  rates: dict[float, Cell | None] = dataclasses.field(default_factory=dict)  # the winner's
  best_rate: float | None = None


def _tune(grid: _Grid, study) -> Tuning:
  """``study.TUNE``'s variants of its cell at its rate on the sweep's seeds:
  the cell as it is, each variant alone, then the best values of the
  ``combine`` fields whose best variants score lowest, together; the lowest
  mean final validation loss wins and runs at ``rates`` too, and its best
  rate is the lowest of those (its own included)."""
  spec = study.TUNE
  name, rate = spec['cell'], spec['rate']
  changes = {'as is': {}, **spec['variants']}
  candidates = {
    tag: grid.cell(name, rate, 'sweep' if not extra else 'tune', extra, tag if extra else '')
    for tag, extra in changes.items()
  }
  tuning = Tuning(candidates, changes)
  if any(c is None for c in candidates.values()):
    grid.waiting['tune combined'] = 'waits for every single change'
    return tuning
  best_by_field: dict[tuple, str] = {}
  for tag, extra in spec['variants'].items():
    fields = tuple(sorted(extra))
    if fields not in best_by_field or _mean(candidates[tag]) < _mean(
      candidates[best_by_field[fields]]
    ):
      best_by_field[fields] = tag
  ranked = sorted(best_by_field.values(), key=lambda tag: _mean(candidates[tag]))
  combined: dict = {}
  for tag in ranked[: spec['combine']]:
    combined |= spec['variants'][tag]
  changes['combined'] = combined
  candidates['combined'] = grid.cell(name, rate, 'tune', combined, 'combined')
  if candidates['combined'] is None:
    grid.waiting['tune winner'] = 'waits for the combined change'
    return tuning
  tuning.winner = min(candidates, key=lambda tag: _mean(candidates[tag]))
  winner = changes[tuning.winner]
  tuning.rates = {rate: candidates[tuning.winner]}
  for other in spec['rates']:
    tuning.rates[other] = grid.cell(
      name, other, 'sweep' if not winner else 'tune', winner, tuning.winner if winner else ''
    )
  tuning.rates = dict(sorted(tuning.rates.items()))
  if all(c is not None for c in tuning.rates.values()):
    tuning.best_rate = min(tuning.rates, key=lambda lr: _mean(tuning.rates[lr]))
  return tuning


def _mean(cell: Cell | None) -> float:
  return cell.mean_val() if cell is not None else float('inf')


def _sweep_start(scale: dict, name: str) -> tuple[int, int]:
  """The slice of the rates that cell ``name``'s sweep runs first."""
  start = scale.get('sweep_start', (0, len(scale['learning_rates'])))
  return start[name] if isinstance(start, dict) else start


def _confirmation_rate(study, chooser, best: dict, tuning: Tuning | None) -> float | None:
  """The rate a confirmation cell runs at: a fixed rate, the best rate of the
  swept cell it names, or (``'tuned'``) the tuning winner's best rate; None
  while that is not known yet."""
  if isinstance(chooser, float):
    return chooser
  if chooser == 'tuned':
    return tuning.best_rate if tuning is not None else None
  return best.get(chooser)


def _chooser_text(chooser) -> str:
  if isinstance(chooser, float):
    return f'the rate {chooser:g}'
  return 'the tuning' if chooser == 'tuned' else f'the sweep of {chooser}'


def _first_rates(study, scale: dict) -> str:
  """The rates each swept cell runs first, in words."""
  rates = scale['learning_rates']
  text = lambda name: ', '.join(f'{lr:g}' for lr in rates[slice(*_sweep_start(scale, name))])
  if not isinstance(scale.get('sweep_start'), dict):
    return text(study.SWEEP[0]) if study.SWEEP else ''
  return '; '.join(f'{name} {text(name)}' for name in study.SWEEP)


def _rates_chosen(study) -> str:
  """The rate each confirmation cell runs at, in words."""
  groups: dict[str | float, list[str]] = {}
  for name, chooser in study.CONFIRM.items():
    groups.setdefault(chooser, []).append(name)
  words = lambda chooser: (
    f'the rate {chooser:g}'
    if isinstance(chooser, float)
    else "the tuning winner's best rate"
    if chooser == 'tuned'
    else f"{chooser}'s"
  )
  return '; '.join(f'{", ".join(names)} at {words(chooser)}' for chooser, names in groups.items())


def _stalled(cell: Cell, entropy: float) -> int:
  val = cell.final()
  return int(np.sum(~np.isfinite(val) | (val >= entropy)))


def _versus(cell: Cell, base: Cell | None) -> dict | None:
  if base is None or cell is base:
    return None
  diff, lo, hi, wins = stats.paired_difference(cell.final(), base.final(), better='lower')
  return {'diff': diff, 'ci95': None if np.isnan(lo) else [lo, hi], 'wins': wins}


def _json_cell(study, cell: Cell, phase: str, base: Cell | None, entropy: float) -> dict:
  kind = study.CELLS[cell.name][2]
  val = cell.final()
  return {
    'name': f'{phase}: {cell.name} lr={cell.rate:g}',
    'phase': phase,
    'method': kind,
    'options': _options(kind, cell.config),
    'learning_rate': cell.rate,
    'trials': len(val),
    'seeds': cell.seeds,
    'val_loss': float(val.mean()),
    'val_loss_std': float(val.std(ddof=1)) if len(val) > 1 else 0.0,
    'test_loss': float(cell.final('test_loss').mean()),
    'train_loss': float(cell.final('train_eval_loss').mean()),
    'stalled': _stalled(cell, entropy),
    'tokens_per_sec': cell.tokens_per_sec(),
    'vs_adamw': _versus(cell, base),
  }


def _versus_text(versus: dict | None, trials: int) -> str:
  if versus is None:
    return '(baseline) | | '
  lo, hi = versus['ci95'] or (float('nan'), float('nan'))
  return f'{versus["diff"]:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {versus["wins"]}/{trials}'


def report(runner) -> Report:
  study, scale = runner.study, runner.scale
  rates = scale['learning_rates']
  grid = _Grid(runner)

  sweep: dict[tuple[str, float], Cell | None] = {}
  best: dict[str, float] = {}
  for name in study.SWEEP:
    cells, best_rate = _sweep(grid, name, rates, _sweep_start(scale, name), scale.get('sweep_span'))
    sweep |= {(name, lr): cell for lr, cell in cells.items()}
    if best_rate is not None:
      best[name] = best_rate
  tuning = _tune(grid, study) if hasattr(study, 'TUNE') else None
  confirm: dict[str, Cell | None] = {}
  for name, chooser in study.CONFIRM.items():
    rate, extra, tag = _confirmation_rate(study, chooser, best, tuning), None, ''
    if tuning is not None and name in study.TUNED:
      if tuning.winner is None:
        rate = None
      else:
        extra, tag = tuning.changes[tuning.winner], tuning.winner
    if rate is None:
      grid.waiting[f'confirmation {name}'] = f'waits for {_chooser_text(chooser)}'
      confirm[name] = None
    else:
      confirm[name] = grid.cell(name, rate, 'confirmation', extra, tag if extra else '')

  facts = runner.facts()
  entropy = facts.get('unigram_entropy', float('inf'))
  sweep_base = sweep.get(('adamw', best['adamw'])) if 'adamw' in best else None
  confirm_base = confirm.get('adamw')
  payload_cells, confirm_table, curves = [], [], {}
  for name, cell in confirm.items():
    if cell is None:
      confirm_table.append(f'| {name} | not run yet |' + ' |' * 9)
      continue
    entry = _json_cell(study, cell, 'confirmation', confirm_base, entropy)
    payload_cells.append(entry)
    train, val = cell.final('train_eval_loss'), cell.final()
    gap = stats.mean_std(val - train, 4)
    edge = '*' if cell.rate in (min(rates), max(rates)) else ''
    confirm_table.append(
      f'| {name} | {cell.rate:g}{edge} | {stats.mean_std(val, 4)} | '
      f'{stats.mean_std(cell.final("test_loss"), 4)} | {stats.mean_std(train, 4)} | {gap} | '
      f'{_versus_text(entry["vs_adamw"], len(val))} | {entry["stalled"]} | '
      f'{entry["tokens_per_sec"]:.0f} |'
    )
    curves[f'{name}, lr {cell.rate:g}'] = stats.step_curves(cell.rows)

  sweep_table = []
  for name in study.SWEEP:
    entries = []
    for lr in rates:
      if (name, lr) not in sweep:
        entries.append('not needed' if name in best else 'not run yet')
        continue
      cell = sweep[name, lr]
      if cell is None:
        entries.append('not run yet')
        continue
      payload_cells.append(_json_cell(study, cell, 'sweep', sweep_base, entropy))
      stalled = _stalled(cell, entropy)
      mark = ' (best)' if best.get(name) == lr else ''
      entries.append(
        f'{stats.mean_std(cell.final(), 4)}{mark}' + (f', {stalled} stalled' if stalled else '')
      )
    sweep_table.append(f'| {name} | ' + ' | '.join(entries) + ' |')

  config = scale['config']
  base = runner.config(**config)
  characters = facts.get('characters', ['?'] * 3)
  fmt = lambda n: f'{n:,}' if isinstance(n, int) else str(n)
  seeds = lambda n, s: f'{n} paired trials (seeds {s}..{s + n - 1})'
  lines = [
    f'# {study.TITLE.format(scale=runner.options.scale)}',
    '',
    runner.command_line(),
    f'- data: {runner.data_label()}: {" / ".join(fmt(n) for n in characters)}'
    f" characters (train / validation / test, TFDS tiny_shakespeare's split), vocabulary"
    f' {facts.get("vocab_size", "?")}, character entropy of the training split'
    f' {entropy:.4f} nats',
    f'- model: decoder-only transformer (Flax NNX), {config["num_layers"]} blocks'
    f' {"stacked and scanned (nnx.scan; the txs get layer_axes)" if config["scan_layers"] else ""},'
    f' width {config["embed_dim"]}, {config["num_heads"]} heads, context'
    f' {config["context_length"]}, {fmt(facts.get("params", "?"))} parameters',
    f'- training: {config["steps"]} steps of {config["batch_size"]} random windows, AdamW (b1 '
    f'{base["b1"]}, b2 {base["b2"]}, weight decay {base["weight_decay"]} on matrices and '
    f'embeddings), linear warm-up {config["warmup_steps"]} steps then cosine to '
    f'{base["end_learning_rate_ratio"]}x, gradient clipping at norm {base["clip_norm"]}',
    f'- sweep: peak rates on the grid {", ".join(f"{lr:g}" for lr in rates)} for '
    f'{", ".join(study.SWEEP)}: first {_first_rates(study, scale)}'
    ', then one step of the grid further while the best rate is at an edge'
    + (
      f' or the rates run do not reach it divided and multiplied by {scale["sweep_span"]:g}'
      if scale.get('sweep_span')
      else ''
    )
    + ' ("not needed": '
    f'beyond the best rate, not run); {seeds(scale["sweep_trials"], scale["sweep_seed"])}; '
    f'confirmation: {seeds(scale["trials"], scale["seed"])} the sweep never saw',
    f'- evaluation: loss in nats per character on {config["eval_batches"] * config["batch_size"]}'
    ' fixed windows of each split (training split included, dropout off), after the last step',
    *runner.provenance_lines('runs'),
    '',
    '## Confirmation: each cell at its rate, on fresh seeds',
    '',
    f'Each cell at the best rate of a swept cell: {_rates_chosen(study)}. "vs AdamW": the '
    'paired difference of the final validation loss against AdamW (negative: lower), its 95% '
    't interval and the trials in which the cell is lower. "train": the loss on fixed '
    'training windows in evaluation mode; "gap": validation minus train, per trial. '
    'Stalled: runs whose final validation loss is not finite or no lower than the character '
    'entropy. tokens/s: the median over the runs as they trained, some of them two at a time '
    "on the same cores or beside other jobs, so it does not compare the cells' speed (for "
    'that, the cells timed side by side, interleaved in one '
    f'process: `python benchmarks/lm_speed.py --study {runner.options.study} --scale '
    f'{runner.options.scale}`). *: the rate is at an edge of the sweep.',
    '',
    *table_head(
      'cell',
      'rate',
      'val loss',
      'test loss',
      'train loss',
      'gap',
      'vs AdamW (nats/char)',
      '95% CI',
      'lower than AdamW',
      'stalled',
      'tokens/s',
    ),
    *confirm_table,
    '',
    "## Rate sweep: final validation loss, mean ± std over the sweep's seeds",
    '',
    *table_head('method', *(f'lr {lr:g}' for lr in rates)),
    *sweep_table,
    '',
  ]
  if grid.waiting:
    lines += ['Not run yet: ' + '; '.join(f'{k} ({v})' for k, v in grid.waiting.items()), '']
  payload = {
    'model': {
      'params': facts.get('params'),
      'num_layers': config['num_layers'],
      'embed_dim': config['embed_dim'],
      'scan_layers': config['scan_layers'],
    },
    'steps': config['steps'],
    'cells': payload_cells,
  }
  return rate_sweep.add_loss_curves(
    Report(lines, payload, indent=2),
    runner,
    curves,
    'Validation curves of the confirmation',
    'confirmation, mean ± std over trials',
  )
