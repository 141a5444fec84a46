"""A rate sweep that widens while its best rate is at an edge, the tuning of
a baseline's settings, and the rate each confirmation cell runs at: the
protocol of :mod:`harness.analyses.scale_confirmation`."""

import dataclasses

import numpy as np

from harness import stats


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


class Grid:
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
    config = self.runner.cell_config(cell, **fields)
    return Runs(name, rate, rows, config, list(range(seed, seed + trials)), tag)


def sweep(
  grid: Grid,
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


def tune(grid: Grid, study) -> Tuning:
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
    if fields not in best_by_field or mean(candidates[tag]) < mean(
      candidates[best_by_field[fields]]
    ):
      best_by_field[fields] = tag
  ranked = sorted(best_by_field.values(), key=lambda tag: mean(candidates[tag]))
  combined: dict = {}
  for tag in ranked[: spec['combine']]:
    combined |= spec['variants'][tag]
  changes['combined'] = combined
  candidates['combined'] = grid.cell(name, rate, 'tune', combined, 'combined')
  if candidates['combined'] is None:
    grid.waiting['tune winner'] = 'waits for the combined change'
    return tuning
  tuning.winner = min(candidates, key=lambda tag: mean(candidates[tag]))
  winner = changes[tuning.winner]
  tuning.rates = {rate: candidates[tuning.winner]}
  for other in spec['rates']:
    tuning.rates[other] = grid.cell(
      name, other, 'sweep' if not winner else 'tune', winner, tuning.winner if winner else ''
    )
  tuning.rates = dict(sorted(tuning.rates.items()))
  if all(c is not None for c in tuning.rates.values()):
    tuning.best_rate = min(tuning.rates, key=lambda lr: mean(tuning.rates[lr]))
  return tuning


def mean(cell: Runs | None) -> float:
  return cell.mean_val() if cell is not None else float('inf')


def sweep_start(scale: dict, name: str) -> tuple[int, int]:
  """The slice of the rates that cell ``name``'s sweep runs first."""
  start = scale.get('sweep_start', (0, len(scale['learning_rates'])))
  return start[name] if isinstance(start, dict) else start


def confirmation_rate(study, chooser, best: dict, tuning: Tuning | None) -> float | None:
  """The rate a confirmation cell runs at: a fixed rate, the best rate of the
  swept cell it names, or (``'tuned'``) the tuning winner's best rate; None
  while that is not known yet."""
  if isinstance(chooser, float):
    return chooser
  if chooser == 'tuned':
    return tuning.best_rate if tuning is not None else None
  return best.get(chooser)


def chooser_text(chooser) -> str:
  if isinstance(chooser, float):
    return f'the rate {chooser:g}'
  return 'the tuning' if chooser == 'tuned' else f'the sweep of {chooser}'


def first_rates(study, scale: dict) -> str:
  """The rates each swept cell runs first, in words."""
  rates = scale['learning_rates']
  text = lambda name: ', '.join(f'{lr:g}' for lr in rates[slice(*sweep_start(scale, name))])
  if not isinstance(scale.get('sweep_start'), dict):
    return text(study.SWEEP[0]) if study.SWEEP else ''
  return '; '.join(f'{name} {text(name)}' for name in study.SWEEP)


def rates_chosen(study) -> str:
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


def sweep_line(study, scale: dict, seeds) -> str:
  rates = scale['learning_rates']
  return (
    f'- sweep: peak rates on the grid {", ".join(f"{lr:g}" for lr in rates)} for '
    f'{", ".join(study.SWEEP)}: first {first_rates(study, scale)}'
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


def tune_line(study, scale: dict, seeds) -> str:
  spec = study.TUNE
  return (
    f'- tuning: {spec["cell"]} at the rate {spec["rate"]:g} with one change at a time '
    f'({"; ".join(spec["variants"])}), then the best values of the {spec["combine"]} settings '
    'whose best changes score lowest, together; the lowest mean final validation loss wins '
    f'and runs at {", ".join(f"{lr:g}" for lr in spec["rates"])} too; '
    f'{seeds(scale["sweep_trials"], scale["sweep_seed"])}; confirmation: '
    f'{seeds(scale["trials"], scale["seed"])} the tuning never saw'
  )
