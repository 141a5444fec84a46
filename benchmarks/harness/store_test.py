"""harness.store: run keys, data identity, the JSON Lines cache and its locks."""

import json
import os

import pytest

from harness import store


def test_run_key_ignores_where_things_lie_and_the_number_of_trials():
  config = {'learning_rate': 0.1, 'seed': 3, 'dataset': '/a/x.npz', 'workdir': '/w', 'trials': 5}
  moved = dict(config, dataset='/b/x.npz', workdir='/v', data_dir='/d', download=False, trials=1)
  data = {'name': 'x.npz', 'sha256': 'ab'}
  assert store.run_key(config, data) == store.run_key(moved, data)
  for changed in ({'learning_rate': 0.2}, {'seed': 4}):
    assert store.run_key(dict(config, **changed), data) != store.run_key(config, data)
  assert store.run_key(config, dict(data, sha256='cd')) != store.run_key(config, data)


def test_two_files_of_one_name_but_other_bytes_are_other_data(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'b').mkdir()
  (tmp_path / 'a' / 'cifar10.npz').write_bytes(b'one copy')
  (tmp_path / 'b' / 'cifar10.npz').write_bytes(b'another copy')
  (tmp_path / 'c.npz').write_bytes(b'one copy')
  a, b = (store.data_identity(str(tmp_path / d / 'cifar10.npz')) for d in 'ab')
  assert a['name'] == b['name'] == 'cifar10.npz' and a != b
  assert a['sha256'] == store.data_identity(str(tmp_path / 'c.npz'))['sha256']
  assert store.data_identity('cifar10') == {'name': 'cifar10', 'sha256': None}


def _record(key, **extra):
  return dict(key=key, config={}, data={}, facts={}, rows=[], seconds=1.0, provenance={}, **extra)


def test_records_append_and_another_store_reads_them(tmp_path):
  path = str(tmp_path / 'c' / 'cache.jsonl')
  one = store.TrialStore(path)
  assert one.get('k1') is None
  kept = one.add(_record('k1'))
  assert kept['schema'] == store.SCHEMA and one.get('k1') == kept
  two = store.TrialStore(path)
  one.add(_record('k2'))
  assert two.get('k2') is None
  two.reload()
  assert two.get('k2')['key'] == 'k2'
  with open(path) as f:
    assert [json.loads(line)['key'] for line in f] == ['k1', 'k2']
  two.write_all([_record('k3')])
  assert list(two.records) == ['k3']


def test_old_records_are_migrated_and_unknown_schemas_refused(tmp_path, monkeypatch):
  path = tmp_path / 'cache.jsonl'
  path.write_text(json.dumps(_record('k', schema=1, old=7)) + '\n')
  with pytest.raises(ValueError, match='schema 1 has no migration.*not written by this harness'):
    store.TrialStore(str(path))
  lifted = lambda r: dict(
    {k: v for k, v in r.items() if k != 'old'}, new=r['old'], schema=store.SCHEMA
  )
  monkeypatch.setitem(store.MIGRATIONS, 1, lifted)
  record = store.TrialStore(str(path)).get('k')
  assert record['new'] == 7 and 'old' not in record
  path.write_text(json.dumps(_record('k', schema=store.SCHEMA + 1)) + '\n')
  with pytest.raises(ValueError, match='newer than this harness'):
    store.TrialStore(str(path))


def test_a_line_that_is_not_json_is_named(tmp_path):
  path = tmp_path / 'cache.jsonl'
  path.write_text(json.dumps(_record('k', schema=store.SCHEMA)) + '\n{"key": \n')
  with pytest.raises(ValueError, match='line 2: not a JSON record'):
    store.TrialStore(str(path))


def test_a_run_is_claimed_by_one_live_process(tmp_path):
  lock = str(tmp_path / 'locks' / 'k.lock')
  assert store.claim(lock)
  assert not store.claim(lock)  # held by this live process
  with open(lock, 'w') as f:  # left by a process that died
    f.write('999999999')
  assert store.claim(lock)
  store.release(lock)
  assert not os.path.exists(lock)
  store.release(lock)  # twice: nothing to do


def test_schema_2_records_take_the_methods_field_and_a_new_key(tmp_path):
  data = {'name': 'x.npz', 'sha256': 'ab'}
  old = {'optimizers': ['sgd'], 'seed': 1}
  record = dict(
    _record(store.run_key(old, data), schema=2),
    config=old,
    data=data,
    rows=[{'optimizer': 'sgd', 'epoch': 1}],
  )
  path = tmp_path / 'cache.jsonl'
  path.write_text(json.dumps(record) + '\n')
  new = {'methods': ['sgd'], 'seed': 1}  # a cifar configuration: no dropout added
  found = store.TrialStore(str(path)).get(store.run_key(new, data))
  assert found['config'] == new and found['rows'] == [{'method': 'sgd', 'epoch': 1}]
  assert found['schema'] == store.SCHEMA


def test_schema_3_lm_records_take_dropout_0_and_a_new_key(tmp_path):
  data = {'name': 'x.txt', 'sha256': 'ab'}
  lm, cifar = {'context_length': 64, 'seed': 1}, {'methods': ['sgd'], 'seed': 1}
  path = tmp_path / 'cache.jsonl'
  path.write_text(
    ''.join(
      json.dumps(dict(_record(store.run_key(c, data), schema=3), config=c, data=data)) + '\n'
      for c in (lm, cifar)
    )
  )
  cache = store.TrialStore(str(path))
  assert cache.get(store.run_key(dict(lm, dropout=0.0), data))['config']['dropout'] == 0.0
  assert cache.get(store.run_key(lm, data)) is None
  assert cache.get(store.run_key(cifar, data))['config'] == cifar
