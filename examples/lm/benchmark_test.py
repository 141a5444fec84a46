"""benchmarks/lm.py, which runs this example: tables, JSON, its trial cache."""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from configs.default import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

import importlib.util

BENCHMARK = os.path.join(ROOT, 'benchmarks', 'lm.py')


@pytest.fixture(scope='module')
def benchmark():
  """benchmarks/lm.py as a module, as ``python benchmarks/lm.py`` has it
  (its folder's shared modules importable)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(os.path.dirname(BENCHMARK))
    spec = importlib.util.spec_from_file_location('lm_benchmark', BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_tiny_is_the_benchmarks_smoke_scale(benchmark, tiny):
  """The tests' tiny runs train at the benchmark's smoke scale, so the runs of
  one method and rate share one compiled step."""
  base = benchmark.base_config(benchmark.SCALES['smoke'], 'unused.txt', None)
  assert tiny() == dataclasses.replace(base, learning_rate=1e-2, trials=1)
  assert benchmark.OPTIONS['masked_updates'] == {'probability': 0.5, 'granularity': 'leaf'}


def _check_benchmark_json(path, methods, trials):
  cells = json.load(open(path))['cells']
  assert [c['method'] for c in cells] == list(methods)
  for cell in cells:
    assert set(cell) == {'name', 'method', 'options', 'trials', 'val_loss', 'vs_adamw'}
    assert cell['name'].startswith(cell['method'])
    assert cell['trials'] == trials and np.isfinite(cell['val_loss'])
    assert cell['options']['learning_rate'] in lm_rates()
    if cell['method'] == 'adamw':
      assert cell['vs_adamw'] is None
    else:
      versus = cell['vs_adamw']
      lo, hi = versus['ci95']
      assert lo <= versus['diff'] <= hi and 0 <= versus['wins'] <= trials
  return cells


def lm_rates():
  return (3e-3, 1e-2)  # the smoke scale's sweep


def test_benchmark_smoke_writes_markdown_json_and_resumes_from_cache(
  corpus_file, tmp_path, benchmark
):
  bench = benchmark
  assert bench.SCALES['smoke'].learning_rates == lm_rates()
  methods = ('adamw', 'masked_updates')
  args = ['--scale', 'smoke', '--dataset', corpus_file, '--workdir', str(tmp_path / 'trials')]
  args += ['--out', str(tmp_path / 'lm.md'), '--methods', *methods]
  bench.main(args)
  cells = _check_benchmark_json(tmp_path / 'lm.json', methods, trials=2)
  md = open(tmp_path / 'lm.md').read()
  for text in (
    '- machine:',
    '- versions:',
    '- command: `python benchmarks/lm.py --scale smoke',
    '| masked_updates',
  ):
    assert text in md
  assert open(tmp_path / 'lm_curves.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert len(os.listdir(tmp_path / 'trials')) == 2 * 2 * 2  # methods x rates x trials
  # From the cache alone: the same cells, nothing trained.
  os.remove(tmp_path / 'lm.json')
  bench.main(args + ['--cached-only'])
  assert json.load(open(tmp_path / 'lm.json'))['cells'] == cells
  # A method with no cached trial is listed as not run yet.
  bench.main(args[:-3] + ['--methods', 'adamw', 'sbs', '--cached-only'])
  assert 'sbs (alpha=0.1, lam=-4.0) | not run yet' in open(tmp_path / 'lm.md').read()
  assert [c['method'] for c in json.load(open(tmp_path / 'lm.json'))['cells']] == ['adamw']


@pytest.mark.slow
def test_benchmark_smoke_all_methods(corpus_file, tmp_path, benchmark):
  args = ['--scale', 'smoke', '--dataset', corpus_file, '--workdir', str(tmp_path / 'trials')]
  benchmark.main(args + ['--out', str(tmp_path / 'lm.md')])
  bench = benchmark
  _check_benchmark_json(
    tmp_path / 'lm.json', [bench.CELLS[c][0] for c in bench.MAIN_CELLS], trials=2
  )


def test_benchmark_cache_key_ignores_where_things_lie(benchmark):
  bench = benchmark
  base = bench.base_config(bench.SCALES['smoke'], '/a/tinyshakespeare.txt', None)
  moved = dataclasses.replace(base, dataset='/b/tinyshakespeare.txt', workdir='/x', data_dir='/d')
  assert bench.cell_key(base) == bench.cell_key(moved)
  assert bench.cell_key(base) != bench.cell_key(dataclasses.replace(base, learning_rate=0.5))
  config = bench.run_config(base, 'magma', 1e-2)
  assert config.methods == ('magma',) and config.tau == 2.0 and config.learning_rate == 1e-2


def test_benchmark_cache_keys_of_the_committed_trials_stay(benchmark):
  """Every committed trial is found under the key its stored configuration
  gives now: Config fields added since (at their defaults) stay out of the
  key, through ``ADDED_FIELDS`` of benchmarks/lm.py."""
  bench = benchmark
  names = {f.name for f in dataclasses.fields(Config)}
  paths = sorted(glob.glob(os.path.join(ROOT, 'benchmarks', 'results', 'trials', 'lm_*', '*.json')))
  if not paths:
    pytest.skip('no committed LM trials')
  for path in paths:
    with open(path) as f:
      stored = json.load(f)['config']
    stored['methods'] = tuple(stored['methods'])
    config = Config(**{k: v for k, v in stored.items() if k in names})
    missing = sorted(names - set(stored) - set(bench.ADDED_FIELDS))
    assert bench.cell_key(config) == os.path.basename(path).split('_trial')[0], (
      f'{os.path.relpath(path, ROOT)}: its key changed; fields not in benchmarks/lm.py'
      f' ADDED_FIELDS: {missing}'
    )


def test_benchmark_confirmation_run_takes_its_rates_and_fresh_seeds(
  corpus_file, tmp_path, benchmark
):
  """--learning-rates and --seed: one rate on trials independent of the sweep."""
  bench = benchmark
  out = tmp_path / 'confirm.md'
  args = ['--scale', 'smoke', '--dataset', corpus_file, '--workdir', str(tmp_path / 'trials')]
  args += ['--methods', 'adamw', '--learning-rates', '0.01', '--trials', '1', '--seed', '5']
  bench.main(args + ['--out', str(out)])
  text = out.read_text()
  assert 'peak rates swept: 0.01;' in text and '(seeds 5..5)' in text
  assert '| adamw | 0.01 |' in text  # one rate: no edge marker
  (cell,) = json.load(open(tmp_path / 'confirm.json'))['cells']
  assert cell['options']['learning_rate'] == 0.01 and cell['trials'] == 1
  base = bench.base_config(bench.SCALES['smoke'], corpus_file, None)
  assert bench.cell_key(base) != bench.cell_key(dataclasses.replace(base, seed=5))
