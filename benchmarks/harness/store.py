"""The trial cache: one JSON Lines file per study, one record per finished run.

A record is one training run (one trial of one cell) with everything its
report needs, so that a study renders from its cache alone, on any machine:

  {"schema": 4, "key": str, "config": {...}, "data": {"name": str,
   "sha256": str | null}, "facts": {...}, "rows": [...], "seconds": float,
   "provenance": {"machine": str, "versions": str, "command": str}}

``config`` is the example's configuration of the run (``trials`` left out:
a run is one trial, and ``seed`` is its own seed) without where things lie
(the dataset's path, TFDS's data_dir, the workdir): the data enters by its
name and a content hash instead, so a cache is found from any checkout and a
different copy of a dataset never hits it. ``key`` hashes the two.
``facts`` are what the report says about the data and the model (sizes,
counts), measured when the run trained.

Records of an older ``schema`` are migrated when read (:data:`MIGRATIONS`).
Two processes can share a cache: each run is claimed by a
lock file beside it, and records are appended under an exclusive ``flock``.
"""

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import fcntl
import hashlib
import json
import os
from typing import Any

SCHEMA = 4

# Fields of an example's configuration that never enter a run's key: where
# things lie (the data enters by its identity instead), and the number of
# trials (a run is one trial; its seed is its own).
UNKEYED_FIELDS = ('dataset', 'data_dir', 'download', 'workdir', 'trials')


def _methods_not_optimizers(record: dict) -> dict:
  """Schema 2 -> 3: the cifar example's ``optimizers`` field and its rows'
  ``optimizer`` became ``methods`` and ``method`` (the lm example's names)."""
  rename = lambda d, old, new: {new if k == old else k: v for k, v in d.items()}
  config = rename(record['config'], 'optimizers', 'methods')
  rows = [rename(r, 'optimizer', 'method') for r in record['rows']]
  return dict(record, config=config, rows=rows, key=run_key(config, record['data']), schema=3)


def _lm_dropout(record: dict) -> dict:
  """Schema 3 -> 4: the lm example's model took a ``dropout`` rate; the runs
  made before it had none (0). An lm configuration is the one with a
  ``context_length``."""
  config = record['config']
  if 'context_length' in config:
    config = dict(config, dropout=0.0)
  return dict(record, config=config, key=run_key(config, record['data']), schema=4)


# schema -> the function that lifts a record of that schema to the next one.
# Every renamed or added configuration field gets an entry here.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {2: _methods_not_optimizers, 3: _lm_dropout}


def run_config(config: dict[str, Any]) -> dict[str, Any]:
  """The part of an example's configuration that defines a run's result."""
  return {k: v for k, v in config.items() if k not in UNKEYED_FIELDS}


def run_key(config: dict[str, Any], data: dict[str, Any]) -> str:
  """16 hex digits naming one run: its configuration and its data."""
  text = json.dumps({'config': run_config(config), 'data': data}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str) -> str:
  """The SHA-256 of a file's bytes (hex)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def data_identity(dataset: str) -> dict[str, Any]:
  """How a dataset enters a key: a local file by its name and content hash,
  a TFDS dataset by its name (TFDS versions its builds)."""
  if os.path.isfile(dataset):
    return {'name': os.path.basename(dataset), 'sha256': file_sha256(dataset)[:16]}
  return {'name': dataset, 'sha256': None}


def migrate(record: dict) -> dict:
  """``record`` lifted to :data:`SCHEMA`."""
  schema = record.get('schema', 1)
  while schema < SCHEMA:
    if schema not in MIGRATIONS:
      raise ValueError(
        f'a cache record of schema {schema} has no migration to {SCHEMA}: '
        'it was not written by this harness'
      )
    record = MIGRATIONS[schema](record)
    schema = record['schema']
  if schema > SCHEMA:
    raise ValueError(f'a cache record has schema {schema}, newer than this harness ({SCHEMA})')
  return record


class TrialStore:
  """The records of one cache file, by key."""

  def __init__(self, path: str):
    self.path = path
    self.records: dict[str, dict] = {}
    self.reload()

  @contextlib.contextmanager
  def _locked(self, mode: str, lock: int) -> Iterator[Any]:
    with open(self.path, mode) as f:
      fcntl.flock(f, lock)
      try:
        yield f
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)

  def reload(self) -> None:
    """Reads the file again (another process may have appended)."""
    if not os.path.exists(self.path):
      return
    with self._locked('r', fcntl.LOCK_SH) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = migrate(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f'{self.path}, line {number}: not a JSON record ({e})') from e
        self.records[record['key']] = record

  def get(self, key: str) -> dict | None:
    return self.records.get(key)

  def add(self, record: dict) -> dict:
    """Appends a finished run (one line), keeps it and returns it as kept."""
    record = dict(record, schema=SCHEMA)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    line = json.dumps(record, sort_keys=True) + '\n'
    with self._locked('a', fcntl.LOCK_EX) as f:
      f.write(line)
    self.records[record['key']] = record
    return record

  def write_all(self, records: list[dict]) -> None:
    """Replaces the file by ``records`` in this order (imports, migrations)."""
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path + '.tmp', 'w') as f:
      for record in records:
        f.write(json.dumps(dict(record, schema=SCHEMA), sort_keys=True) + '\n')
    os.replace(self.path + '.tmp', self.path)
    self.records = {}
    self.reload()

  def lock_path(self, key: str) -> str:
    return os.path.join(self.path + '.locks', key + '.lock')


def claim(lock: str) -> bool:
  """Claims a run for this process (False if a live process holds it)."""
  os.makedirs(os.path.dirname(lock), exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        with open(lock) as f:
          os.kill(int(f.read() or 0), 0)  # raises if that process is gone
        return False
      except (ProcessLookupError, ValueError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
          os.remove(lock)  # left by a process that died: take it over
        continue
      except PermissionError:
        return False
    with os.fdopen(fd, 'w') as f:
      f.write(str(os.getpid()))
    return True
  return False


def release(lock: str) -> None:
  with contextlib.suppress(FileNotFoundError):
    os.remove(lock)
