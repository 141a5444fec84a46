"""A rate sweep, then a confirmation on fresh seeds at the rates it chose.

The study supplies ``SCALES`` (dicts: ``config``, the example's fields of
every run; ``learning_rates``; ``sweep_trials`` and ``sweep_seed``, the
sweep's paired trials; optionally ``sweep_start``, the slice of the rates a
swept cell runs first, widened one rate at a time while its best rate is at
an edge, and ``sweep_span``, a factor: widened further while the rates run do
not reach the best rate divided and multiplied by it; ``trials`` and
``seed``, the confirmation's),
``CELLS`` (name -> :class:`harness.cells.Cell`; its ``kind`` is what the
JSON names), ``SWEEP`` (the cells whose rate is swept; AdamW, ``'adamw'``,
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

from harness import plots
from harness import stats
from harness.analyses import Report
from harness.report import table_head


@dataclasses.dataclass
class Runs:
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
  ) -> Runs | None:
    """The runs of cell ``name`` at ``rate``: the sweep's seeds, or the
    confirmation's (``phase == 'confirmation'``); ``extra`` changes more of
    the example's fields (a tuning variant: ``tag`` names it in the label)."""
    trials, seed = (
      (self.scale['trials'], self.scale['seed'])
      if phase == 'confirmation'
      else (self.scale['sweep_trials'], self.scale['sweep_seed'])
    )
    cell = self.study.CELLS[name].with_options(name, extra or {}, learning_rate=rate)
    label = f'{phase} {name}{f" ({tag})" if tag else ""} lr={rate:g}'
    fields = dict(self.scale['config'], seed=seed)
    rows = self.runner.runs(cell, trials, label, **fields) if self.runner.wanted(label) else None
    if rows is None:
      self.waiting[label] = self.runner.waiting(label, trials)
      return None
    config = self.runner.config(method=cell.method, **{**fields, **cell.options})
    return Runs(name, rate, rows, config, list(range(seed, seed + trials)), tag)


def _sweep(
  grid: _Grid,
  name: str,
  rates: tuple[float, ...],
  start: tuple[int, int],
  span: float | None = None,
) -> tuple[dict[float, Runs | None], float | None]:
  """The sweep of ``name``: first the rates ``rates[start[0]:start[1]]``,
  then one more step of the grid beyond an edge while the best rate is at
  that edge (so it ends inside the rates run, or at the grid's end), and,
  given a ``span``, while the rates run do not reach ``best / span`` below
  or ``best * span`` above (within the grid).
  Returns the cells run (None: not cached yet) and the best rate (None
  until every cell run so far has finished)."""
  lo, hi = start
  cells: dict[float, Runs | None] = {}
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

  candidates: dict[str, Runs | None]  # variant -> its runs at the tuning rate
  changes: dict[str, dict]  # variant -> the fields it changes
  winner: str | None = None
  rates: dict[float, Runs | None] = dataclasses.field(default_factory=dict)  # the winner's
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


def _mean(cell: Runs | None) -> float:
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
  text = '; '.join(f'{", ".join(names)} at {words(chooser)}' for chooser, names in groups.items())
  if all(isinstance(chooser, str) and chooser != 'tuned' for chooser in groups):
    return f'Each cell at the best rate of a swept cell: {text}'
  return f'Each cell at its rate: {text}'


def _stalled(cell: Runs, entropy: float) -> int:
  val = cell.final()
  return int(np.sum(~np.isfinite(val) | (val >= entropy)))


def _versus(cell: Runs, base: Runs | None) -> dict | None:
  if base is None or cell is base:
    return None
  diff, lo, hi, wins = stats.paired_difference(cell.final(), base.final(), better='lower')
  return {'diff': diff, 'ci95': None if np.isnan(lo) else [lo, hi], 'wins': wins}


