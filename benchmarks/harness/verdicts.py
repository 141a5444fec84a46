"""The verdict a study of the lead's breadth states before its runs, and the
difference of its headline pair over the steps of the runs."""

import dataclasses

import numpy as np

from harness import plots
from harness import stats
from harness import sweeps
from harness.analyses import Report
from harness.report import table_head


def versus(cell: sweeps.Runs, base: sweeps.Runs | None) -> dict | None:
  if base is None or cell is base:
    return None
  diff, lo, hi, wins = stats.paired_difference(cell.final(), base.final(), better='lower')
  return {'diff': diff, 'ci95': None if np.isnan(lo) else [lo, hi], 'wins': wins}


def label(cell: sweeps.Runs) -> str:
  return f'{cell.name} ({cell.tag})' if cell.tag else cell.name


@dataclasses.dataclass
class Headline:
  lines: list[str]
  payload: dict


def verdict(diff: float, lo: float, hi: float, reference: float) -> str:
  """The rule the studies of the lead's breadth state before their runs."""
  if lo > 0:
    return 'reversed'
  below, large = hi < 0, diff <= reference / 2
  if below and large:
    return 'held'
  if diff >= 0 or (not below and not large):
    return 'vanished'
  return 'shrank'


def rule_text(reference: float) -> str:
  half = reference / 2
  return (
    f'*held*: the 95% interval lies entirely below 0 and the difference is {half:+.4f} or '
    f'lower (at least half of the reference {reference:+.4f}); *shrank*: the interval lies '
    f'below 0 with a difference above {half:+.4f}, or reaches 0 with one of {half:+.4f} or '
    f'lower; *vanished*: the difference is 0 or above, or the interval reaches 0 with a '
    f'difference above {half:+.4f}; *reversed*: the interval lies entirely above 0'
  )


def headline(study, confirm: dict[str, sweeps.Runs | None], scale: str) -> Headline | None:
  """The verdict on ``study.HEADLINE`` (cell a - cell b on the fresh seeds)."""
  if not getattr(study, 'HEADLINE', None):
    return None
  a, b = study.HEADLINE
  head = [
    '## Verdict',
    '',
    f'The rule, stated in the study before its runs, for {a} - {b} at the end of the runs on '
    f'the fresh seeds against the reference (lm_medium, scale cpu): {rule_text(study.REFERENCE)}.',
    '',
  ]
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return Headline([*head, f'Waits for the runs of {a} and {b}.', ''], {'verdict': None})
  pair = versus(cell_a, cell_b)
  assert pair is not None
  lo, hi = pair['ci95'] or (float('nan'), float('nan'))
  outcome = verdict(pair['diff'], lo, hi, study.REFERENCE)
  trials = len(cell_a.seeds)
  lines = [
    *head,
    f'{label(cell_a)} - {label(cell_b)}: {pair["diff"]:+.4f} nats/char [{lo:+.4f}, '
    f'{hi:+.4f}], lower in {pair["wins"]}/{trials} trials; reference {study.REFERENCE:+.4f}: '
    f'**{outcome}**.',
    '',
  ]
  payload = {'cells': [a, b], **pair, 'reference': study.REFERENCE, 'verdict': outcome}
  return Headline(lines, payload)


def difference_by_step(cell_a: sweeps.Runs, cell_b: sweeps.Runs) -> tuple[np.ndarray, ...]:
  """(steps, mean, low, high) of the paired validation-loss difference a - b."""
  steps, va = stats.step_curves(cell_a.rows)
  _, vb = stats.step_curves(cell_b.rows)
  out = [stats.paired_difference(va[:, i], vb[:, i], better='lower') for i in range(len(steps))]
  return steps, *(np.asarray([o[k] for o in out]) for k in range(3))


def over_steps_lines(study, confirm: dict[str, sweeps.Runs | None], mid_steps) -> list[str]:
  a, b = study.HEADLINE
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return []
  steps, mean, low, high = difference_by_step(cell_a, cell_b)
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


def add_steps_figure(result: Report, runner, study, confirm: dict[str, sweeps.Runs | None]) -> None:
  a, b = study.HEADLINE
  cell_a, cell_b = confirm.get(a), confirm.get(b)
  if cell_a is None or cell_b is None:
    return
  difference = difference_by_step(cell_a, cell_b)
  gaps = {}
  for cell in (cell_a, cell_b):
    steps, val = stats.step_curves(cell.rows)
    gaps[label(cell)] = (steps, val - stats.step_curves(cell.rows, 'train_eval_loss')[1])
  title = f'{a} - {b}, {len(cell_a.seeds)} paired trials, scale {runner.options.scale}'
  stem = runner.stem()
  result.figures['_steps.png'] = lambda path: plots.difference_over_steps(
    difference, gaps, path, f'{a} - {b}', title
  )
  result.lines.append(
    f'The difference and the train/validation gap over steps (mid-schedule before the last '
    f'step): `{stem}_steps.png`.'
  )
