"""The grid: a study's runs, trained trial by trial or read from its cache.

A study (a module of ``benchmarks/studies``) names its example, its analysis
(a module of :mod:`harness.analyses`), its scales and its cells. The analysis
asks a :class:`Runner` for the rows of a cell (``runner.rows(config)``): each
trial ``t`` of the cell is the run ``config`` with ``seed = config.seed + t``,
found in the cache by its key or, unless ``--cached-only``, trained and
cached as soon as it finishes, so a stopped study loses at most one run and
a rerun resumes.
"""

import dataclasses
import importlib
import os
import re
import shlex
import time
from types import ModuleType
from typing import Any

from harness import cells as cells_lib
from harness import examples
from harness import report
from harness import store as store_lib

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(BENCHMARKS, 'results')
STUDIES = os.path.join(BENCHMARKS, 'studies')


def study_names() -> list[str]:
  """Every study under ``benchmarks/studies``."""
  return sorted(
    name[:-3]
    for name in os.listdir(STUDIES)
    if name.endswith('.py') and not name.startswith('_') and not name.endswith('_test.py')
  )


class Study:
  """A study module; what it leaves out comes from the study it names as
  ``BASE`` (a variant: another output of the same cells, or other scales)."""

  def __init__(self, module: ModuleType, base: 'Study | None' = None):
    self.module, self.base = module, base
    self.__doc__ = module.__doc__

  def __getattr__(self, name: str) -> Any:
    if hasattr(self.module, name):
      return getattr(self.module, name)
    if self.base is not None:
      return getattr(self.base, name)
    raise AttributeError(f'study {self.module.__name__} has no {name}')


def load_study(name: str) -> Study:
  if name not in study_names():
    raise ValueError(f'no study {name!r}; the studies: {", ".join(study_names())}')
  module = importlib.import_module(f'studies.{name}')
  base = getattr(module, 'BASE', None)
  return Study(module, load_study(base) if base else None)


def summary(study: Study) -> str:
  """The first line of a study's docstring."""
  return (study.__doc__ or '').strip().splitlines()[0]


@dataclasses.dataclass
class Options:
  """What the command line chose."""

  study: str
  scale: str
  dataset: str | None = None
  data_dir: str | None = None
  cells: str | None = None
  cached_only: bool = False
  workdir: str | None = None
  out: str | None = None
  local_data: str | None = None
  start_no_run_after: float | None = None  # seconds since the epoch


