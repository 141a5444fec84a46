"""Cells against SGD at the same rate, with train accuracy and a rate check.

The overfitting regime's report. The study supplies ``SCALES`` (dicts: model,
fraction, epochs, trials, batch_size, learning_rate, test_examples),
``CELLS`` (:class:`harness.cells.Cell`; the first is SGD), ``RATE_CHECK`` (the cells whose
best is checked at ``RATE_FACTORS`` times the base rate against SGD's) and
``AFTER`` (markdown lines after the tables).
"""

import numpy as np

from harness import plots
from harness import stats
from harness.analyses import Report
from harness.cells import Cell
from harness.report import table_head


def with_rate(cell: Cell, rate: float) -> Cell:
  return cell.with_options(f'{cell.name}, lr={rate:g}', learning_rate=rate)


COLUMNS = (
  'cell',
  'test: last 10%',
  'test: max',
  'final train acc.',
  'vs SGD (points)',
  '95% CI',
  'beats SGD',
  'SBS: updated per step / mean k',
)


def base_config(scale: dict) -> dict:
  """The example's fields of every cell of a scale, before the cell's options."""
  return dict(
    model=scale['model'],
    train_fraction=scale['fraction'],
    epochs=scale['epochs'],
    batch_size=scale['batch_size'],
    learning_rate=scale['learning_rate'],
    augment=False,
  )


def report(runner) -> Report:
  study, scale = runner.study, runner.scale
  base = base_config(scale)
  run = lambda cell: runner.runs(cell, scale['trials'], **base)

  last = lambda rows: stats.last_fraction_mean(rows)
  cells = tuple(c for c in study.CELLS if runner.wanted(c.name))
  # Entropy-SGD costs six gradients a step: it trains last.
  for cell in cells:
    if cell.method != 'esgd':
      run(cell)
  sgd = study.CELLS[0]
  rate = scale['learning_rate']
  finished = [c for c in study.RATE_CHECK if runner.wanted(c.name) and run(c) is not None]
  best_sbs = max(finished, key=lambda c: last(run(c)).mean(), default=None)
  rate_cells = []
  for reference in (sgd, best_sbs) if best_sbs is not None else (sgd,):
    for factor in study.RATE_FACTORS:
      rate_cells.append(with_rate(reference, rate * factor))
      run(rate_cells[-1])
  for cell in cells:
    run(cell)

  json_cells, curves = [], {}
  baseline = run(sgd)
  table = table_head(*COLUMNS)
  for cell in cells + tuple(rate_cells):
    rows = run(cell)
    if rows is None:
      table.append(f'| {cell.name} | not run yet ({runner.waiting(cell.name, scale["trials"])}) |')
      continue
    test_last, test_max = last(rows), stats.maximum(rows)
    train_acc = stats.final(rows, 'train_accuracy')
    versus, vs_json = '(baseline) | |', None
    if cell.method != 'sgd' and baseline is not None:
      # Against SGD at the same rate (the learning-rate check's own SGD).
      cell_rate = dict(cell.options).get('learning_rate')
      reference = run(with_rate(sgd, cell_rate)) if cell_rate else baseline
      if reference is not None:
        diff, lo, hi, wins = stats.paired_difference(test_last, last(reference))
        versus = f'{diff:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {wins}/{len(test_last)}'
        vs_json = {'diff': diff, 'ci95': [lo, hi], 'wins': wins}
    table.append(
      f'| {cell.name} | {stats.mean_std(test_last)} | '
      f'{stats.mean_std(test_max)} | {stats.mean_std(train_acc)} | '
      f'{versus} | {stats.update_statistics(rows)} |'
    )
    json_cells.append(
      {
        'name': cell.name,
        'method': cell.method,
        'options': dict(cell.options),
        'trials': len(test_last),
        'test_accuracy': float(test_last.mean()),
        'train_accuracy': float(train_acc.mean()),
        'vs_sgd': vs_json,
      }
    )
    if cell in cells:
      curves[cell.name] = (stats.mean_curve(rows, 'train_accuracy'), stats.mean_curve(rows))

  rate_lines = []
  for reference in (sgd, best_sbs) if best_sbs is not None else ():
    by_rate = {rate: run(reference)}
    by_rate.update({rate * f: run(with_rate(reference, rate * f)) for f in study.RATE_FACTORS})
    if any(r is None for r in by_rate.values()):
      continue
    means: dict[float, np.ndarray] = {r: last(rows) for r, rows in by_rate.items()}
    best = max(means, key=lambda r: means[r].mean())
    rate_lines.append((reference, best, means))
  if len(rate_lines) == 2:
    (_, sgd_rate, sgd_means), (sbs_cell, sbs_rate, sbs_means) = rate_lines
    diff, lo, hi, wins = stats.paired_difference(sbs_means[sbs_rate], sgd_means[sgd_rate])
    listing = lambda m: ', '.join(f'{r:g}: {a.mean():.2f}' for r, a in sorted(m.items()))
    rate_text = [
      f'Learning-rate check (test, last 10%, by base rate): SGD {listing(sgd_means)}; '
      f'{sbs_cell.name} {listing(sbs_means)}. The SBS cell at its best rate ({sbs_rate:g}) '
      f'vs SGD at its best ({sgd_rate:g}), paired: {diff:+.2f} points, 95% CI '
      f'[{lo:+.2f}, {hi:+.2f}], better in {wins}/{len(sgd_means[sgd_rate])} trials.',
      '',
    ]
  else:
    rate_text = ['Learning-rate check: not finished yet.', '']

  lines = [
    f'# {study.TITLE}',
    '',
    runner.command_line(),
    f'- data: {runner.data_label()}, a class-balanced {scale["fraction"]:g} of the '
    f'training set per trial, no augmentation; test accuracy after every epoch on a fixed '
    f'class-balanced subset of {runner.facts().get("test_images")} test images',
    f"- regime: {scale['model']}, batch {scale['batch_size']} (momentum 0 by the paper's "
    f'pairing), {scale["epochs"]} epochs, sigmoid learning rate {rate:g} -> 0.001, '
    f'{scale["trials"]} paired trials per cell',
    *runner.provenance_lines(),
    '',
    'Test accuracy: mean ± std over trials of the mean over the last 10% of epochs and of '
    'the maximum; final train accuracy: the running accuracy of the last epoch. "vs SGD": '
    'the paired difference of the last-10% test accuracy against SGD at the same learning '
    'rate, its 95% t confidence interval and the number of trials the cell won.',
    '',
    *table,
    '',
    *rate_text,
    *study.AFTER,
    '',
  ]
  result = Report(lines, {'cells': json_cells})
  if curves:
    result.add_curves(runner.stem(), 'Curves', lambda path: plots.train_and_test(curves, path))
  return result
