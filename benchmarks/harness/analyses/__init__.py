"""The analyses: how a study's cached runs become its tables, JSON and figures.

Each analysis module has ``report(runner) -> Report``; a study names its
analysis and supplies the data it reads (cells, scales, notes).
"""

import dataclasses
from typing import Any


@dataclasses.dataclass
class Report:
  """A rendered study: markdown lines, an optional JSON payload and figures
  (``{file suffix: function(path)}``, drawn beside the markdown)."""

  lines: list[str]
  payload: Any = None
  indent: int = 1
  figures: dict[str, Any] = dataclasses.field(default_factory=dict)

  def add_curves(self, stem: str, caption: str, draw: Any) -> 'Report':
    """Adds the figure ``<stem>_curves.png``, drawn by ``draw(path)``, and a
    last line naming it after ``caption``."""
    self.figures['_curves.png'] = draw
    self.lines.append(f'{caption}: `{stem}_curves.png`.')
    return self
