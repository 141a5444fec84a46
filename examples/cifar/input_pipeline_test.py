"""input_pipeline.py: sources, subsets, augmentation, batches."""

import os

import numpy as np
import pytest

import input_pipeline as ip


def write_npz(path, n_train=40, n_test=12, hw=8, classes=4, **override):
  rng = np.random.default_rng(0)
  arrays = dict(
    x_train=rng.integers(0, 256, (n_train, hw, hw, 3), dtype=np.uint8),
    y_train=np.arange(n_train) % classes,
    x_test=rng.integers(0, 256, (n_test, hw, hw, 3), dtype=np.uint8),
    y_test=np.arange(n_test) % classes,
  )
  arrays.update(override)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return str(path)


def test_npz_round_trip(tmp_path):
  data = ip.load(write_npz(tmp_path / 'd.npz'))
  assert data.x_train.shape == (40, 8, 8, 3) and data.x_train.dtype == np.uint8
  assert data.y_train.dtype == np.int32 and data.num_classes == 4
  assert data.flip


def test_embedded_sample_is_valid():
  from configs.default import EMBEDDED_SAMPLE  # pylint: disable=g-import-not-at-top

  assert os.path.getsize(EMBEDDED_SAMPLE) < 15 * 2**20
  data = ip.load(EMBEDDED_SAMPLE)
  assert data.x_train.shape == (2000, 32, 32, 3)
  assert data.x_test.shape == (500, 32, 32, 3)
  assert data.num_classes == 10
  assert np.all(np.bincount(data.y_train) > 150)


@pytest.mark.parametrize(
  'override,match',
  [
    (dict(y_test=None), 'missing arrays y_test'),
    (dict(x_train=np.zeros((40, 8, 8))), r'x_train must have shape \(N, H, W, C\)'),
    (dict(y_train=np.zeros(39, int)), r'y_train must have shape \(40,\)'),
    (dict(y_train=np.full(40, -1)), 'negative labels'),
    (dict(y_test=np.full(12, 10)), 'never occur in y_train'),
    (dict(y_train=np.zeros(40, np.float32)), 'integer labels'),
    (dict(x_train=np.full((40, 8, 8, 3), np.nan, np.float32)), 'NaN or Inf'),
    (dict(x_test=np.zeros((12, 4, 4, 3), np.uint8)), 'differ in shape'),
    (
      dict(x_train=np.zeros((0, 8, 8, 3), np.uint8), y_train=np.zeros(0, int)),
      'training split is empty',
    ),
  ],
)
def test_bad_npz(tmp_path, override, match):
  with pytest.raises(ip.DataError, match=match):
    ip.load(write_npz(tmp_path / 'd.npz', **override))


def test_missing_and_truncated_npz(tmp_path):
  with pytest.raises(ip.DataError, match='no such .npz file'):
    ip.load(str(tmp_path / 'nope.npz'))
  path = write_npz(tmp_path / 'd.npz')
  blob = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(blob[: len(blob) // 2])
  with pytest.raises(ip.DataError, match='not a readable .npz'):
    ip.load(path)


def test_unknown_tfds_name():
  with pytest.raises(ip.DataError, match="unknown dataset 'mnist'"):
    ip.load('mnist')


@pytest.mark.parametrize(
  'name,shape,flip',
  [
    ('cifar10', (32, 32, 3), True),
    ('svhn_cropped', (32, 32, 3), False),
    ('stl10', (96, 96, 3), True),
  ],
)
def test_tfds_loaders_with_mock_data(name, shape, flip, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
    data = ip.load(name, data_dir=str(tmp_path), download=False)
  assert data.x_train.shape == (12,) + shape
  assert data.x_test.shape == (12,) + shape
  assert data.x_train.dtype == np.uint8
  assert data.num_classes == 10
  assert data.flip == flip
  assert data.y_train.min() >= 0 and data.y_train.max() < 10


def test_class_balanced_subset():
  labels = np.repeat(np.arange(10), 100)
  a = ip.class_balanced_subset(labels, 0.125, np.random.default_rng(1))
  b = ip.class_balanced_subset(labels, 0.125, np.random.default_rng(2))
  np.testing.assert_array_equal(np.bincount(labels[a]), 12)  # round(12.5)
  assert len(np.unique(a)) == len(a)
  assert not np.array_equal(a, b)  # drawn per trial seed
  np.testing.assert_array_equal(
    a, ip.class_balanced_subset(labels, 0.125, np.random.default_rng(1))
  )
  np.testing.assert_array_equal(ip.class_balanced_subset(labels, 1.0, None), np.arange(1000))
  for bad in (0.0, -0.5, 1.5):
    with pytest.raises(ip.DataError, match=r'train fraction must lie in \(0, 1\]'):
      ip.class_balanced_subset(labels, bad, np.random.default_rng(0))
  with pytest.raises(ip.DataError, match='leaves no training examples'):
    ip.class_balanced_subset(np.arange(10), 0.01, np.random.default_rng(0))


def test_augment_crops_and_flips():
  rng = np.random.default_rng(0)
  x = rng.integers(1, 256, (64, 8, 8, 3), dtype=np.uint8)
  out = ip.augment(x, rng, padding=2, flip=False)
  assert out.shape == x.shape and out.dtype == np.uint8
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(len(x)):  # every output is a window of the padded input
    windows = [padded[i, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    assert any(np.array_equal(out[i], w) for w in windows)
  assert np.any(out == 0)  # some crops show padding
  flipped = ip.augment(x, np.random.default_rng(1), padding=0, flip=True)
  is_flip = [np.array_equal(flipped[i], x[i, :, ::-1]) for i in range(64)]
  is_same = [np.array_equal(flipped[i], x[i]) for i in range(64)]
  assert all(f or s for f, s in zip(is_flip, is_same))
  assert 10 < sum(is_flip) < 54


def test_channel_stats_and_normalize():
  x = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
  mean, std = ip.channel_stats(x)
  z = ip.normalize(x, mean, std)
  np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-4)


def test_batches():
  x, y = np.arange(10)[:, None], np.arange(10)
  batches = list(ip.train_batches(x, y, 4, np.random.default_rng(0)))
  assert len(batches) == 2 and all(len(b[0]) == 4 for b in batches)
  seen = np.concatenate([b[1] for b in batches])
  assert len(np.unique(seen)) == 8
  ev = list(ip.eval_batches(x, y, 4))
  assert [m.sum() for _, _, m in ev] == [4, 4, 2]
  assert all(len(b) == 4 for b, _, _ in ev)
