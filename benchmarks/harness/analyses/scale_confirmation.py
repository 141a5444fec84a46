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

import numpy as np

from harness import plots
from harness import stats
from harness import sweeps
from harness import verdicts
from harness.analyses import Report
from harness.report import table_head


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


def _stalled(cell: sweeps.Runs, entropy: float) -> int:
  val = cell.final()
  return int(np.sum(~np.isfinite(val) | (val >= entropy)))


def _json_cell(
  study, cell: sweeps.Runs, phase: str, base: sweeps.Runs | None, entropy: float, tag: str = ''
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
    'vs_adamw': verdicts.versus(cell, base),
  }


def _versus_text(versus: dict | None, trials: int) -> str:
  if versus is None:
    return '(baseline) | | '
  lo, hi = versus['ci95'] or (float('nan'), float('nan'))
  return f'{versus["diff"]:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {versus["wins"]}/{trials}'


def report(runner) -> Report:
  study, scale = runner.study, runner.scale
  rates = scale['learning_rates']
  grid = sweeps.Grid(runner)

  sweep: dict[tuple[str, float], sweeps.Runs | None] = {}
  best: dict[str, float] = {}
  for name in study.SWEEP:
    cells, best_rate = sweeps.sweep(
      grid, name, rates, sweeps.sweep_start(scale, name), scale.get('sweep_span')
    )
    sweep |= {(name, lr): cell for lr, cell in cells.items()}
    if best_rate is not None:
      best[name] = best_rate
  tuning = sweeps.tune(grid, study) if hasattr(study, 'TUNE') else None
  confirm: dict[str, sweeps.Runs | None] = {}
  for name, chooser in study.CONFIRM.items():
    rate, extra, tag = sweeps.confirmation_rate(study, chooser, best, tuning), None, ''
    if tuning is not None and name in study.TUNED:
      if tuning.winner is None:
        rate, chooser = None, 'tuned'  # it waits for the winner's settings
      else:
        extra, tag = tuning.changes[tuning.winner], tuning.winner
    if rate is None:
      grid.waiting[f'confirmation {name}'] = f'waits for {sweeps.chooser_text(chooser)}'
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
      versus = verdicts.versus(cell, confirm.get(other)) if other else None
      entry['vs_cell'] = None if versus is None else {'cell': other, **versus}
    payload_cells.append(entry)
    train, val = cell.final('train_eval_loss'), cell.final()
    gap = stats.mean_std(val - train, 4)
    edge = '*' if cell.rate in (min(rates), max(rates)) else ''
    confirm_table.append(
      f'| {verdicts.label(cell)} | {cell.rate:g}{edge} | {stats.mean_std(val, 4)} | '
      + (f'{stats.mean_std(_best_val(cell), 4)} | ' if mid_steps else '')
      + f'{stats.mean_std(cell.final("test_loss"), 4)} | {stats.mean_std(train, 4)} | {gap} | '
      f'{_versus_text(entry["vs_adamw"], len(val))} | '
      + (f'{_paired_text(entry["vs_cell"], len(val))} | ' if pairs else '')
      + f'{entry["stalled"]} | {entry["tokens_per_sec"]:.0f} |'
    )
    curves[f'{verdicts.label(cell)}, lr {cell.rate:g}'] = stats.step_curves(cell.rows)

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
    *([sweeps.sweep_line(study, scale, seeds)] if study.SWEEP else []),
    *([sweeps.tune_line(study, scale, seeds)] if tuning is not None else []),
    f'- evaluation: loss in nats per character on {config["eval_batches"] * config["batch_size"]}'
    ' fixed windows of each split (training split included, dropout off), after the last step',
    f'- runs that stalled or diverged: {_stalled_count(runner.used.values(), entropy)}',
    *runner.provenance_lines('runs'),
    '',
  ]
  headline = verdicts.headline(study, confirm, runner.options.scale)
  if headline is not None:
    lines += headline.lines
  lines += [
    '## Confirmation: each cell at its rate, on fresh seeds',
    '',
    f'{sweeps.rates_chosen(study)}. "vs AdamW": the '
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
    lines += verdicts.over_steps_lines(study, confirm, mid_steps)
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
    verdicts.add_steps_figure(result, runner, study, confirm)
  return result


def _best_val(cell: sweeps.Runs) -> np.ndarray:
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


def _tuning_section(study, tuning: sweeps.Tuning, entropy: float) -> tuple[list[str], list[dict]]:
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
    f"## sweeps.Tuning {spec['cell']}: each change at the rate {spec['rate']:g}, on the sweep's seeds",
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
