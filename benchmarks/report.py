"""What every benchmark result states (machine, versions) and how it is written."""

import json
import os
import platform
from typing import Any

import jax
import optax

import optax_sbs


def machine_and_versions(*extra: str) -> list[str]:
  """Two markdown list items: the machine (CPU cores, JAX's devices) and the
  versions of python, jax, optax, optax_sbs and the named ``extra`` packages
  (imported by name, e.g. ``'flax'``)."""
  dev = jax.devices()[0]
  versions = [f'python {platform.python_version()}', f'jax {jax.__version__}']
  for name in extra:
    module = __import__(name)
    versions.append(f'{name} {getattr(module, "__version__", "?")}')
  versions += [f'optax {optax.__version__}', f'optax_sbs {optax_sbs.__version__}']
  return [
    f'- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {dev.platform} '
    f'({dev.device_kind}), {jax.device_count()} device(s)',
    f'- versions: {", ".join(versions)}',
  ]


def write_results(out: str, lines: list[str], payload: Any = None, indent: int = 1) -> None:
  """Writes the markdown ``lines`` to ``out`` (its folder made if missing)
  and, given a ``payload``, the JSON beside it (``out`` with ``.json``)."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  if payload is not None:
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
      json.dump(payload, f, indent=indent)
