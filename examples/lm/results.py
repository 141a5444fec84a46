"""A run's results: the summary over trials, and its files (JSON and CSV of
every evaluation, summary markdown, curves PNG)."""

import csv
import dataclasses
import json
import os

import numpy as np


def final_rows(rows: list[dict], method: str) -> list[dict]:
  """The last row of every trial of ``method``, by trial."""
  last: dict[int, dict] = {}
  for r in rows:
    if r['method'] == method and r['step'] >= last.get(r['trial'], {'step': -1})['step']:
      last[r['trial']] = r
  return [last[t] for t in sorted(last)]


def summarize(rows: list[dict]) -> dict[str, dict]:
  """Per method: final validation (and test) loss per trial, mean and std over
  trials; against 'adamw' (when both ran), the paired differences."""
  summary = {}
  for method in dict.fromkeys(r['method'] for r in rows):
    last = final_rows(rows, method)
    val = [r['val_loss'] for r in last]
    test = [r['test_loss'] for r in last if 'test_loss' in r]
    summary[method] = dict(
      trials=len(val),
      val_loss_mean=float(np.mean(val)),
      val_loss_std=float(np.std(val, ddof=1)) if len(val) > 1 else 0.0,
      per_trial_val_loss=val,
      test_loss_mean=float(np.mean(test)) if test else None,
      tokens_per_sec=float(np.mean([r['tokens_per_sec'] for r in rows if r['method'] == method])),
    )
  if 'adamw' in summary:
    base = np.asarray(summary['adamw']['per_trial_val_loss'])
    for method, s in summary.items():
      values = np.asarray(s['per_trial_val_loss'])
      if method == 'adamw' or len(values) != len(base):
        continue
      diff = values - base
      s['vs_adamw'] = dict(diff=float(diff.mean()), wins=int(np.sum(diff < 0)), trials=len(diff))
  return summary


def paired_difference(a, b) -> tuple[float, float, float, int]:
  """Mean of ``a - b`` (paired by trial), its 95% t confidence interval, and
  in how many trials ``a`` is lower (for losses: better).

  One trial has no interval (nan, nan); differences without spread give the
  point as the interval (scipy would warn and return nan).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  d = a - b
  mean, wins = float(d.mean()), int(np.sum(d < 0))
  if len(d) < 2:
    return mean, float('nan'), float('nan'), wins
  if np.all(d == d[0]):
    return mean, mean, mean, wins
  from scipy import stats  # pylint: disable=g-import-not-at-top

  interval = stats.ttest_rel(a, b).confidence_interval(0.95)
  return mean, float(interval.low), float(interval.high), wins


def _mean_std(mean: float, std: float, trials: int) -> str:
  """``mean ± std``; the mean alone for one trial (no spread to show)."""
  return f'{mean:.4f} ± {std:.4f}' if trials > 1 else f'{mean:.4f}'


def summary_markdown(summary: dict, config) -> str:
  trials = summary[next(iter(summary))]['trials']
  lines = [
    f'Final validation loss (nats per character), {config.num_layers}-layer transformer '
    f'(width {config.embed_dim}, {config.num_heads} heads, context {config.context_length}) '
    f'on {os.path.basename(config.dataset)}, {config.steps} steps of batch {config.batch_size}, '
    f'peak learning rate {config.learning_rate:g}, {trials} trial(s): mean ± std over trials.',
    '',
    '| method | val loss | test loss | per trial (val) | tokens/s |',
    '|---|---|---|---|---|',
  ]
  for method, s in summary.items():
    test = '' if s['test_loss_mean'] is None else f'{s["test_loss_mean"]:.4f}'
    lines.append(
      f'| {method} | {_mean_std(s["val_loss_mean"], s["val_loss_std"], s["trials"])} | {test} | '
      + ', '.join(f'{v:.4f}' for v in s['per_trial_val_loss'])
      + f' | {s["tokens_per_sec"]:.0f} |'
    )
  if 'adamw' in summary:
    base = summary['adamw']['per_trial_val_loss']
    for method, s in summary.items():
      if 'vs_adamw' not in s:
        continue
      mean, lo, hi, wins = paired_difference(s['per_trial_val_loss'], base)
      interval = '' if np.isnan(lo) else f', 95% CI [{lo:+.4f}, {hi:+.4f}]'
      lines += [
        '',
        f'{method} − adamw (paired by trial): {mean:+.4f} nats/char{interval};'
        f' {method} lower in {wins} of {len(base)} trials.',
      ]
  return '\n'.join(lines) + '\n'


def curves(rows: list[dict], method: str, key: str = 'val_loss') -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)``: ``key`` against step, one row per trial of ``method``."""
  trials = sorted({r['trial'] for r in rows if r['method'] == method})
  per_trial = [
    sorted((r for r in rows if r['method'] == method and r['trial'] == t), key=lambda r: r['step'])
    for t in trials
  ]
  steps = np.asarray([r['step'] for r in per_trial[0]])
  return steps, np.asarray([[r[key] for r in rs] for rs in per_trial])


def plot_curves(
  lines: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = ''
) -> None:
  """Validation loss against step, ``{label: (steps, values per trial)}``:
  the mean over trials, ± std shaded."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (steps, values) in lines.items():
    mean, std = values.mean(0), values.std(0)
    ax.plot(steps, mean, label=f'{label} ({len(values)} trials)')
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel('step')
  ax.set_ylabel('validation loss (nats/char)')
  if title:
    ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write(workdir: str, config, rows: list[dict], summary: dict) -> dict:
  """Writes config.json, history.json, history.csv, summary.md, curves.png."""
  os.makedirs(workdir, exist_ok=True)
  paths = {
    name: os.path.join(workdir, name)
    for name in ('config.json', 'history.json', 'history.csv', 'summary.md', 'curves.png')
  }
  with open(paths['config.json'], 'w') as f:
    json.dump(dataclasses.asdict(config), f, indent=2)
  with open(paths['history.json'], 'w') as f:
    json.dump({'rows': rows, 'summary': summary}, f, indent=2)
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(paths['history.csv'], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  with open(paths['summary.md'], 'w') as f:
    f.write(summary_markdown(summary, config))
  plot_curves({m: curves(rows, m) for m in summary}, paths['curves.png'])
  return paths
