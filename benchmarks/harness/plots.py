"""The figures of the analyses (matplotlib, drawn off-screen)."""

from typing import Any

import numpy as np

from harness import examples


def _pyplot():
  import matplotlib  # noqa: PLC0415

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415

  return plt


def epoch_panels(panels: dict[str, dict[str, tuple[np.ndarray, tuple | None]]], path: str) -> None:
  """Test accuracy by epoch, one panel per entry: ``{label: (curve, group)}``.
  Lines of one group (e.g. one data fraction and batch size) share a colour
  and take the line styles in turn; lines without a group get the default
  colours."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  styles = ('-', '--', ':', '-.', (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
  for ax, (title, lines) in zip(axes[0], panels.items()):
    seen: dict[tuple, int] = {}  # group -> lines of it drawn so far
    for label, (curve, group) in lines.items():
      style = {}
      if group is not None:
        seen[group] = seen.get(group, -1) + 1
        style = dict(
          color=f'C{list(seen).index(group) % 10}', linestyle=styles[seen[group] % len(styles)]
        )
      ax.plot(np.arange(1, len(curve) + 1), curve, label=label, **style)
    ax.set_title(title)
    ax.set_xlabel('epoch')
    ax.set_ylabel('test accuracy (%), mean over trials')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def train_and_test(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str) -> None:
  """Train (dashed) and test (solid) accuracy per cell, one colour each."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(10, 5))
  for i, (label, (train, test)) in enumerate(curves.items()):
    epochs = np.arange(1, len(test) + 1)
    ax.plot(epochs, test, color=f'C{i % 10}', label=label)
    ax.plot(epochs, train, color=f'C{i % 10}', linestyle='--', linewidth=0.8)
  ax.set_xlabel('epoch')
  ax.set_ylabel('accuracy (%), mean over trials: test solid, train dashed')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='center right')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def difference_over_steps(
  difference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
  gaps: dict[str, tuple[np.ndarray, np.ndarray]],
  path: str,
  label: str,
  title: str = '',
) -> None:
  """Two panels against step: a paired difference ``(steps, mean, low,
  high)`` with its 95% interval shaded, every step before the last marked as
  mid-schedule; and the train/validation gap ``{cell: (steps, gap per
  trial)}``, the mean over trials."""
  plt = _pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  steps, mean, low, high = difference
  left.plot(steps, mean, color='C0', marker='.', label=label)
  left.fill_between(steps, low, high, color='C0', alpha=0.2, label='95% interval')
  left.axhline(0.0, color='k', linewidth=0.8)
  left.axvspan(steps[0], steps[-1], color='0.9', zorder=0)
  left.annotate(
    'mid-schedule: the rate has not decayed yet',
    xy=(0.02, 0.97),
    xycoords='axes fraction',
    va='top',
    fontsize=8,
  )
  left.plot(steps[-1:], mean[-1:], color='C3', marker='o', linestyle='', label='end of the run')
  left.set_xlabel('step')
  left.set_ylabel('paired difference of validation loss (nats/char)')
  left.grid(alpha=0.3)
  left.legend(fontsize=8, loc='lower right')
  for i, (cell, (gap_steps, gap)) in enumerate(gaps.items()):
    right.plot(gap_steps, gap.mean(0), color=f'C{i % 10}', label=cell)
  right.set_xlabel('step')
  right.set_title('train/validation gap, mean over trials', fontsize=9)
  right.set_ylabel('validation - train loss (nats/char)')
  right.grid(alpha=0.3)
  right.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def add_loss_curves(result: Any, runner: Any, curves: dict, caption: str, title: str) -> Any:
  """``result`` (a :class:`harness.analyses.Report`) with the validation
  curves ``{label: (steps, values per trial)}`` drawn by the lm example's own
  plot (if there are any)."""
  if curves:
    title = f'{title}, scale {runner.options.scale}'
    plot = examples.light_module('lm', 'results.py').plot_curves
    result.add_curves(runner.stem(), caption, lambda path: plot(curves, path, title=title))
  return result
