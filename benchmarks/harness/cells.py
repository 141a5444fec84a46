"""A study's cells: what each row of its tables trains.

A cell is a method of the study's example with the options it changes
(:class:`Cell`); the runner trains or finds its runs
(:meth:`harness.runner.Runner.runs`), so no analysis keeps its own cache or
its own "not run yet".
"""

from collections.abc import Iterable
from collections.abc import Mapping
import dataclasses
import json
import types
from typing import Any


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of a study.

  Attributes:
    name: its name: a table's row label, a JSON cell's name, what
      ``--cells`` matches.
    method: the example's method (``sgd``, ``sbs``, ``adamw``, ...).
    options: the example's fields it changes (a mapping, or pairs: a later
      pair wins), over the fields its study gives every cell.
    table: where a study of several tables places it.
    kind: what the JSON results call its method, where that is not
      ``method`` (AdamW with dropout in the model is of kind ``dropout``).
  """

  name: str
  method: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  table: str = ''
  kind: str = ''

  def __post_init__(self):
    pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
    object.__setattr__(self, 'options', types.MappingProxyType(dict(pairs)))
    if not self.kind:
      object.__setattr__(self, 'kind', self.method)

  def __hash__(self) -> int:
    options = json.dumps(dict(self.options), sort_keys=True, default=str)
    return hash((self.name, self.method, options, self.table, self.kind))

  def with_options(
    self, name: str, options: Mapping[str, Any] | None = None, **more: Any
  ) -> 'Cell':
    """This cell named ``name``, with more (or other) options."""
    return dataclasses.replace(self, name=name, options={**self.options, **(options or {}), **more})


def by_name(cells: Iterable[Cell]) -> dict[str, Cell]:
  """``{cell.name: cell}``; a name given twice is an error."""
  out: dict[str, Cell] = {}
  for cell in cells:
    if cell.name in out:
      raise ValueError(f'two cells are named {cell.name!r}')
    out[cell.name] = cell
  return out
