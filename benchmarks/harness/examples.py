"""How the harness trains with each example program, and what it records.

An example program is a folder of modules a user can fork (Flax's layout);
its modules import each other by plain name (``import train``), as its
``main.py`` runs them. The harness loads an example's configuration module
by file (light: no JAX), and its training modules only to train, with the
example's folder first on ``sys.path``, as ``python main.py`` has it; one
process trains with one example.
"""

import dataclasses
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _folder(name: str) -> str:
  return os.path.join(ROOT, 'examples', name)


def light_module(name: str, path: str) -> ModuleType:
  """A module of the example that imports none of its others (its
  configuration, its results writer), loaded by file under its own name."""
  stem = os.path.splitext(path)[0].replace('/', '_')
  spec = importlib.util.spec_from_file_location(
    f'{name}_example_{stem}', os.path.join(_folder(name), path)
  )
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _module(name: str, module_name: str) -> ModuleType:
  """The example's module, imported as its ``main.py`` imports it."""
  folder = _folder(name)
  if sys.path[0] != folder:
    sys.path.insert(0, folder)
  module = importlib.import_module(module_name)
  if not os.path.abspath(module.__file__ or '').startswith(folder):
    raise RuntimeError(f'{module.__name__} was imported from outside examples/{name}')
  return module


class Example:
  """One example program, as the harness uses it."""

  name = ''
  # Packages besides jax, optax and optax_sbs whose versions a run records.
  packages: tuple[str, ...] = ()

  def __init__(self):
    self._config = None

  def config_class(self) -> Any:
    if self._config is None:
      self._config = light_module(self.name, 'configs/default.py').Config
    return self._config

  def config(self, method: str | None = None, **fields: Any) -> dict[str, Any]:
    """The example's full configuration (a dict): its defaults, ``fields``,
    and ``method`` as the one method of the run."""
    if method is not None:
      fields['methods'] = (method,)
    return dataclasses.asdict(self.config_class()(**fields))

  def run_config(self, run: dict[str, Any], dataset: str, data_dir: str | None) -> Any:
    fields = dict(run, dataset=dataset, data_dir=data_dir, trials=1, workdir='')
    return self.config_class()(
      **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    )

  def load(self, dataset: str, data_dir: str | None, scale: dict) -> Any:
    raise NotImplementedError

  def module(self, name: str) -> Any:
    """The example's module ``name`` (e.g. ``'train'``), imported from its
    folder; an error if a module of that name came from elsewhere."""
    return _module(self.name, name)

  def train(self, run: dict, data: Any, dataset: str, data_dir: str | None) -> list[dict]:
    """The rows of one run (its ``trial`` field left to the harness)."""
    train = self.module('train')
    rows = train.run(self.run_config(run, dataset, data_dir), data)
    return [{k: v for k, v in r.items() if k != 'trial'} for r in rows]

  def facts(self, run: dict, data: Any) -> dict[str, Any]:
    raise NotImplementedError


class Cifar(Example):
  """``examples/cifar``: image classification, one row per epoch."""

  name = 'cifar'

  def load(self, dataset, data_dir, scale):
    input_pipeline = self.module('input_pipeline')
    data = input_pipeline.load(dataset, data_dir)
    size = scale.get('test_examples')
    if size and size < len(data.y_test):
      data = balanced_test_subset(data, size)
    return data

  def facts(self, run, data):
    return {'test_images': int(len(data.y_test))}


def balanced_test_subset(data: Any, size: int) -> Any:
  """The first ``size / num_classes`` test images of every class.

  Fixed for all cells (paired), and class-balanced whatever the order of the
  test split (a class-major copy included).
  """
  import numpy as np  # noqa: PLC0415

  per_class = size // data.num_classes
  index = np.sort(
    np.concatenate([np.flatnonzero(data.y_test == c)[:per_class] for c in range(data.num_classes)])
  )
  return dataclasses.replace(data, x_test=data.x_test[index], y_test=data.y_test[index])


class Lm(Example):
  """``examples/lm``: a character-level transformer, one row per evaluation."""

  name = 'lm'
  packages = ('flax',)

  def load(self, dataset, data_dir, scale):
    input_pipeline = self.module('input_pipeline')
    data = input_pipeline.load(dataset, data_dir)
    input_pipeline.check_lengths(data, scale['config']['context_length'])
    return data

  def facts(self, run, data):
    models = self.module('models')
    config = self.run_config(run, '', None)
    return {
      'characters': [len(data.train), len(data.validation), len(data.test)],
      'vocab_size': int(data.vocab_size),
      'params': int(models.num_params(config, data.vocab_size)),
      'unigram_entropy': unigram_entropy(data.train, data.vocab_size),
    }


def unigram_entropy(tokens: Any, vocab_size: int) -> float:
  """The entropy (nats) of the characters' frequencies in ``tokens``: the
  loss of a model that predicts them and nothing else."""
  import numpy as np  # noqa: PLC0415

  p = np.bincount(np.asarray(tokens), minlength=vocab_size) / len(tokens)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


EXAMPLES: dict[str, Example] = {'cifar': Cifar(), 'lm': Lm()}
