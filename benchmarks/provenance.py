"""The machine and versions every benchmark result states, in one place."""

import os
import platform

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
