"""Data: Tiny Shakespeare from TFDS or a local text file, characters, windows.

Both sources end as the same ``TextData``: the train, validation and test
splits as int32 character ids over a vocabulary built from the train split.
A local file is split exactly as TFDS's ``tiny_shakespeare`` builder splits
the file it downloads (the first 90% of the characters, then half of the rest
each), so ``--dataset path/to/tinyshakespeare.txt`` and ``--dataset
tiny_shakespeare`` give the same splits.

Training batches are random contiguous windows drawn from a numpy Generator
(the run's checkpoint saves its state); evaluation uses fixed windows spread
evenly over a split.
"""

import dataclasses
import os

import numpy as np

TFDS_DATASETS = ('tiny_shakespeare',)
SPLITS = ('train', 'validation', 'test')


class DataError(ValueError):
  """Input data that cannot be used, with a message saying why."""


@dataclasses.dataclass(frozen=True)
class TextData:
  """A character-level corpus, encoded.

  Attributes:
    name: where it came from (TFDS name or file name).
    train: int32 character ids of the train split.
    validation: int32 ids of the validation split.
    test: int32 ids of the test split.
    vocab: the characters, id ``i`` is ``vocab[i]``; an extra last id stands
      for characters that the train split lacks, when the other splits have
      some (``unknown_id``).
    unknown_id: the id of unseen characters, or None when every character of
      the validation and test splits occurs in the train split.
  """

  name: str
  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  vocab: str
  unknown_id: int | None

  @property
  def vocab_size(self) -> int:
    return len(self.vocab) + (self.unknown_id is not None)

  def decode(self, ids) -> str:
    """Ids -> text (the unknown id as U+FFFD)."""
    return ''.join(self.vocab[i] if i < len(self.vocab) else '\ufffd' for i in np.asarray(ids))


def split_text(text: str) -> tuple[str, str, str]:
  """TFDS ``tiny_shakespeare``'s split rule: 90% train, then 5% / 5%.

  ``i = int(0.9 n)`` characters to train; of the rest, ``int(0.5 m)`` to
  validation and the remainder to test.
  """
  i = int(len(text) * 0.9)
  train, rest = text[:i], text[i:]
  j = int(len(rest) * 0.5)
  return train, rest[:j], rest[j:]


def build_vocabulary(train: str, others: tuple[str, ...] = ()) -> tuple[str, int | None]:
  """The sorted characters of ``train``, and the unknown id if ``others``
  hold characters that ``train`` lacks (else None)."""
  vocab = ''.join(sorted(set(train)))
  unseen = set().union(*map(set, others)) - set(vocab) if others else set()
  return vocab, (len(vocab) if unseen else None)


def encode(text: str, vocab: str, unknown_id: int | None) -> np.ndarray:
  """Characters -> int32 ids; characters outside ``vocab`` -> ``unknown_id``."""
  table = {c: i for i, c in enumerate(vocab)}
  fallback = -1 if unknown_id is None else unknown_id
  ids = np.fromiter((table.get(c, fallback) for c in text), np.int32, count=len(text))
  if unknown_id is None and np.any(ids < 0):
    raise DataError('text holds characters outside the vocabulary and there is no unknown id')
  return ids


def from_splits(name: str, train: str, validation: str, test: str) -> TextData:
  """Validates the split texts and encodes them over the train vocabulary."""
  for split, text in zip(SPLITS, (train, validation, test)):
    if not text:
      raise DataError(f'{name}: the {split} split is empty')
  vocab, unknown_id = build_vocabulary(train, (validation, test))
  return TextData(
    name=name,
    train=encode(train, vocab, unknown_id),
    validation=encode(validation, vocab, unknown_id),
    test=encode(test, vocab, unknown_id),
    vocab=vocab,
    unknown_id=unknown_id,
  )


def load_text_file(path: str) -> TextData:
  """Reads a UTF-8 text file and splits it as TFDS's builder does."""
  if not os.path.isfile(path):
    raise DataError(f'no such text file: {path}')
  try:
    # newline='': the characters as they are (TFDS's GFile does not
    # translate line endings either), so the split points match.
    with open(path, encoding='utf-8', newline='') as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 text ({e})') from e
  except OSError as e:
    raise DataError(f'{path}: cannot read it ({e})') from e
  if not text:
    raise DataError(f'{path}: the file is empty')
  return from_splits(os.path.basename(path), *split_text(text))


def _as_text(value) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_tfds(name: str, data_dir: str | None = None, download: bool = True) -> TextData:
  """Loads a TFDS text dataset's splits (one ``text`` feature per example).

  Uses ``tfds.data_source`` (random access, no TensorFlow needed to read);
  ``download=True`` downloads and prepares it as TFDS normally does
  (preparing needs TensorFlow installed).
  """
  if name not in TFDS_DATASETS:
    raise DataError(
      f'unknown dataset {name!r}; choose {", ".join(TFDS_DATASETS)} or a path to a .txt file'
    )
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  texts = []
  for split in SPLITS:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
      # One record at a time: tfds.testing.mock_data's batched access is broken.
      texts.append(''.join(_as_text(source[i]['text']) for i in range(len(source))))
    except Exception as e:  # no network, not prepared, no TensorFlow, ...
      raise DataError(
        f'{name}: TFDS could not load its {split} split ({type(e).__name__}: {e}). '
        'Prepare it with TFDS and pass --data-dir, or pass the text file itself '
        '(offline: --dataset path/to/tinyshakespeare.txt, a copy of the file TFDS '
        'downloads, gives the same splits)'
      ) from e
  return from_splits(name, *texts)


def load(dataset: str, data_dir: str | None = None, download: bool = True) -> TextData:
  """A text file path (``.txt`` or containing a path separator) or a TFDS name."""
  if dataset.endswith('.txt') or os.path.sep in dataset:
    return load_text_file(dataset)
  return load_tfds(dataset, data_dir, download)


def check_lengths(data: TextData, context_length: int) -> None:
  """Every split must hold at least one window of ``context_length + 1``."""
  for split in SPLITS:
    n = len(getattr(data, split))
    if n < context_length + 1:
      raise DataError(
        f'{data.name}: the {split} split has {n} characters, too short for one window of '
        f'{context_length} + 1 (lower --context-length)'
      )


def _windows(tokens: np.ndarray, starts: np.ndarray, context_length: int):
  idx = starts[:, None] + np.arange(context_length + 1)[None, :]
  chunk = tokens[idx]
  return chunk[:, :-1], chunk[:, 1:]


def train_batch(
  tokens: np.ndarray, batch_size: int, context_length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """``batch_size`` random windows: inputs and next-character targets,
  each ``(batch_size, context_length)`` int32."""
  starts = rng.integers(0, len(tokens) - context_length, size=batch_size)
  return _windows(tokens, starts, context_length)


def eval_windows(
  tokens: np.ndarray, num_windows: int, context_length: int
) -> tuple[np.ndarray, np.ndarray]:
  """``num_windows`` fixed windows with evenly spaced starts over the split
  (the first at 0, the last at the end), the same for every run."""
  starts = np.linspace(0, len(tokens) - context_length - 1, num_windows).round().astype(np.int64)
  return _windows(tokens, starts, context_length)
