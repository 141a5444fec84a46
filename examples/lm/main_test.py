"""main.py: the command line end to end, flags, CLI errors."""

import dataclasses
import json
import os

import pytest

from configs.default import Config
import main as cli
import methods

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def without_timing(rows):
  return [{k: v for k, v in r.items() if k != 'tokens_per_sec'} for r in rows]


# The command line.

_SIZE_FIELDS = (
  'num_layers',
  'num_heads',
  'embed_dim',
  'context_length',
  'batch_size',
  'steps',
  'warmup_steps',
  'eval_interval',
  'eval_batches',
  'learning_rate',
)


def _size_flags(config, *extra):
  """The flags that give a tiny run the sizes of ``config``."""
  flags = []
  for name in _SIZE_FIELDS + extra:
    flags += ['--' + name.replace('_', '-'), str(getattr(config, name))]
  return flags


def test_main_writes_results_and_refuses_another_config_on_resume(
  corpus_file, tmp_path, capsys, tiny
):
  config = tiny(methods=('adamw',))
  common = ['--dataset', corpus_file, '--methods', 'adamw', '--workdir', str(tmp_path)]
  common += _size_flags(config)
  assert cli.main(common) == 0
  out = capsys.readouterr().out
  assert 'adamw trial 0 step 20/20' in out and '| adamw |' in out
  for name in ('config.json', 'history.json', 'history.csv', 'summary.md', 'curves.png'):
    assert os.path.isfile(tmp_path / name), name
  history = json.load(open(tmp_path / 'history.json'))
  assert [r['step'] for r in history['rows']] == [10, 20]
  assert open(tmp_path / 'curves.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert cli.main(common + ['--resume']) == 0  # finished: nothing to redo
  assert cli.main(common + ['--resume', '--learning-rate', '0.02']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --resume:') and 'learning_rate' in err


def test_main_runs_with_scan_layers(corpus_file, tmp_path, capsys, scan_sbs_config):
  """The command line end to end with --scan-layers (SBS, whose statistics
  are per layer), then --resume restoring the stacked checkpoint."""
  config = scan_sbs_config(scan=True)
  args = ['--dataset', corpus_file, '--workdir', str(tmp_path), '--methods', 'sbs', '--scan-layers']
  args += _size_flags(config, 'lam')
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert 'sbs trial 0 step 30/30' in out and '| sbs |' in out
  assert json.load(open(tmp_path / 'config.json'))['scan_layers'] is True
  rows = json.load(open(tmp_path / 'history.json'))['rows']
  assert [r['step'] for r in rows] == [10, 20, 30]
  assert rows[-1]['val_loss'] < rows[0]['val_loss']
  assert cli.main(args + ['--resume']) == 0  # finished: restored, nothing to redo
  resumed = json.load(open(tmp_path / 'history.json'))['rows']
  assert without_timing(resumed) == without_timing(rows)


@pytest.mark.parametrize(
  'args,match',
  [
    (['--dataset', '/nonexistent/text.txt'], 'no such text file: /nonexistent/text.txt'),
    (['--dataset', 'imdb'], "unknown dataset 'imdb'"),
    (['--num-heads', '3'], 'num_heads 3 does not divide embed_dim 128'),
    (['--dropout', '1'], 'dropout must lie in [0, 1), got 1.0'),
    # A configuration that cannot run fails before the data loads.
    (['--dataset', '/nonexistent/text.txt', '--num-heads', '3'], 'num_heads 3 does not divide'),
    (['--methods', 'sgd'], "invalid choice 'sgd' for argument '--methods'"),
    (['--granularity', 'row'], "invalid choice 'row' for argument '--granularity'"),
    (['--steps', 'many'], "'many'"),
  ],
)
def test_cli_errors_exit_2_with_error_message(args, match, capsys):
  assert cli.main(args + ['--workdir', '/tmp/unused']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert match in err


def test_help_lists_every_config_field(capsys, monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')
  assert cli.main(['--help']) == 0
  out = ' '.join(capsys.readouterr().out.split())
  for field in dataclasses.fields(Config):
    assert '--' + field.name.replace('_', '-') in out, field.name
  for name, method in methods.METHODS.items():
    assert f'{name}: {method.description}' in out
  assert '{leaf,element}' in out and '--resume' in out and '--no-checkpoint' in out


def test_flags_become_the_config():
  run, config = cli.parse_args(['--methods', 'adamw', 'sbs', '--lam', '0', '--no-checkpoint'])
  assert config == Config(methods=('adamw', 'sbs'), lam=0.0)
  assert type(config) is Config
  assert not run.checkpoint and not run.resume
  assert cli.parse_args(['--scan-layers'])[1] == Config(scan_layers=True)
