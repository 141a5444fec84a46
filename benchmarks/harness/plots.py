"""The figures of the analyses (matplotlib, drawn off-screen)."""

import numpy as np


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
