"""A run's results: the summary over trials, and its files (JSON and CSV of
every epoch, summary markdown, curves PNG)."""

import csv
import dataclasses
import json
import math
import os

import numpy as np


def summarize(rows: list[dict], epochs: int) -> dict[str, dict]:
  """Per method: mean over trials (± std) of the mean validation accuracy
  over the last 10% of epochs, and of the maximum over epochs."""
  last = max(1, math.ceil(0.1 * epochs))
  summary = {}
  for method in dict.fromkeys(r['method'] for r in rows):
    per_trial_last, per_trial_max = [], []
    for trial in sorted({r['trial'] for r in rows if r['method'] == method}):
      accs = [
        r['val_accuracy']
        for r in sorted(
          (r for r in rows if r['method'] == method and r['trial'] == trial),
          key=lambda r: r['epoch'],
        )
      ]
      per_trial_last.append(float(np.mean(accs[-last:])))
      per_trial_max.append(float(np.max(accs)))
    summary[method] = dict(
      trials=len(per_trial_last),
      last_epochs=last,
      last_mean=float(np.mean(per_trial_last)),
      last_std=float(np.std(per_trial_last, ddof=1)) if len(per_trial_last) > 1 else 0.0,
      max_mean=float(np.mean(per_trial_max)),
      max_std=float(np.std(per_trial_max, ddof=1)) if len(per_trial_max) > 1 else 0.0,
      per_trial_last=per_trial_last,
    )
  return summary


def _mean_std(mean: float, std: float, trials: int) -> str:
  """``mean ± std``; the mean alone for one trial (no spread to show)."""
  return f'{mean:.2f} ± {std:.2f}' if trials > 1 else f'{mean:.2f}'


def summary_markdown(summary: dict, config) -> str:
  """The summary table (markdown), with each method's paired difference to SGD."""
  lines = [
    f'Validation accuracy (%), {config.model} on {os.path.basename(config.dataset)}'
    f' (train fraction {config.train_fraction}), {config.epochs} epochs, batch'
    f' {config.batch_size}, {summary[next(iter(summary))]["trials"]} trials:'
    ' mean ± std over trials of the mean over the last'
    f' {summary[next(iter(summary))]["last_epochs"]} epoch(s) (last 10%) and of'
    ' the maximum over epochs.'
    + (f' SBS under momentum: {config.sbs_momentum}.' if 'sbs' in summary else ''),
    '',
    '| method | last 10% | max | per trial (last 10%) |',
    '|---|---|---|---|',
  ]
  for method, s in summary.items():
    lines.append(
      f'| {method} | {_mean_std(s["last_mean"], s["last_std"], s["trials"])} | '
      f'{_mean_std(s["max_mean"], s["max_std"], s["trials"])} | '
      + ', '.join(f'{a:.2f}' for a in s['per_trial_last'])
      + ' |'
    )
  if 'sgd' in summary and len(summary) > 1:
    base = np.asarray(summary['sgd']['per_trial_last'])
    for method, s in summary.items():
      if method == 'sgd':
        continue
      diff = np.asarray(s['per_trial_last']) - base
      wins = int(np.sum(diff > 0))
      lines += [
        '',
        f'{method} − sgd (paired by trial): {diff.mean():+.2f} points;'
        f' {method} better in {wins} of {len(diff)} trials.',
      ]
  return '\n'.join(lines) + '\n'


def plot_curves(rows: list[dict], path: str) -> None:
  """Validation accuracy vs epoch per method (mean over trials ± std)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 4))
  for method in dict.fromkeys(r['method'] for r in rows):
    trials = sorted({r['trial'] for r in rows if r['method'] == method})
    curves = np.array(
      [
        [
          r['val_accuracy']
          for r in sorted(
            (r for r in rows if r['method'] == method and r['trial'] == t), key=lambda r: r['epoch']
          )
        ]
        for t in trials
      ]
    )
    epochs = np.arange(1, curves.shape[1] + 1)
    mean, std = curves.mean(0), curves.std(0)
    ax.plot(epochs, mean, label=f'{method} ({len(trials)} trials)')
    ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel('epoch')
  ax.set_ylabel('validation accuracy (%)')
  ax.grid(alpha=0.3)
  ax.legend()
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
  plot_curves(rows, paths['curves.png'])
  return paths
