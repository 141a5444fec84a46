"""Data: TFDS by name or a local ``.npz``, subsets, normalisation, augmentation, batches.

Both sources end as the same in-memory ``Dataset`` of uint8 NHWC images and
int32 labels, so one batching path serves both. Images are small (CIFAR-10,
SVHN, STL-10), so the whole split lives in host memory.
"""

from collections.abc import Iterator
import dataclasses
import os

import numpy as np

TFDS_DATASETS = {
  # name: (train split, test split, horizontal flip is a valid augmentation)
  'cifar10': ('train', 'test', True),
  'svhn_cropped': ('train', 'test', False),  # digits: no flip
  'stl10': ('train', 'test', True),
}
NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')


class DataError(ValueError):
  """Input data that cannot be used, with a message saying why."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  x_train: np.ndarray  # uint8 (N, H, W, C)
  y_train: np.ndarray  # int32 (N,)
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  flip: bool  # whether horizontal flips are label-preserving


def _check_split(name, x, y, split):
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise DataError(
      f'{name}: x_{split} must have shape (N, H, W, C) with C in (1, 3), got {x.shape}'
    )
  if y.ndim != 1 or len(y) != len(x):
    raise DataError(f'{name}: y_{split} must have shape ({len(x)},), got {y.shape}')
  if not np.issubdtype(y.dtype, np.integer):
    raise DataError(f'{name}: y_{split} must hold integer labels, got {y.dtype}')
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    raise DataError(f'{name}: x_{split} contains NaN or Inf pixels')
  if len(y) and y.min() < 0:
    raise DataError(f'{name}: y_{split} has negative labels')


def _to_uint8(name, x):
  if x.dtype == np.uint8:
    return x
  if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0:
    x = x * 255.0
  if x.size and (x.min() < 0 or x.max() > 255):
    raise DataError(f'{name}: pixel values must lie in [0, 255]')
  return np.round(x).astype(np.uint8)


def from_arrays(name, x_train, y_train, x_test, y_test, flip=True, num_classes=None) -> Dataset:
  """Validates arrays and builds a Dataset (labels 0..num_classes-1)."""
  x_train, x_test = np.asarray(x_train), np.asarray(x_test)
  y_train, y_test = np.asarray(y_train), np.asarray(y_test)
  _check_split(name, x_train, y_train, 'train')
  _check_split(name, x_test, y_test, 'test')
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
      f'{name}: train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ in shape'
    )
  if len(y_train) == 0:
    raise DataError(f'{name}: the training split is empty')
  inferred = num_classes is None
  if inferred:
    num_classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
  if y_train.max() >= num_classes or (len(y_test) and y_test.max() >= num_classes):
    raise DataError(f'{name}: labels must lie in [0, {num_classes})')
  unseen = np.setdiff1d(y_test, y_train) if inferred else ()
  if len(unseen):
    raise DataError(
      f'{name}: y_test has labels that never occur in y_train '
      f'({", ".join(map(str, unseen[:10]))}): labels out of range?'
    )
  return Dataset(
    name=name,
    x_train=_to_uint8(name, x_train),
    y_train=y_train.astype(np.int32),
    x_test=_to_uint8(name, x_test),
    y_test=y_test.astype(np.int32),
    num_classes=num_classes,
    flip=flip,
  )


def synthetic(
  n_train: int = 256,
  n_test: int = 100,
  hw: int = 32,
  num_classes: int = 4,
  seed: int = 0,
  name: str = 'synthetic',
  flip: bool = True,
) -> Dataset:
  """Learnable made-up images, for checks that need no real data: the class
  sets an image's mean colour, under Gaussian noise."""
  rng = np.random.default_rng(seed)
  y_train, y_test = np.arange(n_train) % num_classes, np.arange(n_test) % num_classes

  def images(y):
    base = (y[:, None, None, None] * 60 + 20).astype(np.float64)
    return np.clip(base + rng.normal(0, 30, (len(y), hw, hw, 3)), 0, 255).astype(np.uint8)

  return from_arrays(name, images(y_train), y_train, images(y_test), y_test, flip=flip)


