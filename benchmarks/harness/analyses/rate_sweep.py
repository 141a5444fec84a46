"""Each method at its best peak rate against AdamW at its best: the LM study.

The study supplies ``SCALES`` (dicts: ``config``, the example's fields of
every run; ``learning_rates``; ``trials``; ``seed``), ``CELLS`` (name ->
:class:`harness.cells.Cell`), ``RUN`` (the cells it reports, in order) and ``TITLE``.
Every cell runs at every rate on the same paired trials; a method's best rate
has the lowest mean final validation loss, and the paired difference of that
loss against AdamW's (nats per character) is reported with its 95% t
interval and the number of trials in which the method is lower. The rate is
chosen on the validation loss that is reported, so the test loss of the same
runs is given too.
"""

import numpy as np

from harness import plots
from harness import stats
from harness.analyses import Report
from harness.cells import Cell
from harness.report import table_head


def cell_name(cell: Cell) -> str:
  text = ', '.join(f'{k}={v}' for k, v in cell.options.items())
  return f'{cell.method} ({text})' if text else cell.method


def _final(rows: list[dict], key: str = 'val_loss') -> np.ndarray:
  return stats.final(rows, key, order='step')


def report(runner) -> Report:
  study, scale = runner.study, runner.scale
  rates, trials = scale['learning_rates'], scale['trials']
  methods = [c for c in study.RUN if runner.wanted(c)]
  if not methods:
    raise ValueError(f'--cells {runner.options.cells!r} matches no cell of {runner.options.study}')
  base = runner.config(**scale['config'], seed=scale['seed'])

  runs: dict[tuple[str, float], list[dict]] = {}
  unfinished: dict[tuple[str, float], int] = {}
  for method in methods:
    for lr in rates:
      cell = study.CELLS[method]
      label = f'{method} lr={lr:g}'
      fields = dict(scale['config'], learning_rate=lr, seed=scale['seed'])
      rows = runner.runs(cell, trials, label, **fields)
      if rows is None:
        unfinished[method, lr] = runner.cached(label)
      else:
        runs[method, lr] = rows

  best = {}
  for method in methods:
    done = {lr: _final(runs[method, lr]).mean() for lr in rates if (method, lr) in runs}
    if len(done) == len(rates):
      best[method] = min(done, key=done.get)
  base_val = _final(runs['adamw', best['adamw']]) if 'adamw' in best else None
  pairs = getattr(study, 'PAIRS', {})
  cells, table, curves = [], [], {}
  for method in methods:
    name = cell_name(study.CELLS[method])
    if method not in best:
      table.append(
        f'| {name} | not run yet ('
        + ', '.join(f'lr {lr:g}: {unfinished.get((method, lr), trials)}/{trials}' for lr in rates)
        + ' trials cached) |'
        + ' |' * (7 + bool(pairs))
      )
      continue
    lr = best[method]
    rows = runs[method, lr]
    val, test = _final(rows), _final(rows, 'test_loss')
    versus, cols = None, '(baseline) | | '
    if method != 'adamw' and base_val is not None:
      diff, lo, hi, wins = stats.paired_difference(val, base_val, better='lower')
      ci95 = None if np.isnan(lo) else [lo, hi]  # one trial: no interval
      versus = {'diff': diff, 'ci95': ci95, 'wins': wins}
      cols = f'{diff:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {wins}/{len(val)}'
    elif method != 'adamw':
      cols = 'adamw not run yet | | '
    cells.append(
      {
        'name': name,
        'method': study.CELLS[method].method,
        'options': dict(study.CELLS[method].options, learning_rate=lr),
        'trials': len(val),
        'val_loss': float(val.mean()),
        'vs_adamw': versus,
      }
    )
    paired = ''
    if pairs:
      other = pairs.get(method)
      cells[-1]['vs_cell'] = None
      if other in best:
        diff, lo, hi, wins = stats.paired_difference(
          val, _final(runs[other, best[other]]), better='lower'
        )
        cells[-1]['vs_cell'] = {'cell': other, 'diff': diff, 'ci95': [lo, hi], 'wins': wins}
        paired = f'vs {other}: {diff:+.4f} [{lo:+.4f}, {hi:+.4f}], {wins}/{len(val)}'
      paired += ' | '

    tokens_per_sec = np.mean([r['tokens_per_sec'] for r in rows])
    # A best rate at the edge of the sweep may not be the method's best.
    edge = '*' if len(rates) > 1 and lr in (min(rates), max(rates)) else ''
    table.append(
      f'| {name} | {lr:g}{edge} | {stats.mean_std(val, 4)} | {stats.mean_std(test, 4)} | '
      f'{cols} | {paired}{tokens_per_sec:.0f} |'
    )
    curves[f'{name}, lr {lr:g}'] = stats.step_curves(rows)

  sweep = []
  for method in methods:
    entries = [
      f'{_final(runs[method, lr]).mean():.4f}' if (method, lr) in runs else 'not run yet'
      for lr in rates
    ]
    sweep.append(f'| {method} | ' + ' | '.join(entries) + ' |')

  facts, config = runner.facts(), scale['config']
  characters = facts.get('characters', ['?'] * 3)
  fmt = lambda n: f'{n:,}' if isinstance(n, int) else str(n)
  seed = scale['seed']
  lines = [
    f'# {study.TITLE.format(scale=runner.options.scale)}',
    '',
    runner.command_line(),
    f'- data: {runner.data_label()}: {" / ".join(fmt(n) for n in characters)}'
    f" characters (train / validation / test, TFDS tiny_shakespeare's split),"
    f' vocabulary {facts.get("vocab_size", "?")}',
    f'- model: decoder-only transformer (Flax NNX), {config["num_layers"]} block(s), width'
    f' {config["embed_dim"]}, {config["num_heads"]} heads, context {config["context_length"]},'
    f' {fmt(facts.get("params", "?"))} parameters',
    f'- training: {config["steps"]} steps of {config["batch_size"]} random windows, AdamW (b1 '
    f'{base["b1"]}, b2 {base["b2"]}, weight decay {base["weight_decay"]} on matrices and '
    f'embeddings), linear warm-up {config["warmup_steps"]} steps then cosine to '
    f'{base["end_learning_rate_ratio"]}x, gradient clipping at norm {base["clip_norm"]}; peak '
    'rates swept: '
    + ', '.join(f'{lr:g}' for lr in rates)
    + f'; {trials} paired trials per method and rate (seeds {seed}..{seed + trials - 1})',
    f'- evaluation: loss in nats per character on {config["eval_batches"] * config["batch_size"]}'
    ' fixed windows of each split, after the last step',
    *runner.provenance_lines('runs'),
    '',
    'Each method at its best peak rate (lowest mean final validation loss over the sweep). '
    '"vs AdamW": the paired difference of the final validation loss against AdamW at its best '
    'rate (negative: lower than AdamW), its 95% t confidence interval and the number of trials '
    'in which the method is lower. The rate is chosen on the same validation loss, so the test '
    'loss of the same runs is given too. '
    + ('Some cells are also paired with another cell, named in their row. ' if pairs else '')
    + '*: the best rate is at an edge of the sweep.',
    '',
    *table_head(
      'method',
      'best rate',
      'val loss',
      'test loss',
      'vs AdamW (nats/char)',
      '95% CI',
      'lower than AdamW',
      *(['paired with another cell: difference [95% CI], lower'] if pairs else []),
      'tokens/s',
    ),
    *table,
    '',
    '## Learning-rate sweep: mean final validation loss',
    '',
    *table_head('method', *(f'lr {lr:g}' for lr in rates)),
    *sweep,
    '',
  ]
  result = Report(lines, {'cells': cells}, indent=2)
  caption = 'Learning curves (validation loss, each method at its best rate)'
  return plots.add_loss_curves(result, runner, curves, caption, 'mean ± std over trials')
