"""Imports the per-trial JSON files of the scripts this harness replaced.

Those files (``<key>_trial<t>.json``: the cell's configuration with its
first seed and number of trials, the trial index, its rows and seconds) hold
neither the data's identity (only a path, and a key that took the file's
basename) nor where they ran. An import therefore states both: the data the
cache was made with (a local copy, which is hashed) and, per record, the
provenance and facts its results file reported. The configuration is lifted
to the example's current fields: :data:`ADDED` (fields added after the runs,
at the value they ran with) and :data:`RENAMED` (old name -> new name).
"""

from collections.abc import Callable
import glob
import json
import os
import re
from typing import Any

from harness import store as store_lib

# Per example: fields added after the old caches were written, and the value
# the cached runs had (the defaults they ran at).
ADDED: dict[str, dict[str, Any]] = {
  'cifar': {'global_normalization': 'std'},
  'lm': {'accumulate_steps': 2, 'scan_layers': False},
}
# Per example: configuration fields and row fields renamed since.
RENAMED: dict[str, dict[str, str]] = {'cifar': {'optimizers': 'methods'}, 'lm': {}}
RENAMED_ROWS: dict[str, dict[str, str]] = {'cifar': {'optimizer': 'method'}, 'lm': {}}

_NAME = re.compile(r'^([0-9a-f]{16})_trial(\d+)\.json$')


def lift(example: str, legacy: dict, fields: list[str]) -> tuple[dict, list[dict]]:
  """The run's configuration (current field names, its own seed) and rows of
  one legacy trial file; ``fields`` are the example's current fields."""
  config = {RENAMED[example].get(k, k): v for k, v in legacy['config'].items()}
  for name, value in ADDED[example].items():
    config.setdefault(name, value)
  config['seed'] = legacy['config']['seed'] + legacy['trial']
  unknown = sorted(set(config) - set(fields))
  missing = sorted(set(fields) - set(config))
  if unknown or missing:
    raise ValueError(
      f'a legacy {example} trial does not match the example: fields unknown {unknown}, '
      f'missing {missing} (add them to harness.legacy.RENAMED or ADDED)'
    )
  rows = [
    {RENAMED_ROWS[example].get(k, k): v for k, v in r.items() if k != 'trial'}
    for r in legacy['rows']
  ]
  return store_lib.run_config(config), rows


def import_folder(
  folder: str,
  example: str,
  fields: list[str],
  dataset: str,
  describe: Callable[[dict], tuple[dict, dict]],
) -> list[dict]:
  """Records of every legacy trial file in ``folder`` (sorted by name).

  Args:
    folder: the legacy cache folder.
    example: 'cifar' or 'lm'.
    fields: the example's current configuration fields.
    dataset: the local data file the trials were made with (its basename
      must match the one the trials name).
    describe: ``(facts, provenance)`` of a record (its ``config``).

  Returns:
    The records, ready for :meth:`harness.store.TrialStore.write_all`.
  """
  data = store_lib.data_identity(dataset)
  records = []
  for path in sorted(glob.glob(os.path.join(folder, '*.json'))):
    if not _NAME.match(os.path.basename(path)):
      raise ValueError(f'{path}: not a legacy trial file (<key>_trial<t>.json)')
    with open(path) as f:
      legacy = json.load(f)
    if os.path.basename(legacy['config']['dataset']) != data['name']:
      raise ValueError(f'{path} was made with {legacy["config"]["dataset"]}, not {dataset}')
    config, rows = lift(example, legacy, fields)
    facts, provenance = describe(config)
    records.append(
      {
        'key': store_lib.run_key(config, data),
        'config': config,
        'data': data,
        'facts': facts,
        'rows': rows,
        'seconds': legacy['seconds'],
        'provenance': provenance,
      }
    )
  return records
