"""Every trial of a method as one program on an accelerator.

The training loop of ``train.py`` runs on the host: it feeds batches, one
trial after another (or vmapped), and idles a GPU between steps. This loop
keeps the work on the device:

* the training subsets live on the device (uint8, normalised in the step);
* one ``lax.scan`` per epoch runs every step of every trial, the trials
  ``jax.vmap``-ed (one program for all of them), with the state donated;
* the order of each epoch is a permutation drawn on the device from
  ``fold_in(key(seed + trial), epoch)`` (the same for every method, so the
  trials are paired);
* the test set is evaluated in batches by ``lax.map``, every trial at once.

Trial ``t`` has what ``trials.setup_trial`` gives it (its class-balanced
subset, normalisation, init and optimizer key) and trains with the model,
optimizer and schedule of ``train.py``; no augmentation. The methods
advance an epoch each in turn, so a time budget stops them after the same
epoch.
"""

import math
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from configs.default import Config
import steps as steps_lib
import train as train_lib
import trials


def initial_states(config: Config, method: str, data, setups):
  """The stacked train states of every trial, and the shared train step."""
  first = setups[0]
  model = train_lib.create_method_model(config, method, data.num_classes)
  # One tx for all trials; each trial's key goes into its state.
  tx = train_lib.build_tx(config, method, first.total_steps)
  shape = first.x_train.shape[1:]
  states = [steps_lib.create_state(model, tx, shape, t.model_key, t.tx_key) for t in setups]
  return jax.tree.map(lambda *x: jnp.stack(x), *states)


def make_epoch(steps: int, batch_size: int):
  """``epoch(state, x, y, mean, std, keys) -> (state, loss, accuracy)``,
  jitted with the state donated; arrays carry a leading trial axis."""
  step = jax.vmap(steps_lib.train_step)

  def epoch(state, x, y, mean, std, keys):
    n = x.shape[1]
    order = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    order = order[:, : steps * batch_size].reshape(-1, steps, batch_size).swapaxes(0, 1)

    def body(state, idx):  # idx: [trials, batch]
      images = jax.vmap(lambda a, i: a[i])(x, idx)
      labels = jax.vmap(lambda a, i: a[i])(y, idx)
      state, metrics = step(state, images, labels, mean, std)
      return state, (metrics['loss'], metrics['accuracy'])

    state, (loss, accuracy) = lax.scan(body, state, order)
    return state, loss.mean(0), 100.0 * accuracy.mean(0)

  return jax.jit(epoch, donate_argnums=0)


def make_evaluate(eval_batch_size: int):
  """``evaluate(state, x, y, mask, mean, std) -> (loss, accuracy)`` per
  trial over a test set padded to whole batches (``mask`` marks the real
  examples); every trial at once, the batches by ``lax.map``."""
  step = jax.vmap(steps_lib.eval_step, in_axes=(0, None, None, None, 0, 0))

  def evaluate(state, x, y, mask, mean, std):
    batches = (
      x.reshape(-1, eval_batch_size, *x.shape[1:]),
      y.reshape(-1, eval_batch_size),
      mask.reshape(-1, eval_batch_size),
    )
    out = lax.map(lambda b: step(state, b[0], b[1], b[2], mean, std), batches)
    count = jnp.sum(mask)
    return out['loss'].sum(0) / count, 100.0 * out['correct'].sum(0) / count

  return jax.jit(evaluate)


def padded_test_set(data, eval_batch_size: int):
  n = len(data.x_test)
  total = math.ceil(n / eval_batch_size) * eval_batch_size
  pad = total - n
  x = np.concatenate([data.x_test, np.zeros((pad,) + data.x_test.shape[1:], np.uint8)])
  y = np.concatenate([data.y_test, np.zeros(pad, data.y_test.dtype)])
  mask = np.arange(total) < n
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)


