"""Cells against their SGD cell: the paper's Tables 3-5 and the momentum table.

The study supplies ``SCALES`` (dicts: model, epochs, trials, fraction,
batch_size, ...), ``TABLES`` (which, in training order), ``TITLES``,
``cells(scale, table)`` (a list of :class:`harness.cells.Cell`, each with
its ``table``), and optionally ``NOTE``
(lines quoted above the header), ``CELL_PATTERN`` (a regular expression of
the cells it reports) and ``DATA_NOTES`` (a data copy's content hash -> what the
report says of it).
"""

import json
import re

import numpy as np

from harness import plots
from harness import stats
from harness.analyses import Report
from harness.cells import Cell
from harness.report import table_head

_BASELINE_FIELDS = ('train_fraction', 'batch_size', 'learning_rate')


def baseline(cell: Cell) -> Cell:
  """The SGD cell ``cell`` is paired with: same data, batch, rate."""
  kept = {k: cell.options[k] for k in _BASELINE_FIELDS if k in cell.options}
  return Cell(f'SGD baseline {kept}', 'sgd', kept)


def _is_baseline(cell: Cell) -> bool:
  return cell.method == 'sgd' and set(cell.options) <= set(_BASELINE_FIELDS)


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


class _Cells:
  """The runs of cells through the runner (None: not all trials cached)."""

  def __init__(self, runner, scale):
    self.runner, self.scale = runner, scale
    self.base = dict(
      model=scale['model'], epochs=scale['epochs'], augment=scale.get('augment', False)
    )

  def config(self, cell: Cell) -> dict:
    return self.runner.cell_config(cell, **self.base)

  def rows(self, cell: Cell) -> list[dict] | None:
    return self.runner.runs(cell, self.scale['trials'], **self.base)


