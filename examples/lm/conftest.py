"""Test set-up of the LM example: a tiny corpus and tiny configurations.

The example's tests run in their own pytest process
(``python -m pytest -n 2 examples/lm``): pytest puts this folder on
``sys.path``, so they import the example's modules as ``main.py`` does. They
run on one device.
"""

import dataclasses

import numpy as np
import pytest

from configs.default import Config

# A model and run of a few seconds (the LM study's smoke scale): tiny runs of
# one method and rate share one compiled train step.
_SMOKE = dict(
  num_layers=1,
  num_heads=2,
  embed_dim=16,
  context_length=16,
  batch_size=8,
  steps=20,
  warmup_steps=2,
  eval_interval=10,
  eval_batches=2,
)


def _tiny_config(**overrides) -> Config:
  """A Config for runs of a few seconds: the smoke scale, one trial, rate 1e-2."""
  base = Config(dataset='unused.txt', data_dir=None, workdir='', trials=2, **_SMOKE)
  return dataclasses.replace(base, **{'learning_rate': 1e-2, 'trials': 1, **overrides})


def _scan_config(**overrides) -> Config:
  """The tiny model of the scanned-layer tests: 2 layers, width 16, context 8."""
  return _tiny_config(num_layers=2, context_length=8, **overrides)


def _corpus(n: int = 4000) -> str:
  """A small learnable text: a few lines repeated in a random order."""
  lines = [
    'to be or not to be, that is the question.\n',
    'all the world is a stage.\n',
    'now is the winter of our discontent.\n',
    'what light through yonder window breaks?\n',
  ]
  rng = np.random.default_rng(0)
  text = ''
  while len(text) < n:
    text += lines[rng.integers(len(lines))]
  return text[:n]


@pytest.fixture(scope='session')
def corpus_file(tmp_path_factory):
  """A small learnable text file (4000 characters)."""
  path = tmp_path_factory.mktemp('lm') / 'corpus.txt'
  path.write_text(_corpus(), encoding='utf-8')
  return str(path)


@pytest.fixture(scope='session')
def tiny():
  """``tiny(**overrides) -> Config`` for runs of a few seconds."""
  return _tiny_config


@pytest.fixture(scope='session')
def scan_config():
  """``scan_config(**overrides) -> Config``: the tiny 2-layer model."""
  return _scan_config


@pytest.fixture(scope='session')
def scan_sbs_config():
  """``scan_sbs_config(scan) -> Config``: SBS lam = 0 around AdamW, 30 steps,
  scanned or not (a train test and a main test run the same configuration,
  so in one process the second finds its train step compiled)."""
  return lambda scan: _scan_config(methods=('sbs',), lam=0.0, steps=30, scan_layers=scan)
