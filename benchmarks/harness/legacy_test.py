"""harness.legacy: the per-trial JSON files of the old scripts, imported."""

import json

import pytest

from harness import legacy
from harness import store

FIELDS = ['dataset', 'workdir', 'trials', 'model', 'methods', 'seed', 'global_normalization']
FIELDS += ['learning_rate']


def _legacy(config, trial=1):
  rows = [{'optimizer': 'sgd', 'trial': trial, 'epoch': 1, 'val_accuracy': 40.0}]
  return {'config': config, 'trial': trial, 'rows': rows, 'seconds': 2.5}


def _config(**extra):
  base = dict(model='small_cnn', optimizers=['sgd'], seed=10, learning_rate=0.1, trials=5)
  return dict(base, dataset='/machine/data/cifar10.npz', workdir='/machine/cache', **extra)


def test_lift_renames_adds_and_takes_the_runs_own_seed():
  config, rows = legacy.lift('cifar', _legacy(_config(), trial=2), FIELDS)
  assert config == {
    'model': 'small_cnn',
    'methods': ['sgd'],
    'seed': 12,
    'global_normalization': 'std',
    'learning_rate': 0.1,
  }
  assert rows == [{'method': 'sgd', 'epoch': 1, 'val_accuracy': 40.0}]


def test_lift_refuses_fields_it_cannot_place():
  with pytest.raises(ValueError, match=r"unknown \['gone'\], missing \[\]"):
    legacy.lift('cifar', _legacy(_config(gone=1)), FIELDS)
  with pytest.raises(ValueError, match=r"unknown \[\], missing \['learning_rate'\]"):
    legacy.lift(
      'cifar', _legacy({k: v for k, v in _config().items() if k != 'learning_rate'}), FIELDS
    )


def test_import_folder_hashes_the_data_and_drops_the_paths(tmp_path):
  folder = tmp_path / 'old'
  folder.mkdir()
  (folder / '0123456789abcdef_trial0.json').write_text(json.dumps(_legacy(_config(), trial=0)))
  data = tmp_path / 'cifar10.npz'
  data.write_bytes(b'the copy')
  describe = lambda config: ({'test_images': 100}, {'machine': 'm', 'versions': 'v'})
  (record,) = legacy.import_folder(str(folder), 'cifar', FIELDS, str(data), describe)
  assert record['data'] == store.data_identity(str(data))
  assert record['key'] == store.run_key(record['config'], record['data'])
  assert '/machine' not in json.dumps(record)
  assert record['facts'] == {'test_images': 100} and record['seconds'] == 2.5
  other = tmp_path / 'svhn.npz'
  other.write_bytes(b'x')
  with pytest.raises(ValueError, match='was made with /machine/data/cifar10.npz'):
    legacy.import_folder(str(folder), 'cifar', FIELDS, str(other), describe)
  (folder / 'notes.json').write_text('{}')
  with pytest.raises(ValueError, match='not a legacy trial file'):
    legacy.import_folder(str(folder), 'cifar', FIELDS, str(data), describe)
