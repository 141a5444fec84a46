"""Paired statistics over trials, and the per-trial reductions of a run's rows.

The rows of a cell are the rows of its runs, each tagged with ``trial``
(its index within the cell); trial t of every cell shares its data order,
initialisation and keys, so two cells are compared pair by pair.
"""

import math

import numpy as np
from scipy import stats


def paired_difference(
  a: np.ndarray, b: np.ndarray, better: str = 'higher'
) -> tuple[float, float, float, int]:
  """Mean of a - b, its 95% t confidence interval, and in how many pairs a
  wins: a > b (``better='higher'``: accuracies) or a < b (``'lower'``:
  losses)."""
  if better not in ('higher', 'lower'):
    raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  mean = float(d.mean())
  wins = int(np.sum(d > 0)) if better == 'higher' else int(np.sum(d < 0))
  if len(d) < 2:
    return mean, float('nan'), float('nan'), wins
  if np.all(d == d[0]):  # no spread: the interval is the point (scipy warns)
    return mean, mean, mean, wins
  interval = stats.ttest_rel(a, b).confidence_interval(0.95)
  return mean, float(interval.low), float(interval.high), wins


def mean_std(values: np.ndarray, digits: int = 2) -> str:
  """``mean ± std`` over trials; the mean alone for one trial."""
  if len(values) < 2:
    return f'{np.mean(values):.{digits}f}'
  return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def by_trial(rows: list[dict], order: str) -> list[list[dict]]:
  """The rows of each trial (in trial order), each sorted by ``order``
  (``'epoch'`` or ``'step'``)."""
  trials = sorted({r['trial'] for r in rows})
  return [sorted((r for r in rows if r['trial'] == t), key=lambda r: r[order]) for t in trials]


def last_fraction_mean(rows: list[dict], key: str = 'val_accuracy') -> np.ndarray:
  """Per trial: the mean of ``key`` over the last 10% of epochs (at least one)."""
  per_trial = by_trial(rows, 'epoch')
  out = []
  for trial in per_trial:
    last = max(1, math.ceil(0.1 * len(trial)))
    out.append(float(np.mean([r[key] for r in trial][-last:])))
  return np.asarray(out)


def maximum(rows: list[dict], key: str = 'val_accuracy') -> np.ndarray:
  """Per trial: the maximum of ``key`` over epochs."""
  return np.asarray([max(r[key] for r in trial) for trial in by_trial(rows, 'epoch')])


def final(rows: list[dict], key: str, order: str = 'epoch') -> np.ndarray:
  """Per trial: ``key`` of the trial's last row (last epoch or step)."""
  return np.asarray([trial[-1][key] for trial in by_trial(rows, order)])


def mean_curve(rows: list[dict], key: str = 'val_accuracy') -> np.ndarray:
  """``key`` by epoch, mean over trials."""
  return np.array([[r[key] for r in trial] for trial in by_trial(rows, 'epoch')]).mean(0)


def step_curves(rows: list[dict], key: str = 'val_loss') -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)``: ``key`` against step, one row of values per trial."""
  per_trial = by_trial(rows, 'step')
  steps = np.asarray([r['step'] for r in per_trial[0]])
  return steps, np.asarray([[r[key] for r in trial] for trial in per_trial])


def update_statistics(rows: list[dict]) -> str:
  """SBS's fraction of elements updated per step and mean count k, both
  averaged over epochs and trials; empty for other methods."""
  fractions = [r['sbs_update_fraction'] for r in rows if 'sbs_update_fraction' in r]
  counts = [r['sbs_mean_count'] for r in rows if 'sbs_mean_count' in r]
  if not fractions or not counts:
    return ''
  return f'{np.mean(fractions):.3f} / {np.mean(counts):.2f}'


def ratios_to_baseline(per_round: dict[str, list[float]], baseline: str) -> dict[str, dict]:
  """Per entry of an interleaved timing: its median over rounds and the
  median and quartiles over rounds of its ratio to ``baseline`` in the same
  round (a slow spell of the machine falls on both sides of each ratio)."""
  base = np.asarray(per_round[baseline], dtype=float)
  out = {}
  for name, values in per_round.items():
    ratios = np.asarray(values, dtype=float) / base
    out[name] = {
      'median': float(np.median(values)),
      'ratio': float(np.median(ratios)),
      'ratio_quartiles': [float(q) for q in np.percentile(ratios, [25, 75])],
    }
  return out
