"""What every comparison script here shares: a per-trial cache and paired statistics.

A cell (one configuration of a training program) runs its trials one at a
time; trial ``t`` runs alone as ``trials=1, seed=seed+t`` (the programs
derive everything of a trial from ``seed + trial``, so it is the same run)
and is cached as JSON as soon as it finishes, so a stopped benchmark loses at
most one trial and a rerun resumes. Two processes can share a cache: each
trial is claimed by a lock file. The cache key leaves out where the data and
the cache lie, so a cache committed from one checkout is found from another.

This module imports no example program: the scripts of both examples use it.
"""

from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import numpy as np
from scipy import stats


def config_key(
  config: Any,
  ignore: tuple[str, ...] = ('workdir', 'data_dir'),
  added_fields: dict[str, Any] | None = None,
) -> str:
  """The cache key of a configuration dataclass.

  Args:
    config: the configuration.
    ignore: fields that do not enter the key (where things lie).
    added_fields: fields added after trials were cached, with their
      defaults: at the default they stay out of the key, so the cached
      trials remain valid.

  Returns:
    16 hex digits; the dataset enters by file name.
  """
  fields = dataclasses.asdict(config)
  for name in ignore:
    fields.pop(name)
  for name, default in (added_fields or {}).items():
    if fields[name] == default:
      fields.pop(name)
  fields['dataset'] = os.path.basename(config.dataset)
  text = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _claim(lock: str) -> bool:
  """Claims a trial for this process (False if a live process holds it)."""
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
        try:
          os.remove(lock)  # left by a process that died: take it over
        except FileNotFoundError:
          pass
        continue
      except PermissionError:
        return False
    with os.fdopen(fd, 'w') as f:
      f.write(str(os.getpid()))
    return True
  return False


def run_trials(
  config: Any,
  key: str,
  train_one: Callable[[Any], list[dict]],
  workdir: str,
  train: bool = True,
) -> tuple[list[dict], float]:
  """Rows of every finished trial of one cell, and their training seconds.

  Args:
    config: the cell's configuration (a dataclass with ``trials`` and
      ``seed``).
    key: its cache key (:func:`config_key`).
    train_one: trains ``dataclasses.replace(config, trials=1, seed=...)``
      and returns its rows.
    workdir: the cache folder.
    train: False: only the cached trials, train nothing.

  Returns:
    The rows (with ``trial`` set) and the seconds their training took. A
    trial that another live process is training is left out.
  """
  rows, seconds = [], 0.0
  for trial in range(config.trials):
    path = os.path.join(workdir, f'{key}_trial{trial}.json')
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
    elif not train or not _claim(path + '.lock'):
      continue
    else:
      single = dataclasses.replace(config, trials=1, seed=config.seed + trial)
      start = time.perf_counter()
      trial_rows = [dict(r, trial=trial) for r in train_one(single)]
      cached = {
        'config': dataclasses.asdict(config),
        'trial': trial,
        'rows': trial_rows,
        'seconds': time.perf_counter() - start,
      }
      os.makedirs(workdir, exist_ok=True)
      with open(path + '.tmp', 'w') as f:
        json.dump(cached, f)
      os.replace(path + '.tmp', path)
      os.remove(path + '.lock')
    rows += cached['rows']
    seconds += cached['seconds']
  return rows, seconds


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
