"""benchmarks/run.py: the studies it lists, its errors, and every committed
result written again, byte for byte, from the committed cache."""

import glob
import importlib
import json
import os
import subprocess
import sys
import types

import pytest

from harness import runner as runner_lib
from harness import store
import run

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHMARKS)
RESULTS = os.path.join(BENCHMARKS, 'results')
SAMPLE = os.path.join(ROOT, 'examples', 'cifar', 'data', 'cifar10_sample.npz')

# Results no cache holds: timing tables, written by their scripts where
# they are measured, and the main job's run (benchmarks/main_job.py).
TIMING = {
  'update_speed_cpu',
  'update_speed_leaves_cpu',
  'state_memory',
  'trials_vmap',
  'lm_speed_cpu',
  'main_job_cpu',
}
# Studies whose runs are under way: their results file may not be committed
# yet, or may list the runs it still waits for; once committed, it is the
# cache's, as every study's. Every other study's file is complete.
IN_PROGRESS: set[str] = {'lm_corpus_cpu', 'lm_horizon_cpu', 'lm_tuned_cpu'}


def _regenerated():
  """(study, committed stem) of every study's default scale."""
  out = []
  for name in runner_lib.study_names():
    study = runner_lib.load_study(name)
    out.append((name, study.OUTPUT.format(scale=study.DEFAULT_SCALE)))
  return out


def test_list_names_every_study(capsys):
  run.main(['--list'])
  listed = capsys.readouterr().out.splitlines()
  names = [line.split()[0] for line in listed]
  assert names == runner_lib.study_names()
  assert {'paper_tables', 'momentum_semantics', 'global_normalization', 'overfit'} <= set(names)
  assert {'lm', 'lm_confirm', 'lm_accumulate'} <= set(names)
  assert all(len(line.split(maxsplit=1)) == 2 for line in listed)  # each with its summary


def test_every_committed_result_is_a_study_a_timing_table_or_named():
  stems = {f[:-3] for f in os.listdir(RESULTS) if f.endswith('.md')}
  studies = {stem for _, stem in _regenerated()}
  assert stems == (studies - (IN_PROGRESS - stems)) | TIMING
  assert IN_PROGRESS <= studies


def test_only_a_study_in_progress_waits_for_runs():
  for _, stem in _regenerated():
    path = os.path.join(RESULTS, f'{stem}.md')
    if stem in IN_PROGRESS or not os.path.exists(path):
      continue
    with open(path, encoding='utf-8') as f:
      assert 'not run yet' not in f.read().lower(), f'{stem}.md waits for runs'


@pytest.mark.parametrize(
  'study, stem',
  [s for s in _regenerated() if os.path.exists(os.path.join(RESULTS, f'{s[1]}.md'))],
)
def test_committed_results_are_written_again_byte_for_byte(study, stem, tmp_path):
  out = tmp_path / f'{stem}.md'
  run.main([study, '--cached-only', '--out', str(out), '--no-figures'])
  assert out.read_bytes() == open(os.path.join(RESULTS, f'{stem}.md'), 'rb').read()
  committed_json = os.path.join(RESULTS, f'{stem}.json')
  assert os.path.exists(committed_json) == (tmp_path / f'{stem}.json').exists()
  if os.path.exists(committed_json):
    assert (tmp_path / f'{stem}.json').read_bytes() == open(committed_json, 'rb').read()


def test_every_cached_run_is_still_requested_by_a_study():
  """A study whose cells or scales change keeps asking for the runs its
  cache holds (a key that drifts would leave them behind and train again):
  every record of every committed cache is asked for by a study that reads
  it, finished or not."""
  requested: dict[str, set[str]] = {}
  for name in runner_lib.study_names():
    study = runner_lib.load_study(name)
    options = runner_lib.Options(study=name, scale=study.DEFAULT_SCALE, cached_only=True)
    runner = runner_lib.Runner(study, options)
    importlib.import_module(f'harness.analyses.{study.ANALYSIS}').report(runner)
    requested.setdefault(runner.store.path, set()).update(runner.requested)
  for path in glob.glob(os.path.join(RESULTS, 'trials', '*.jsonl')):
    left = set(store.TrialStore(path).records) - requested.get(path, set())
    assert not left, f'{os.path.basename(path)}: {len(left)} records no study asks for'


