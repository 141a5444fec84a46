"""Numbers quoted in prose are numbers of a results file.

The README, the evidence pages, the guides and the examples' READMEs quote
results in words: intervals (``[−0.025, −0.017]``), means with their spread
(``36.17 ± 1.26``) and losses to three or more decimals (``1.673``; not in
the guides, whose examples have inputs of that kind). Each
must be, at the precision it is quoted to, a value that a committed results
file (``benchmarks/results/*.json`` and ``*.md``, written from the caches)
holds: an interval one of its intervals, a mean ± std one of its means with
that std, a loss one of its values. A rerun that moves a number, or a number
typed by hand, fails here.
"""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
PROSE = sorted(
  [
    ROOT / 'README.md',
    *(ROOT / 'docs' / 'evidence').glob('*.md'),
    *(ROOT / 'examples').glob('*/README.md'),
  ]
)
# The guides show inputs of examples too (a magnitude of 1.001): only their
# intervals and means ± std are results.
GUIDES = sorted((ROOT / 'docs' / 'guides').glob('*.md'))

_NUMBER = r'[−+-]?\d+(?:\.\d+)?'
INTERVAL = re.compile(rf'\[\s*({_NUMBER}),\s*({_NUMBER})\s*\]')
MEAN_STD = re.compile(rf'({_NUMBER}) ± ({_NUMBER})')
# A value to three or more decimals, not part of a longer number, a version or a path.
LONG_VALUE = re.compile(r'(?<![\w.\-−/:])[−+-]?\d+\.\d{3,}(?![\w.]*\d)(?!x)')


def _float(text: str) -> float:
  return float(text.replace('−', '-'))


def _decimals(text: str) -> int:
  return len(text.split('.')[1]) if '.' in text else 0


def _quoted_as(value: float, text: str) -> bool:
  """Whether ``value`` rounds to the number written as ``text``."""
  return abs(value - _float(text)) <= 0.5 * 10 ** -_decimals(text) + 1e-9


class _Results:
  """Every interval, mean ± std and value in the committed results files."""

  def __init__(self):
    self.intervals: list[tuple[float, float]] = []
    self.mean_stds: list[tuple[float, float]] = []
    self.values: list[float] = []
    for path in sorted(RESULTS.glob('*.json')):
      self._walk(json.loads(path.read_text(encoding='utf-8')))
    for path in sorted(RESULTS.glob('*.md')):
      text = path.read_text(encoding='utf-8')
      self.intervals += [(_float(a), _float(b)) for a, b in INTERVAL.findall(text)]
      self.mean_stds += [(_float(a), _float(b)) for a, b in MEAN_STD.findall(text)]
      self.values += [_float(n) for n in re.findall(_NUMBER, text)]

  def _walk(self, node) -> None:
    if isinstance(node, dict):
      for value in node.values():
        self._walk(value)
    elif isinstance(node, list):
      if len(node) == 2 and all(isinstance(v, float) for v in node):
        self.intervals.append((node[0], node[1]))
      for value in node:
        self._walk(value)
    elif isinstance(node, float):
      self.values.append(node)


@pytest.fixture(scope='module')
def results():
  return _Results()


def _quotes(path: pathlib.Path, values: bool = True) -> list[tuple[str, str]]:
  """(kind, the quoted text) of every number the rule covers in ``path``
  (``values``: losses to three or more decimals too)."""
  text = path.read_text(encoding='utf-8')
  text = re.sub(r'```.*?```', '', text, flags=re.DOTALL)  # code, not prose
  text = re.sub(r'`[^`\n]*`', '', text)
  quotes = [('interval', m.group(0)) for m in INTERVAL.finditer(text)]
  quotes += [('mean ± std', m.group(0)) for m in MEAN_STD.finditer(text)]
  rest = MEAN_STD.sub('', INTERVAL.sub('', text))
  if values:
    quotes += [('value', m.group(0)) for m in LONG_VALUE.finditer(rest)]
  return quotes


def _found(kind: str, quote: str, results: _Results) -> bool:
  if kind == 'interval':
    lo, hi = INTERVAL.fullmatch(quote).groups()
    return any(_quoted_as(a, lo) and _quoted_as(b, hi) for a, b in results.intervals)
  if kind == 'mean ± std':
    mean, std = MEAN_STD.fullmatch(quote).groups()
    return any(_quoted_as(a, mean) and _quoted_as(b, std) for a, b in results.mean_stds)
  # A loss quoted as a difference in words ("0.021 below AdamW") drops its sign.
  return any(_quoted_as(abs(v), quote.lstrip('+-−')) for v in results.values)


@pytest.mark.parametrize('path', PROSE + GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_number_quoted_in_prose_is_a_result(path, results):
  quotes = _quotes(path, values=path not in GUIDES)
  missing = [f'{kind} {quote}' for kind, quote in quotes if not _found(kind, quote, results)]
  assert not missing, f'{path.relative_to(ROOT)} quotes numbers no results file holds: {missing}'


def test_the_rule_catches_a_number_typed_by_hand(tmp_path, results):
  page = tmp_path / 'page.md'
  page.write_text(
    'SBS lam = 0 is 0.021 below AdamW ([−0.025, −0.017], 5/5), test loss 1.673.\n'
    'Typed by hand: [−0.026, −0.017], 1.6734 and 1.5331 ± 0.0041.\n',
    encoding='utf-8',
  )
  found = {quote: _found(kind, quote, results) for kind, quote in _quotes(page)}
  assert found == {
    '[−0.025, −0.017]': True,
    '[−0.026, −0.017]': False,
    '1.5331 ± 0.0041': False,
    '0.021': True,
    '1.673': True,
    '1.6734': False,
  }