def load_npz(path: str, flip: bool = True) -> Dataset:
  """Loads ``x_train, y_train, x_test, y_test`` from a ``.npz`` file."""
  if not os.path.isfile(path):
    raise DataError(f'no such .npz file: {path}')
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in NPZ_KEYS if k not in data.files]
      if missing:
        raise DataError(
          f'{path}: missing arrays {", ".join(missing)} (a dataset .npz '
          f'needs {", ".join(NPZ_KEYS)}; it has {", ".join(data.files)})'
        )
      arrays = {k: data[k] for k in NPZ_KEYS}
  except DataError:
    raise
  except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError, ...
    raise DataError(f'{path}: not a readable .npz file ({e})') from e
  return from_arrays(os.path.basename(path), **arrays, flip=flip)


def load_tfds(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
  """Loads a TFDS image-classification dataset into memory.

  Uses ``tfds.data_source`` (random access, no TensorFlow needed to read).
  ``download=True`` downloads and prepares the dataset as TFDS normally does
  (preparing may need TensorFlow installed).
  """
  if name not in TFDS_DATASETS:
    raise DataError(
      f'unknown dataset {name!r}; choose one of {", ".join(TFDS_DATASETS)} or a path to a .npz file'
    )
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  train_split, test_split, flip = TFDS_DATASETS[name]
  splits = {}
  for split in (train_split, test_split):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except Exception as e:  # no network, not prepared, missing TFDS extras, ...
      raise DataError(
        f'{name}: TFDS could not load it ({type(e).__name__}: {e}). Prepare it '
        'with TFDS and pass --data-dir, or pass a .npz path with arrays '
        'x_train, y_train, x_test, y_test'
      ) from e
    # One record at a time: tfds.testing.mock_data's batched access is broken.
    examples = [source[i] for i in range(len(source))]
    splits[split] = (
      np.stack([np.asarray(e['image']) for e in examples]),
      np.asarray([e['label'] for e in examples]),
    )
  builder = tfds.builder(name, data_dir=data_dir)
  num_classes = builder.info.features['label'].num_classes
  (x_train, y_train), (x_test, y_test) = splits[train_split], splits[test_split]
  return from_arrays(name, x_train, y_train, x_test, y_test, flip=flip, num_classes=num_classes)


def load(dataset: str, data_dir: str | None = None, download: bool = True) -> Dataset:
  """A ``.npz`` path or a TFDS name."""
  if dataset.endswith('.npz') or os.path.sep in dataset:
    return load_npz(dataset)
  return load_tfds(dataset, data_dir, download)


def class_balanced_subset(
  labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
  """Indices of a random subset with ``fraction`` of every class (sorted)."""
  if not 0.0 < fraction <= 1.0:
    raise DataError(f'train fraction must lie in (0, 1], got {fraction}')
  if fraction == 1.0:
    return np.arange(len(labels))
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    take = int(round(fraction * len(members)))
    chosen.append(rng.choice(members, size=take, replace=False))
  indices = np.sort(np.concatenate(chosen))
  if len(indices) == 0:
    raise DataError(f'train fraction {fraction} leaves no training examples')
  return indices


def channel_stats(x_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of images scaled to [0, 1]."""
  x = x_uint8.reshape(-1, x_uint8.shape[-1]).astype(np.float64) / 255.0
  return x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-3).astype(np.float32)


def normalize(x_uint8, mean, std) -> np.ndarray:
  return ((x_uint8.astype(np.float32) / 255.0) - mean) / std


def augment(
  x: np.ndarray, rng: np.random.Generator, padding: int = 4, flip: bool = True
) -> np.ndarray:
  """Random crop after zero padding, and random horizontal flip, per image."""
  n, h, w, _ = x.shape
  if padding:
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, n)
    dx = rng.integers(0, 2 * padding + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    x = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
  if flip:
    flips = rng.random(n) < 0.5
    x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
  return x


def train_batches(
  x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled full batches (the remainder is dropped)."""
  order = rng.permutation(len(x))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    idx = order[start : start + batch_size]
    yield x[idx], y[idx]


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
  """Fixed-size batches over all examples; the last one padded, with a mask."""
  for start in range(0, len(x), batch_size):
    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
    valid = len(xb)
    if valid < batch_size:
      pad = batch_size - valid
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
    mask = np.arange(batch_size) < valid
    yield xb, yb, mask