class DeviceTrials:
  """Every trial of one method, advanced an epoch at a time."""

  def __init__(self, config: Config, method: str, data):
    setups = [trials.setup_trial(config, data, t) for t in range(config.trials)]
    if len({len(t.x_train) for t in setups}) > 1:
      raise ValueError('the trials need training subsets of one size')
    self.config, self.method = config, method
    self.steps = setups[0].steps_per_epoch
    self.x = jnp.asarray(np.stack([t.x_train for t in setups]))
    self.y = jnp.asarray(np.stack([t.y_train for t in setups]).astype(np.int32))
    self.mean = jnp.asarray(np.stack([t.mean for t in setups]), jnp.float32)
    self.std = jnp.asarray(np.stack([t.std for t in setups]), jnp.float32)
    self.test = padded_test_set(data, config.eval_batch_size)
    self.state = initial_states(config, method, data, setups)
    self.epoch_fn = make_epoch(self.steps, config.batch_size)
    self.evaluate = make_evaluate(config.eval_batch_size)
    self.base_keys = [jax.random.key(config.seed + t) for t in range(config.trials)]
    self.curves: dict[str, list] = {
      k: [] for k in ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
    }
    self.epoch_seconds: list[float] = []
    self.first_epoch_seconds = 0.0

  def run_epoch(self, epoch: int) -> float:
    """Trains epoch ``epoch`` (1-based) of every trial, evaluates; seconds."""
    keys = jnp.stack([jax.random.fold_in(k, epoch) for k in self.base_keys])
    start = time.perf_counter()
    self.state, loss, acc = self.epoch_fn(self.state, self.x, self.y, self.mean, self.std, keys)
    loss, acc = np.asarray(loss), np.asarray(acc)  # waits for the epoch
    seconds = time.perf_counter() - start
    if epoch == 1:
      self.first_epoch_seconds = seconds  # compilation and one epoch
    else:
      self.epoch_seconds.append(seconds)
    out = self.evaluate(self.state, *self.test, self.mean, self.std)
    test_loss, test_acc = (np.asarray(v) for v in out)
    for name, value in zip(self.curves, (loss, acc, test_loss, test_acc)):
      self.curves[name].append([float(v) for v in value])
    return time.perf_counter() - start

  def result(self) -> dict:
    step_ms = (
      1e3 * float(np.median(self.epoch_seconds)) / self.steps
      if self.epoch_seconds
      else float('nan')
    )
    return dict(
      method=self.method,
      epochs=len(self.curves['test_accuracy']),
      steps_per_epoch=self.steps,
      train_examples=int(self.x.shape[1]),
      curves=self.curves,
      step_ms=step_ms,
      first_epoch_seconds=self.first_epoch_seconds,
    )


def run_on_device(
  config: Config,
  data,
  budget_seconds: float | None,
  log=print,
  on_epoch=None,
  methods: tuple[str, ...] = ('sgd', 'sbs'),
):
  """The methods, an epoch of each in turn, so that a time budget stops them
  after the same epoch (paired); ``on_epoch(results)`` after every epoch."""
  runs = {m: DeviceTrials(config, m, data) for m in methods}
  start = time.perf_counter()
  results = {}
  for epoch in range(1, config.epochs + 1):
    for method, run in runs.items():
      seconds = run.run_epoch(epoch)
      log(
        f'  epoch {epoch}/{config.epochs} {method}: train '
        f'{np.mean(run.curves["train_accuracy"][-1]):.1f}% test '
        f'{np.mean(run.curves["test_accuracy"][-1]):.1f}% ({seconds:.2f} s)'
      )
    results = {m: r.result() for m, r in runs.items()}
    if on_epoch is not None:
      on_epoch(results)
    elapsed = time.perf_counter() - start
    # The first epoch compiles: what an epoch costs is known from the second.
    per_epoch = 0.0 if epoch == 1 else sum(float(np.median(r.epoch_seconds)) for r in runs.values())
    if (
      budget_seconds is not None and epoch < config.epochs and elapsed + per_epoch > budget_seconds
    ):
      log(f'  time budget of {budget_seconds:g} s reached: stopped after epoch {epoch}')
      break
  return results
