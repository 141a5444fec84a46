"""input_pipeline.py: the splits TFDS makes, vocabularies, errors, windows."""

import os
import sys
import types

import numpy as np
import pytest

import input_pipeline


def _tfds_builder_splits(monkeypatch, tmp_path, text):
  """The splits TFDS's own tiny_shakespeare builder makes of ``text``
  (TensorFlow's file API replaced by Python's, as it is not installed)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  builder_cls = tfds.builder_cls('tiny_shakespeare')
  module = sys.modules[builder_cls.__module__]
  gfile = types.SimpleNamespace(
    isdir=os.path.isdir,
    GFile=lambda path, mode: open(path, mode, encoding='utf-8', newline=''),
  )
  monkeypatch.setattr(module, 'tf', types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile)))
  path = tmp_path / 'input.txt'
  path.write_text(text, encoding='utf-8')

  class DownloadManager:
    def download(self, url):
      assert url.endswith('input.txt')
      return str(path)

  builder = builder_cls(data_dir=str(tmp_path / 'tfds'))
  generators = builder._split_generators(DownloadManager())
  out = {}
  for generator in generators:
    ((_, example),) = builder._generate_examples(**generator.gen_kwargs)
    out[str(generator.name)] = example['text']
  return out


@pytest.mark.parametrize('n', [1001, 1237])
def test_local_file_splits_as_the_tfds_builder_does(monkeypatch, tmp_path, n):
  # Characters, not bytes: 'é' is two bytes in UTF-8.
  text = ''.join(np.random.default_rng(n).choice(list('abcé \n'), n))
  want = _tfds_builder_splits(monkeypatch, tmp_path, text)
  path = tmp_path / 'local.txt'
  path.write_text(text, encoding='utf-8')
  data = input_pipeline.load(str(path))
  got = {
    'train': data.decode(data.train),
    'validation': data.decode(data.validation),
    'test': data.decode(data.test),
  }
  assert got == want
  assert sum(map(len, got.values())) == n
  assert data.vocab == ''.join(sorted(set(want['train'])))


def test_local_tiny_shakespeare_splits(local_data):
  """A local copy of the file TFDS's tiny_shakespeare downloads gives TFDS's splits."""
  data = input_pipeline.load(local_data('tinyshakespeare.txt'))
  assert (len(data.train), len(data.validation), len(data.test)) == (1003854, 55770, 55770)
  assert data.vocab_size == 65 and data.unknown_id is None
  assert data.decode(data.train[:14]) == 'First Citizen:'


def test_tfds_loader_with_mock_data(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=3, data_dir=str(tmp_path)):
    data = input_pipeline.load('tiny_shakespeare', data_dir=str(tmp_path), download=False)
    want = {}
    for split in ('train', 'validation', 'test'):
      source = tfds.data_source('tiny_shakespeare', split=split, data_dir=str(tmp_path))
      want[split] = ''.join(str(source[i]['text']) for i in range(len(source)))
  assert data.name == 'tiny_shakespeare'
  assert data.decode(data.train) == want['train'] and len(data.train) > 0
  assert data.decode(data.validation) == want['validation']
  assert data.decode(data.test) == want['test']
  assert data.train.dtype == np.int32


def test_unseen_characters_get_the_unknown_id():
  data = input_pipeline.from_splits('t', 'abcab', 'abz', 'ca')
  assert data.vocab == 'abc' and data.unknown_id == 3 and data.vocab_size == 4
  np.testing.assert_array_equal(data.validation, [0, 1, 3])
  assert input_pipeline.from_splits('t', 'abc', 'ab', 'c').unknown_id is None


def test_data_errors(tmp_path):
  ip = input_pipeline
  with pytest.raises(ip.DataError, match='no such text file'):
    ip.load(str(tmp_path / 'missing.txt'))
  empty = tmp_path / 'empty.txt'
  empty.write_text('')
  with pytest.raises(ip.DataError, match='the file is empty'):
    ip.load(str(empty))
  binary = tmp_path / 'binary.txt'
  binary.write_bytes(b'\xff\xfe\x00abc')
  with pytest.raises(ip.DataError, match='not UTF-8'):
    ip.load(str(binary))
  short = tmp_path / 'short.txt'
  short.write_text('x' * 100)  # 90 / 5 / 5 characters
  data = ip.load(str(short))
  ip.check_lengths(data, 4)
  with pytest.raises(ip.DataError, match='validation split has 5 characters, too short'):
    ip.check_lengths(data, 8)
  with pytest.raises(ip.DataError, match="unknown dataset 'ptb'"):
    ip.load('ptb')
  # Nothing prepared in data_dir and no download: TFDS fails, the message says what to do.
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(
    ip.DataError, match='(?s)TFDS could not load its train split.*tinyshakespeare.txt'
  ):
    ip.load('tiny_shakespeare', data_dir=str(tmp_path / 'tfds'), download=False)


def test_windows():
  ip = input_pipeline
  tokens = np.arange(100, dtype=np.int32)
  x, y = ip.train_batch(tokens, 5, 8, np.random.default_rng(0))
  assert x.shape == y.shape == (5, 8)
  np.testing.assert_array_equal(y, x + 1)  # next character, contiguous
  np.testing.assert_array_equal(np.diff(x, axis=1), 1)
  a, b = ip.train_batch(tokens, 5, 8, np.random.default_rng(0)), (x, y)
  np.testing.assert_array_equal(a[0], b[0])  # the generator fixes the batch
  x, y = ip.eval_windows(tokens, 4, 8)
  np.testing.assert_array_equal(x[:, 0], [0, 30, 61, 91])  # evenly spread, first and last
  assert y[-1, -1] == 99