class Runner:
  """The runs of one study at one scale: cache, data, training, provenance."""

  def __init__(self, study: Study, options: Options):
    self.study, self.options = study, options
    if options.scale not in study.SCALES:
      raise ValueError(
        f'study {options.study} has no scale {options.scale!r}; its scales: '
        f'{", ".join(study.SCALES)}'
      )
    self.scale = study.SCALES[options.scale]
    self.example = examples.EXAMPLES[study.EXAMPLE]
    self.cells_pattern = None
    if options.cells:
      try:
        self.cells_pattern = re.compile(options.cells)
      except re.error as e:
        raise ValueError(f'--cells is not a regular expression: {e}') from e
    cache = study.CACHE.format(scale=options.scale)
    workdir = options.workdir or os.path.join(RESULTS, 'trials')
    self.store = store_lib.TrialStore(os.path.join(workdir, cache + '.jsonl'))
    stem = study.OUTPUT.format(scale=options.scale)
    self.out = options.out or os.path.join(RESULTS, stem + '.md')
    # The data: a file given on the command line enters by its content
    # hash; without one, the data the scale's results were made with.
    self._data = None
    if options.dataset:
      self.dataset = options.dataset
      self.data_id = store_lib.data_identity(options.dataset)
    else:
      self.dataset = self.scale.get('dataset', study.DATASET)
      self.data_id = dict(self.scale.get('data') or store_lib.data_identity(self.dataset))
      if options.local_data and self.data_id.get('sha256'):
        self.dataset = os.path.join(options.local_data, self.data_id['name'])
    self.used: dict[str, dict] = {}  # key -> record behind the report, in order
    self.requested: set[str] = set()  # the key of every run asked for, cached or not
    self._rows: dict[tuple[str, int], list[dict]] = {}  # finished cells' rows
    self.missing: dict[str, int] = {}  # cell label -> finished trials
    # Runs this pass trained, found claimed by another process, or left
    # unstarted (past --start-no-run-after).
    self.trained = self.held_elsewhere = self.deferred = 0
    self.started = time.perf_counter()
    if options.dataset:
      self.data()  # a dataset named on the command line must load, to train or not

  # The grid.

  def wanted(self, label: str) -> bool:
    """Whether ``--cells`` keeps the cell named ``label``."""
    return self.cells_pattern is None or bool(self.cells_pattern.search(label))

  def data(self) -> Any:
    """The example's dataset (loaded on first use: only to train)."""
    if self._data is None:
      # A dataset named on the command line was hashed into data_id already.
      if not self.options.dataset and store_lib.data_identity(self.dataset) != self.data_id:
        sha = self.data_id.get('sha256')
        raise ValueError(
          f'the runs of scale {self.options.scale} used {self.data_id["name"]}'
          + (f' (sha256 {sha}...)' if sha else '')
          + ': pass that copy as --dataset (or its folder as --local-data) to train what the '
          'cache lacks, or name other data with --dataset (its runs are cached apart)'
        )
      self._data = self.example.load(self.dataset, self.options.data_dir, self.scale)
    return self._data

  def config(self, **fields: Any) -> dict[str, Any]:
    """The example's full configuration with ``fields`` changed (a dict)."""
    return self.example.config(**fields)

  def runs(
    self, cell: cells_lib.Cell, trials: int, label: str = '', **fields: Any
  ) -> list[dict] | None:
    """The rows of ``trials`` trials of ``cell`` (see :meth:`rows`): its
    method and options over the example's ``fields`` (``seed`` among them);
    ``label`` names it in progress lines and in :meth:`waiting` (default: the
    cell's name). Asked again, the same rows are returned, not fetched again."""
    return self.rows(self.cell_config(cell, **fields), trials, label or cell.name)

  def cell_config(self, cell: cells_lib.Cell, **fields: Any) -> dict[str, Any]:
    """The example's configuration of ``cell``: its method and options over
    ``fields``."""
    return self.config(method=cell.method, **{**fields, **cell.options})

  def cached(self, label: str) -> int:
    """The trials cached of the unfinished cell ``label``."""
    return self.missing.get(label, 0)

  def waiting(self, label: str, trials: int) -> str:
    """What the unfinished cell ``label`` has: ``'k/n trials cached'``."""
    return f'{self.cached(label)}/{trials} trials cached'

  def rows(self, config: dict[str, Any], trials: int, label: str = '') -> list[dict] | None:
    """The rows of ``trials`` trials of ``config`` (each tagged with
    ``trial``), or None while some are not cached (then counted in
    :attr:`missing`)."""
    memo = (store_lib.run_key(config, self.data_id), trials)
    if memo in self._rows:
      return self._rows[memo]
    rows, records = [], []
    for trial in range(trials):
      run = dict(config, seed=config['seed'] + trial)
      key = store_lib.run_key(run, self.data_id)
      self.requested.add(key)
      record = self.store.get(key)
      if record is None and not self.options.cached_only:
        record = self._train(key, run, label, trial)
      if record is None:
        continue
      records.append(record)
      rows += [dict(r, trial=trial) for r in record['rows']]
    if len(records) < trials:
      self.missing[label] = len(records)
      return None
    for record in records:
      self.used.setdefault(record['key'], record)
    self._rows[memo] = rows
    return rows

  def _train(self, key: str, run: dict, label: str, trial: int) -> dict | None:
    if (
      self.options.start_no_run_after is not None and time.time() > self.options.start_no_run_after
    ):
      self.deferred += 1
      return None
    lock = self.store.lock_path(key)
    if not store_lib.claim(lock):
      self.held_elsewhere += 1
      return None  # another process trains it
    try:
      self.store.reload()
      if self.store.get(key) is not None:
        return self.store.get(key)
      print(f'[{time.perf_counter() - self.started:7.0f}s] {label} trial {trial}', flush=True)
      data = self.data()
      start = time.perf_counter()
      rows = self.example.train(run, data, self.dataset, self.options.data_dir)
      record = {
        'key': key,
        'config': store_lib.run_config(run),
        'data': self.data_id,
        'facts': self.example.facts(run, data),
        'rows': rows,
        'seconds': time.perf_counter() - start,
        'provenance': dict(report.this_machine(*self.example.packages), command=self.command()),
      }
      self.trained += 1
      return self.store.add(record)
    finally:
      store_lib.release(lock)

  # What the report says about the runs.

  def stem(self) -> str:
    """The report's file name without ``.md``."""
    return os.path.splitext(os.path.basename(self.out))[0]

  def facts(self) -> dict[str, Any]:
    """The facts of the runs behind the report (of the first of them)."""
    return next(iter(self.used.values()))['facts'] if self.used else {}

  def seconds(self) -> float:
    return sum(r['seconds'] for r in self.used.values())

  def provenance_lines(self, runs: str = 'cells') -> list[str]:
    """Where the runs behind the report trained, and how long they took
    (``runs``: what the report calls its cells)."""
    hours = self.seconds() / 3600
    return [
      *report.provenance_lines([r['provenance'] for r in self.used.values()]),
      f'- training time of all {runs} (sum over their cached trials): {hours:.2f} h',
    ]

  def command(self) -> str:
    """The command that trains what the cache lacks and writes this report."""
    words = ['python', 'benchmarks/run.py', self.options.study]
    if self.options.scale != self.study.DEFAULT_SCALE:
      words += ['--scale', self.options.scale]
    if self.data_id.get('sha256'):
      words += ['--dataset', f'PATH/{self.data_id["name"]}']
    if self.options.cells:
      words += ['--cells', self.options.cells]
    return shlex.join(words)

  def data_label(self) -> str:
    """The data behind the report: its name, and a local copy's content hash."""
    sha = self.data_id.get('sha256')
    return f'`{self.data_id["name"]}`' + (f' (sha256 {sha}...)' if sha else '')

  def command_line(self) -> str:
    """The report's command item."""
    text = f'- command: `{self.command()}`'
    if self.data_id.get('sha256'):
      text += ' (PATH: where your copy of the data below lies)'
    return text + '; `--cached-only` writes this file from the cache alone'