def _json_cell(
  study, cell: Runs, phase: str, base: Runs | None, entropy: float, tag: str = ''
) -> dict:
  kind = study.CELLS[cell.name].kind
  val = cell.final()
  tag = tag or cell.tag
  options = _options(kind, cell.config)
  if hasattr(study, 'TUNE'):
    options |= {k: cell.config[k] for k in ('b2', 'weight_decay', 'end_learning_rate_ratio')}
  return {
    'name': f'{phase}: {cell.name}{f" ({tag})" if tag else ""} lr={cell.rate:g}',
    'phase': phase,
    'method': kind,
    'options': options,
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

  sweep: dict[tuple[str, float], Runs | None] = {}
  best: dict[str, float] = {}
  for name in study.SWEEP:
    cells, best_rate = _sweep(grid, name, rates, _sweep_start(scale, name), scale.get('sweep_span'))
    sweep |= {(name, lr): cell for lr, cell in cells.items()}
    if best_rate is not None:
      best[name] = best_rate
  tuning = _tune(grid, study) if hasattr(study, 'TUNE') else None
  confirm: dict[str, Runs | None] = {}
  for name, chooser in study.CONFIRM.items():
    rate, extra, tag = _confirmation_rate(study, chooser, best, tuning), None, ''
    if tuning is not None and name in study.TUNED:
      if tuning.winner is None:
        rate, chooser = None, 'tuned'  # it waits for the winner's settings
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
  pairs = getattr(study, 'PAIRS', {})
  mid_steps = getattr(study, 'MID_STEPS', {}).get(runner.options.scale, ())
  columns = [
    'cell',
    'rate',
    'val loss',
    *(['best val loss'] if mid_steps else []),
    'test loss',
    'train loss',
    'gap',
    'vs AdamW (nats/char)',
    '95% CI',
    'lower than AdamW',
    *(['paired with another cell: difference [95% CI], lower'] if pairs else []),
    'stalled',
    'tokens/s',
  ]
  payload_cells, confirm_table, curves = [], [], {}
  for name, cell in confirm.items():
    if cell is None:
      confirm_table.append(f'| {name} | not run yet |' + ' |' * (len(columns) - 2))
      continue
    entry = _json_cell(study, cell, 'confirmation', confirm_base, entropy)
    if mid_steps:
      entry['best_val_loss'] = float(_best_val(cell).mean())
    if pairs:
      other = pairs.get(name)
      versus = _versus(cell, confirm.get(other)) if other else None
      entry['vs_cell'] = None if versus is None else {'cell': other, **versus}
    payload_cells.append(entry)
    train, val = cell.final('train_eval_loss'), cell.final()
    gap = stats.mean_std(val - train, 4)
    edge = '*' if cell.rate in (min(rates), max(rates)) else ''
    confirm_table.append(
      f'| {_label(cell)} | {cell.rate:g}{edge} | {stats.mean_std(val, 4)} | '
      + (f'{stats.mean_std(_best_val(cell), 4)} | ' if mid_steps else '')
      + f'{stats.mean_std(cell.final("test_loss"), 4)} | {stats.mean_std(train, 4)} | {gap} | '
      f'{_versus_text(entry["vs_adamw"], len(val))} | '
      + (f'{_paired_text(entry["vs_cell"], len(val))} | ' if pairs else '')
      + f'{entry["stalled"]} | {entry["tokens_per_sec"]:.0f} |'
    )
    curves[f'{_label(cell)}, lr {cell.rate:g}'] = stats.step_curves(cell.rows)

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
  data_note = getattr(study, 'DATA_NOTE', "TFDS tiny_shakespeare's split")
  passes = ''
  if getattr(study, 'HEADLINE', None) and isinstance(characters[0], int):
    windows = config['steps'] * config['batch_size'] * config['context_length']
    passes = f' ({windows / characters[0]:.1f} passes over the training split)'
  lines = [
    f'# {study.TITLE.format(scale=runner.options.scale)}',
    '',
    runner.command_line(),
    f'- data: {runner.data_label()}: {" / ".join(fmt(n) for n in characters)}'
    f' characters (train / validation / test, {data_note}), vocabulary'
    f' {facts.get("vocab_size", "?")}, character entropy of the training split'
    f' {entropy:.4f} nats',
    f'- model: decoder-only transformer (Flax NNX), {config["num_layers"]} blocks'
    f' {"stacked and scanned (nnx.scan; the txs get layer_axes)" if config["scan_layers"] else ""},'
    f' width {config["embed_dim"]}, {config["num_heads"]} heads, context'
    f' {config["context_length"]}, {fmt(facts.get("params", "?"))} parameters',
    f'- training: {config["steps"]} steps of {config["batch_size"]} random windows{passes}, AdamW'
    f' (b1 {base["b1"]}, b2 {base["b2"]}, weight decay {base["weight_decay"]} on matrices and '
    f'embeddings), linear warm-up {config["warmup_steps"]} steps then cosine to '
    f'{base["end_learning_rate_ratio"]}x, gradient clipping at norm {base["clip_norm"]}',
    *([_sweep_line(study, scale, seeds)] if study.SWEEP else []),
    *([_tune_line(study, scale, seeds)] if tuning is not None else []),
    f'- evaluation: loss in nats per character on {config["eval_batches"] * config["batch_size"]}'
    ' fixed windows of each split (training split included, dropout off), after the last step',
    f'- runs that stalled or diverged: {_stalled_count(runner.used.values(), entropy)}',
    *runner.provenance_lines('runs'),
    '',
  ]
  headline = _headline(study, confirm, runner.options.scale)
  if headline is not None:
    lines += headline.lines
  lines += [
    '## Confirmation: each cell at its rate, on fresh seeds',
    '',
    f'{_rates_chosen(study)}. "vs AdamW": the '
    'paired difference of the final validation loss against AdamW (negative: lower), its 95% '
    't interval and the trials in which the cell is lower. '
    + ('Some cells are also paired with another cell, named in their row. ' if pairs else '')
    + (
      '"best val loss": the lowest validation loss of each run over its evaluations. '
      if mid_steps
      else ''
    )
    + '"train": the loss on fixed '
    'training windows in evaluation mode; "gap": validation minus train, per trial. '
    'Stalled: runs whose final validation loss is not finite or no lower than the character '
    'entropy. tokens/s: the median over the runs as they trained, some of them two at a time '
    "on the same cores or beside other jobs, so it does not compare the cells' speed (for "
    'that, the cells timed side by side, interleaved in one '
    f'process: `python benchmarks/lm_speed.py --study {runner.options.study} --scale '
    f'{runner.options.scale}`). *: the rate is at an edge of the sweep.',
    '',
    *table_head(*columns),
    *confirm_table,
    '',
  ]
  if mid_steps:
    lines += _over_steps_lines(study, confirm, mid_steps)
  if tuning is not None:
    tune_lines, tune_cells = _tuning_section(study, tuning, entropy)
    lines += tune_lines
    payload_cells += tune_cells
  if study.SWEEP:
    lines += [
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
  if headline is not None:
    payload['headline'] = headline.payload
  if tuning is not None:
    payload['tuning'] = {
      'cell': study.TUNE['cell'],
      'rate': study.TUNE['rate'],
      'winner': tuning.winner,
      'changes': None if tuning.winner is None else tuning.changes[tuning.winner],
      'best_rate': tuning.best_rate,
    }
  result = plots.add_loss_curves(
    Report(lines, payload, indent=2),
    runner,
    curves,
    'Validation curves of the confirmation',
    'confirmation, mean ± std over trials',
  )
  if mid_steps:
    _add_steps_figure(result, runner, study, confirm)
  return result


def _label(cell: Runs) -> str:
  return f'{cell.name} ({cell.tag})' if cell.tag else cell.name


def _best_val(cell: Runs) -> np.ndarray:
  """Per trial: the lowest validation loss over the run's evaluations."""
  return np.asarray([min(r['val_loss'] for r in t) for t in stats.by_trial(cell.rows, 'step')])


def _paired_text(versus: dict | None, trials: int) -> str:
  if versus is None:
    return ''
  lo, hi = versus['ci95'] or (float('nan'), float('nan'))
  return (
    f'vs {versus["cell"]}: {versus["diff"]:+.4f} [{lo:+.4f}, {hi:+.4f}], {versus["wins"]}/{trials}'
  )


def _stalled_count(records, entropy: float) -> str:
  """Of the runs behind the report: how many stalled (a finite final
  validation loss no lower than the character entropy) and diverged (not
  finite)."""
  finals = np.asarray([max(r['rows'], key=lambda row: row['step'])['val_loss'] for r in records])
  diverged = int(np.sum(~np.isfinite(finals)))
  stalled = int(np.sum(np.isfinite(finals) & (finals >= entropy)))
  return f'{stalled} stalled and {diverged} diverged of the {len(finals)} runs'


def _sweep_line(study, scale: dict, seeds) -> str:
  rates = scale['learning_rates']
  return (
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
    f'confirmation: {seeds(scale["trials"], scale["seed"])} the sweep never saw'
  )


def _tune_line(study, scale: dict, seeds) -> str:
  spec = study.TUNE
  return (
    f'- tuning: {spec["cell"]} at the rate {spec["rate"]:g} with one change at a time '
    f'({"; ".join(spec["variants"])}), then the best values of the {spec["combine"]} settings '
    'whose best changes score lowest, together; the lowest mean final validation loss wins '
    f'and runs at {", ".join(f"{lr:g}" for lr in spec["rates"])} too; '
    f'{seeds(scale["sweep_trials"], scale["sweep_seed"])}; confirmation: '
    f'{seeds(scale["trials"], scale["seed"])} the tuning never saw'
  )


def _tuning_section(study, tuning: Tuning, entropy: float) -> tuple[list[str], list[dict]]:
  """The tuning's tables and JSON cells."""
  spec = study.TUNE
  as_is = tuning.candidates['as is']
  rows, cells = [], []
  for tag, cell in tuning.candidates.items():
    changes = ', '.join(f'{k} {v:g}' for k, v in tuning.changes[tag].items()) or '-'
    if cell is None:
      rows.append(f'| {tag} | {changes} | not run yet | | | |')
      continue
    entry = _json_cell(study, cell, 'tune', as_is, entropy, tag)
    entry['changes'] = tuning.changes[tag]
    cells.append(entry)
    mark = ' (winner)' if tag == tuning.winner else ''
    rows.append(
      f'| {tag}{mark} | {changes} | {stats.mean_std(cell.final(), 4)} | '
      f'{_versus_text(entry["vs_adamw"], len(cell.seeds))} |'
    )
  lines = [
    f"## Tuning {spec['cell']}: each change at the rate {spec['rate']:g}, on the sweep's seeds",
    '',
    '"vs as is": the paired difference of the final validation loss against the cell as it '
    'is, its 95% t interval and the trials in which the change is lower.',
    '',
    *table_head('variant', 'changes', 'val loss', 'vs as is', '95% CI', 'lower than as is'),
    *rows,
    '',
  ]
  if tuning.winner is not None:
    rate_rows = []
    for lr, cell in tuning.rates.items():
      if cell is None:
        rate_rows.append(f'| {lr:g} | not run yet |')
        continue
      if lr != spec['rate']:
        entry = _json_cell(study, cell, 'tune', None, entropy, tuning.winner)
        entry['changes'] = tuning.changes[tuning.winner]
        cells.append(entry)
      mark = ' (best)' if lr == tuning.best_rate else ''
      rate_rows.append(f'| {lr:g} | {stats.mean_std(cell.final(), 4)}{mark} |')
    lines += [
      f'The winner, {tuning.winner}, at other rates:',
      '',
      *table_head('rate', 'val loss'),
      *rate_rows,
      '',
    ]
  return lines, cells


@dataclasses.dataclass
class _Headline:
  lines: list[str]
  payload: dict


def _verdict(diff: float, lo: float, hi: float, reference: float) -> str:
  """The rule the studies of the lead's breadth state before their runs."""
  if lo > 0:
    return 'reversed'
  below, large = hi < 0, diff <= reference / 2
  if below and large:
    return 'held'
  if diff >= 0 or (not below and not large):
    return 'vanished'
  return 'shrank'


def _rule_text(reference: float) -> str:
  half = reference / 2
  return (
    f'*held*: the 95% interval lies entirely below 0 and the difference is {half:+.4f} or '
    f'lower (at least half of the reference {reference:+.4f}); *shrank*: the interval lies '
    f'below 0 with a difference above {half:+.4f}, or reaches 0 with one of {half:+.4f} or '
    f'lower; *vanished*: the difference is 0 or above, or the interval reaches 0 with a '
    f'difference above {half:+.4f}; *reversed*: the interval lies entirely above 0'
  )


def _headline(study, confirm: dict[str, Runs | None], scale: str) -> _Headline | None:
  """The verdict on ``study.HEADLINE`` (cell a - cell b on the fresh seeds)."""
  if not getattr(study, 'HEADLINE', None):
    return None
  a, b = study.HEADLINE
  head = [
    '## Verdict',
    '',
    f'The rule, stated in the study before its runs, for {a} - {b} at the end of the runs on '
    f'the fresh seeds against the reference (lm_medium, scale cpu): {_rule_text(study.REFERENCE)}.',
    '',
  ]
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return _Headline([*head, f'Waits for the runs of {a} and {b}.', ''], {'verdict': None})
  versus = _versus(cell_a, cell_b)
  assert versus is not None
  lo, hi = versus['ci95'] or (float('nan'), float('nan'))
  verdict = _verdict(versus['diff'], lo, hi, study.REFERENCE)
  trials = len(cell_a.seeds)
  lines = [
    *head,
    f'{_label(cell_a)} - {_label(cell_b)}: {versus["diff"]:+.4f} nats/char [{lo:+.4f}, '
    f'{hi:+.4f}], lower in {versus["wins"]}/{trials} trials; reference {study.REFERENCE:+.4f}: '
    f'**{verdict}**.',
    '',
  ]
  payload = {'cells': [a, b], **versus, 'reference': study.REFERENCE, 'verdict': verdict}
  return _Headline(lines, payload)


def _difference_by_step(cell_a: Runs, cell_b: Runs) -> tuple[np.ndarray, ...]:
  """(steps, mean, low, high) of the paired validation-loss difference a - b."""
  steps, va = stats.step_curves(cell_a.rows)
  _, vb = stats.step_curves(cell_b.rows)
  out = [stats.paired_difference(va[:, i], vb[:, i], better='lower') for i in range(len(steps))]
  return steps, *(np.asarray([o[k] for o in out]) for k in range(3))


def _over_steps_lines(study, confirm: dict[str, Runs | None], mid_steps) -> list[str]:
  a, b = study.HEADLINE
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return []
  steps, mean, low, high = _difference_by_step(cell_a, cell_b)
  gap = lambda cell: (
    stats.step_curves(cell.rows)[1] - stats.step_curves(cell.rows, 'train_eval_loss')[1]
  )
  gap_a, gap_b = gap(cell_a), gap(cell_b)
  rows = []
  for step in (*mid_steps, steps[-1]):
    i = int(np.searchsorted(steps, step))
    when = 'end of the run' if i == len(steps) - 1 else 'mid-schedule'
    wins = int(
      np.sum(stats.step_curves(cell_a.rows)[1][:, i] < stats.step_curves(cell_b.rows)[1][:, i])
    )
    rows.append(
      f'| {step} ({when}) | {mean[i]:+.4f} | [{low[i]:+.4f}, {high[i]:+.4f}] | '
      f'{wins}/{len(cell_a.seeds)} | {stats.mean_std(gap_a[:, i], 4)} | '
      f'{stats.mean_std(gap_b[:, i], 4)} |'
    )
  return [
    f'## {a} - {b} over the run (the same runs; mid-schedule rows are not results)',
    '',
    'Before the last step the rate has not decayed to its end, so a difference there is not '
    "the difference of a finished schedule: only the last row is the study's result. gap: "
    'validation minus train loss, per trial.',
    '',
    *table_head('step', 'difference', '95% CI', f'{a} lower', f'gap {a}', f'gap {b}'),
    *rows,
    '',
  ]


def _add_steps_figure(result: Report, runner, study, confirm: dict[str, Runs | None]) -> None:
  a, b = study.HEADLINE
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return
  difference = _difference_by_step(cell_a, cell_b)
  gaps = {}
  for cell in (cell_a, cell_b):
    steps, val = stats.step_curves(cell.rows)
    gaps[_label(cell)] = (steps, val - stats.step_curves(cell.rows, 'train_eval_loss')[1])
  title = f'{a} - {b}, {len(cell_a.seeds)} paired trials, scale {runner.options.scale}'
  stem = runner.stem()
  result.figures['_steps.png'] = lambda path: plots.difference_over_steps(
    difference, gaps, path, f'{a} - {b}', title
  )
  result.lines.append(
    f'The difference and the train/validation gap over steps (mid-schedule before the last '
    f'step): `{stem}_steps.png`.'
  )