def _strings(value):
  """Every string in a JSON value, keys included."""
  if isinstance(value, str):
    yield value
  elif isinstance(value, dict):
    for key, item in value.items():
      yield key
      yield from _strings(item)
  elif isinstance(value, list):
    for item in value:
      yield from _strings(item)


def test_committed_caches_name_no_machine_paths():
  caches = [n for n in os.listdir(os.path.join(RESULTS, 'trials')) if n.endswith('.jsonl')]
  assert caches
  repo = os.path.dirname(BENCHMARKS)
  for name in caches:
    with open(os.path.join(RESULTS, 'trials', name)) as f:
      records = [json.loads(line) for line in f]
    assert all(record['schema'] == store.SCHEMA for record in records)
    # A path in any string (a command's arguments included) is a file of the
    # repository or the runner's placeholder for the user's data, PATH/...
    words = {w for r in records for s in _strings(r) for w in s.split() if '/' in w}
    elsewhere = [
      w
      for w in words
      if not w.startswith('PATH/')
      and (os.path.isabs(w) or '..' in w.split('/') or not os.path.exists(os.path.join(repo, w)))
    ]
    assert not elsewhere, (name, elsewhere)


@pytest.mark.parametrize(
  'argv, message',
  [
    (['no_such_study'], 'no study'),
    (['overfit', '--scale', 'huge'], "no scale 'huge'"),
    (['overfit', '--cells', '('], 'not a regular expression'),
    (['paper_tables', '--scale', 'smoke', '--cells', 'nothing'], 'matches no cell'),
    (['lm', '--scale', 'smoke', '--cells', 'nothing'], 'matches no cell'),
    (['overfit', '--dataset', '/nonexistent/cifar10.npz'], 'no such .npz file'),
    (['overfit', '--dataset', 'imagenet2012'], 'unknown dataset'),
    ([], 'name a study'),
  ],
)
def test_bad_input_is_an_error_with_status_2(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    run.main(argv + ['--cached-only', '--workdir', str(tmp_path), '--out', str(tmp_path / 'o.md')])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def _run(*argv):
  """``python benchmarks/run.py ...`` in its own process (it imports an
  example's modules, which another example's share names with)."""
  done = subprocess.run(
    [sys.executable, os.path.join(BENCHMARKS, 'run.py'), *argv],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def test_cifar_smoke_trains_caches_and_renders_the_same_from_the_cache(tmp_path):
  common = ['paper_tables', '--scale', 'smoke', '--dataset', SAMPLE, '--cells', 'batch 16']
  common += ['--workdir', str(tmp_path / 'cache')]
  out = tmp_path / 'tables.md'
  _run(*common, '--out', str(out))
  text = out.read_text()
  sbs_row = next(r for r in text.splitlines() if r.startswith('| SBS, 1/100'))
  cols = sbs_row.split(' | ')
  assert cols[-3].endswith('/2')  # paired over the 2 trials
  assert float(cols[-2]) > 0  # final train loss
  # SBS's update fraction and mean count, from the logged rows.
  fraction, count = (float(v) for v in cols[-1].rstrip(' |').split(' / '))
  assert 0 < fraction < 1 and count >= 1
  assert next(r for r in text.splitlines() if r.startswith('| SGD, 1/100')).endswith('|  |')
  assert "--cells 'batch 16'" in text and 'PATH/cifar10_sample.npz' in text
  assert (tmp_path / 'tables_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  cache = tmp_path / 'cache' / 'paper_tables_smoke.jsonl'
  records = [json.loads(line) for line in cache.read_text().splitlines()]
  assert len(records) == 6  # 3 cells x 2 trials, one record per finished run
  assert all(r['data']['name'] == 'cifar10_sample.npz' and r['data']['sha256'] for r in records)
  # From the cache alone (nothing trained, no data needed): the same file.
  first = out.read_bytes()
  cached = [a for a in common if a not in ('--dataset', SAMPLE)]
  run.main(cached + ['--out', str(out), '--cached-only', '--no-figures'])
  assert b'not run yet' in out.read_bytes()  # without --dataset: the scale's own data
  run.main(common + ['--out', str(out), '--cached-only', '--no-figures'])
  assert out.read_bytes() == first
  # An unfinished cell is listed as such.
  sgd = next(i for i, r in enumerate(records) if r['config']['methods'] == ['sgd'])
  cache.write_text(''.join(json.dumps(r) + '\n' for i, r in enumerate(records) if i != sgd))
  run.main(common + ['--out', str(out), '--cached-only', '--no-figures'])
  partial = out.read_text()
  assert '| SGD, 1/100, batch 16 | not run yet (trials cached, cell and its SGD: 1/2) |' in partial
  assert '| SBS, 1/100, batch 16 | not run yet (trials cached, cell and its SGD: 2/2, 1/2) |' in (
    partial
  )


def _corpus(path, n=4000):
  lines = ['to be or not to be, that is the question.\n', 'all the world is a stage.\n']
  text = ''.join(lines[i % 2] for i in range(n // 30))
  path.write_text(text)
  return str(path)


def test_lm_smoke_sweeps_rates_and_resumes_from_the_cache(tmp_path):
  corpus = _corpus(tmp_path / 'corpus.txt')
  common = ['lm', '--scale', 'smoke', '--dataset', corpus, '--workdir', str(tmp_path / 'cache')]
  common += ['--cells', '^(adamw|masked_updates)$', '--out', str(tmp_path / 'lm.md')]
  _run(*common)
  cells = json.load(open(tmp_path / 'lm.json'))['cells']
  assert [c['method'] for c in cells] == ['adamw', 'masked_updates']
  for cell in cells:
    assert set(cell) == {'name', 'method', 'options', 'trials', 'val_loss', 'vs_adamw'}
    assert cell['trials'] == 2 and cell['options']['learning_rate'] in (3e-3, 1e-2)
  versus = cells[1]['vs_adamw']
  assert versus['ci95'][0] <= versus['diff'] <= versus['ci95'][1]
  md = (tmp_path / 'lm.md').read_text()
  assert '- machine:' in md and '- versions:' in md and '(seeds 0..1)' in md
  assert (tmp_path / 'lm_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  lines = (tmp_path / 'cache' / 'lm_smoke.jsonl').read_text().splitlines()
  assert len(lines) == 2 * 2 * 2  # cells x rates x trials
  first = (tmp_path / 'lm.md').read_bytes()
  _run(*common, '--cached-only', '--no-figures')
  assert (tmp_path / 'lm.md').read_bytes() == first


def test_until_done_passes_again_while_runs_train_here_or_elsewhere(monkeypatch):
  # Pass 1 trains a run; pass 2 finds the next one held by another process
  # (and waits); pass 3 finds nothing to do: the campaign ends.
  passes = iter([(1, 0), (0, 1), (0, 0)])
  names, sleeps = [], []

  def one_pass(parser, args, name, deadline):
    trained, held = next(passes)
    names.append(name)
    fake = types.SimpleNamespace(trained=trained, held_elsewhere=held, deferred=0)
    return fake, f'{name}.md'

  monkeypatch.setattr(run, '_run', one_pass)
  monkeypatch.setattr(run.time, 'sleep', sleeps.append)
  assert run.main(['lm_horizon', '--until-done']) == 'lm_horizon.md'
  assert names == ['lm_horizon'] * 3 and sleeps == [60]


@pytest.mark.parametrize(
  'argv, message',
  [
    (['lm_corpus', 'lm_horizon', '--out', 'x.md'], '--out names one results file'),
    (['lm_corpus', '--until-done', '--cached-only'], 'does not go with --cached-only'),
  ],
)
def test_options_that_do_not_go_together_are_an_error(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    run.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_local_data_must_hold_the_copy_the_runs_used(tmp_path):
  (tmp_path / 'kjv.txt').write_text('not the King James Bible\n')
  study = runner_lib.load_study('lm_corpus')
  options = runner_lib.Options(
    study='lm_corpus', scale='cpu', local_data=str(tmp_path), workdir=str(tmp_path)
  )
  runner = runner_lib.Runner(study, options)
  assert runner.dataset == str(tmp_path / 'kjv.txt')
  with pytest.raises(ValueError, match='--local-data'):
    runner.data()
