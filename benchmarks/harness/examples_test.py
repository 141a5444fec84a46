"""harness.examples and the runner's data: what trains, on which data."""

import json
import os

import pytest

from harness import examples
from harness import report
from harness import runner as runner_lib


def test_an_example_module_must_come_from_its_own_folder(monkeypatch):
  # As if another example's module of the same name had been imported first.
  fake = type(examples)('input_pipeline')
  fake.__file__ = '/elsewhere/input_pipeline.py'
  monkeypatch.setitem(__import__('sys').modules, 'input_pipeline', fake)
  with pytest.raises(RuntimeError, match='imported from outside examples/lm'):
    examples.EXAMPLES['lm'].load('corpus.txt', None, {'config': {'context_length': 8}})


def test_configs_are_the_examples_defaults_with_one_method():
  cifar = examples.EXAMPLES['cifar'].config(method='sbs', lam=0.0)
  assert cifar['methods'] == ('sbs',) and cifar['lam'] == 0.0 and cifar['alpha'] == 0.1
  lm = examples.EXAMPLES['lm'].config(method='adamw', steps=5)
  assert lm['methods'] == ('adamw',) and lm['steps'] == 5
  with pytest.raises(TypeError):
    examples.EXAMPLES['cifar'].config(no_such_field=1)


def test_training_without_the_scales_data_names_the_copy_to_pass(tmp_path):
  options = runner_lib.Options(study='overfit', scale='cpu', workdir=str(tmp_path))
  runner = runner_lib.Runner(runner_lib.load_study('overfit'), options)
  with pytest.raises(ValueError, match=r'used cifar10.npz \(sha256 5d99a1b1962e0785...\): pass'):
    runner.data()


@pytest.mark.parametrize('example, cache', [('cifar', 'overfit_cpu'), ('lm', 'lm_cpu')])
def test_new_runs_record_the_same_packages_as_the_cached_ones(example, cache):
  path = os.path.join(os.path.dirname(__file__), '..', 'results', 'trials', f'{cache}.jsonl')
  with open(path) as f:
    cached = json.loads(f.readline())['provenance']['versions']
  new = report.this_machine(*examples.EXAMPLES[example].packages)['versions']
  # The same packages in the same order (versions may differ).
  assert [v.split()[0] for v in new.split(', ')] == [v.split()[0] for v in cached.split(', ')]
