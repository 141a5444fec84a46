"""A trial: what its seed fixes, its batches, and the rows it logs."""

import dataclasses
import time

import jax
from jax.sharding import Mesh
import numpy as np

import optax_sbs

from configs.default import Config
from configs.default import ConfigError
import input_pipeline
import parallel


@dataclasses.dataclass
class TrialSetup:
  """What a trial's seed fixes: data subset and statistics, order, keys."""

  x_train: np.ndarray
  y_train: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  steps_per_epoch: int
  total_steps: int
  model_key: jax.Array
  tx_key: jax.Array
  rng: np.random.Generator  # data order and augmentation


def setup_trial(config: Config, data: input_pipeline.Dataset, trial: int) -> TrialSetup:
  """What trial ``trial`` fixes, for every method alike (a paired comparison).

  Seed ``config.seed + trial``: the class-balanced subset, its channel
  statistics, the model's init key and the tx's key (``steps.create_state``),
  and the Generator of data order and augmentation.
  """
  seed = config.seed + trial
  idx = input_pipeline.class_balanced_subset(
    data.y_train, config.train_fraction, np.random.default_rng([seed, 0])
  )
  x_train, y_train = data.x_train[idx], data.y_train[idx]
  if len(x_train) < config.batch_size:
    raise ConfigError(
      f'the training set has {len(x_train)} examples, fewer than one batch of {config.batch_size}'
    )
  mean, std = input_pipeline.channel_stats(x_train)
  steps_per_epoch = len(x_train) // config.batch_size
  model_key, tx_key = jax.random.split(jax.random.key(seed))
  return TrialSetup(
    x_train,
    y_train,
    mean,
    std,
    steps_per_epoch,
    steps_per_epoch * config.epochs,
    model_key,
    tx_key,
    np.random.default_rng([seed, 1]),
  )


def epoch_batches(
  config: Config,
  data: input_pipeline.Dataset,
  setups: list[TrialSetup],
  mesh: Mesh,
  vectorized: bool,
):
  """One epoch of training batches, ``(images, labels, num_images)``.

  Every trial draws its own order and augmentation from its own generator.
  Sequential (one setup): the batch sharded over the mesh, from every
  process. Vectorised: the trials' batches stacked on a leading axis.
  """
  per_trial = [
    input_pipeline.train_batches(t.x_train, t.y_train, config.batch_size, t.rng) for t in setups
  ]
  for batches in zip(*per_trial):
    xs, ys = [], []
    for (xb, yb), t in zip(batches, setups):
      if config.augment:
        xb = input_pipeline.augment(xb, t.rng, flip=data.flip)
      xs.append(xb)
      ys.append(yb)
    if vectorized:
      yield np.stack(xs), np.stack(ys), sum(len(x) for x in xs)
    else:
      yield *parallel.to_global(mesh, xs[0], ys[0]), len(xs[0])


class Throughput:
  """Training images per second over an epoch, leaving out the step that
  compiled the program (the first step of a run), unless it was the only one."""

  def __init__(self, compiles: bool):
    self._compiles = compiles
    self._start = self._first = time.perf_counter()
    self._images = self._all_images = 0

  def step(self, outputs, images: int) -> None:
    self._all_images += images
    if self._compiles:
      jax.block_until_ready(outputs)
      self._start = time.perf_counter()
      self._compiles = False
    else:
      self._images += images

  def per_second(self) -> float:
    """Call after the epoch's outputs are on the host."""
    now = time.perf_counter()
    if self._images:
      return self._images / (now - self._start)
    return self._all_images / (now - self._first)


def epoch_row(
  method: str,
  trial: int,
  epoch: int,
  train_loss,
  train_acc,
  val_loss,
  val_acc,
  images_per_sec: float,
  learning_rate: float,
  opt_state,
) -> dict:
  """The logged row of one epoch of one trial: ``method, trial, epoch,
  train_loss, train_accuracy, val_loss, val_accuracy, images_per_sec,
  learning_rate`` (at the epoch's end), and for SBS
  ``sbs_update_fraction, sbs_mean_count``."""
  row = dict(
    method=method,
    trial=trial,
    epoch=epoch,
    train_loss=float(train_loss),
    train_accuracy=float(train_acc),
    val_loss=float(val_loss),
    val_accuracy=float(val_acc),
    images_per_sec=images_per_sec,
    learning_rate=float(learning_rate),
  )
  row.update(sbs_statistics(opt_state))
  return row


def sbs_statistics(opt_state) -> dict[str, float]:
  """Mean over leaves of SBS's per-leaf update fraction and mean count;
  empty for a method without stochastic batch size."""
  try:
    sbs_state = optax_sbs.find_state(opt_state)
  except ValueError:
    return {}
  return dict(
    sbs_update_fraction=float(np.mean(jax.tree.leaves(sbs_state.update_fraction()))),
    sbs_mean_count=float(np.mean(jax.tree.leaves(sbs_state.mean_count()))),
  )
