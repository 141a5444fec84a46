"""What every results file states (machine, versions, provenance) and how it is written."""

import json
import os
import platform
from typing import Any


def this_machine(*extra: str) -> dict[str, str]:
  """This machine (CPU cores, JAX's devices) and the versions of python,
  jax, the named ``extra`` packages (imported by name, e.g. ``'flax'``),
  optax and optax_sbs."""
  import jax  # noqa: PLC0415
  import optax  # noqa: PLC0415

  import optax_sbs  # noqa: PLC0415

  dev = jax.devices()[0]
  versions = [f'python {platform.python_version()}', f'jax {jax.__version__}']
  for name in extra:
    module = __import__(name)
    versions.append(f'{name} {getattr(module, "__version__", "?")}')
  versions += [f'optax {optax.__version__}', f'optax_sbs {optax_sbs.__version__}']
  return {
    'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores, {dev.platform} '
    f'({dev.device_kind}), {jax.device_count()} device(s)',
    'versions': ', '.join(versions),
  }


def machine_and_versions(*extra: str) -> list[str]:
  """This machine and its versions (:func:`this_machine`) as two markdown
  list items: the header of a timing table, measured where it is written."""
  found = this_machine(*extra)
  return [f'- machine: {found["machine"]}', f'- versions: {found["versions"]}']


def provenance_lines(provenance: list[dict[str, str]]) -> list[str]:
  """Where the runs behind a report trained: one markdown item for the
  machines and one for the versions, each value with its number of runs
  when the runs differ."""
  lines = []
  for field in ('machine', 'versions'):
    counts: dict[str, int] = {}
    for p in provenance:
      counts[p[field]] = counts.get(p[field], 0) + 1
    if len(counts) == 1:
      lines.append(f'- {field}: {next(iter(counts))}')
    elif counts:
      lines.append(f'- {field}: ' + '; '.join(f'{v} ({n} runs)' for v, n in counts.items()))
  return lines


def table_head(*columns: str) -> list[str]:
  """The first two lines of a markdown table with these column titles."""
  return ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]


def write_results(out: str, lines: list[str], payload: Any = None, indent: int = 1) -> None:
  """Writes the markdown ``lines`` to ``out`` (its folder made if missing)
  and, given a ``payload``, the JSON beside it (``out`` with ``.json``)."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  if payload is not None:
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
      json.dump(payload, f, indent=indent)