def _best_rates(todo: list[Cell], cells: _Cells) -> list[str]:
  """Table 3's learning-rate check: each method at its own best base rate.

  SGD's cells and the paper's SBS setting (alpha 0.1, lam -4, no other
  reading) at every learning rate of the table; the best rate of each by the
  mean over trials of the last-10% accuracy, and SBS at its best rate against
  SGD at its best, paired by trial.
  """
  plain = {'sgd': {}, 'sbs': {'alpha': 0.1, 'lam': -4.0}}
  by_rate: dict[str, dict[float, np.ndarray]] = {'sgd': {}, 'sbs': {}}
  for cell in (c for c in todo if c.table == '3'):
    config = cells.config(cell)
    reference = cells.runner.config(
      method=cell.method,
      **cells.base,
      **plain[cell.method],
      train_fraction=config['train_fraction'],
      batch_size=config['batch_size'],
      learning_rate=config['learning_rate'],
    )
    rows = cells.rows(cell)
    if rows is not None and config == reference:
      by_rate[cell.method][config['learning_rate']] = stats.last_fraction_mean(rows)
  if len(by_rate['sgd']) < 2 or len(by_rate['sbs']) < 2:
    return []
  best = {m: max(r, key=lambda lr: r[lr].mean()) for m, r in by_rate.items()}
  mean, lo, hi, wins = stats.paired_difference(
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


def _paired_text(rows_a: list[dict] | None, rows_b: list[dict] | None, name: str, who: str):
  """``name``: the paired difference of the last-10% accuracy of two cells'
  runs, in words (None while either is unfinished)."""
  if rows_a is None or rows_b is None:
    return None
  last_a = stats.last_fraction_mean(rows_a)
  mean, lo, hi, wins = stats.paired_difference(last_a, stats.last_fraction_mean(rows_b))
  return (
    f'- {name} {mean:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}], {who} better in '
    f'{wins}/{len(last_a)} trials.'
  )


def _frozen_vs_chain(todo: list[Cell], cells: _Cells) -> list[str]:
  """Table m: per pair of cells that differ only in ``sbs_momentum``, the
  paired difference frozen - chain."""
  lines = []
  for cell in (c for c in todo if c.table == 'm'):
    if cell.options.get('sbs_momentum') != 'frozen':
      continue
    chain = cell.with_options(cell.name.replace(' frozen', ' chain'), sbs_momentum='chain')
    name = f'{cell.name.replace(" frozen", "")}: frozen - chain'
    lines.append(_paired_text(cells.rows(cell), cells.rows(chain), name, 'frozen'))
  lines = [line for line in lines if line]
  return ['Frozen vs chain, paired by trial:'] + lines if lines else []


def _pairs(study, todo: list[Cell], cells: _Cells) -> list[str]:
  """``study.PAIRS`` ((label a, label b, what a - b is called), ...): the
  paired difference of the last-10% accuracy of two cells of the report."""
  by_label = {c.name: c for c in todo}
  lines = [
    _paired_text(cells.rows(by_label[a]), cells.rows(by_label[b]), f'{name}:', a)
    for a, b, name in getattr(study, 'PAIRS', ())
  ]
  lines = [line for line in lines if line]
  return ['Paired by trial:', *lines, ''] if lines else []


def report(runner) -> Report:
  study, scale = runner.study, runner.scale
  pattern = getattr(study, 'CELL_PATTERN', None)
  todo = [
    c
    for t in study.TABLES
    for c in study.cells(scale, t)
    if (pattern is None or re.search(pattern, c.name)) and runner.wanted(c.name)
  ]
  if not todo:
    raise ValueError(f'--cells {runner.options.cells!r} matches no cell of {runner.options.study}')
  cells = _Cells(runner, scale)
  results: dict[Cell, list[dict] | None] = {}
  for cell in todo + [baseline(c) for c in todo]:
    if cell not in results:
      results[cell] = cells.rows(cell)

  trials = scale['trials']
  panels: dict[str, dict] = {}
  body = []
  for table in sorted({c.table for c in todo}):
    body += [
      f'## {study.TITLES[table].format(**scale, denominator=round(1 / scale["fraction"]))}',
      '',
      *table_head(*COLUMNS),
    ]
    for cell in (c for c in todo if c.table == table):
      rows, base_rows = results[cell], results[baseline(cell)]
      if rows is None or base_rows is None:
        pair = {json.dumps(cells.config(c), sort_keys=True): c for c in (cell, baseline(cell))}
        done = ', '.join(
          f'{trials}/{trials}' if results[c] is not None else f'{runner.cached(c.name)}/{trials}'
          for c in pair.values()
        )
        body.append(
          f'| {cell.name} | not run yet (trials cached, cell and '
          f'its SGD: {done}) |' + ' |' * (len(COLUMNS) - 2)
        )
        continue
      last, best = stats.last_fraction_mean(rows), stats.maximum(rows)
      if _is_baseline(cell):
        versus = '(baseline) | | '
      else:
        mean, lo, hi, wins = stats.paired_difference(last, stats.last_fraction_mean(base_rows))
        versus = f'{mean:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {wins}/{len(last)}'
      body.append(
        f'| {cell.name} | {stats.mean_std(last)} | {stats.mean_std(best)} | {versus} | '
        f'{stats.final(rows, "train_loss").mean():.3f} | {stats.update_statistics(rows)} |'
      )
      if table in ('4', '5', 'm'):
        # Table 4: a panel per batch size, a colour per training fraction.
        panel, group = f'Table {table}', None
        if table in ('4', 'm'):
          config = cells.config(cell)
          panel += f', batch {config["batch_size"]}'
          group = (config['train_fraction'], config['batch_size'])
        panels.setdefault(panel, {})[cell.name] = (stats.mean_curve(rows), group)
    body.append('')
    if table == '3':
      body += _best_rates(todo, cells) + ['']
    if table == 'm':
      body += _frozen_vs_chain(todo, cells) + ['']
  pairs = _pairs(study, todo, cells)
  if pairs:
    while body[-2:] == ['', '']:
      body.pop()
    body += pairs

  facts = runner.facts()
  test_images = facts.get('test_images', scale.get('test_examples'))
  subset = bool(scale.get('test_examples')) and scale['test_examples'] <= (test_images or 0)
  data_note = getattr(study, 'DATA_NOTES', {}).get(runner.data_id.get('sha256'))
  lines = [
    f'# {study.TITLE.format(scale=runner.options.scale)}',
    '',
    *getattr(study, 'NOTE', ()),
    runner.command_line(),
    f'- data: {runner.data_label()}' + (f', {data_note}' if data_note else ''),
    f'- scale: {scale["model"]}, {scale["epochs"]} epochs, {trials} paired '
    f'trials per cell, sigmoid learning rate 0.1 -> 0.001, {study.MOMENTUM}, '
    + ('random crop + flip' if scale.get('augment') else 'no augmentation (the paper names none)')
    + ', test accuracy after every epoch on '
    + (
      f'a fixed class-balanced subset of {test_images} test images'
      if subset
      else f'all {test_images} test images'
    ),
    *runner.provenance_lines(),
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
    *body,
  ]
  result = Report(lines)
  if panels:
    result.add_curves(
      runner.stem(), 'Learning curves', lambda path: plots.epoch_panels(panels, path)
    )
  return result
