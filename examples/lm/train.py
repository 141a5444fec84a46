"""Training of the NNX transformer: the methods' txs, the loop, the trials.

The entry point is :func:`run` (every method x trial of a configuration);
:func:`run_trial` trains one. The trial's seed fixes the model's
initialisation, the training windows and the tx's key, so the methods of one
trial differ only in the method (a paired comparison). Losses are
cross-entropies in nats per character. Summaries are in ``results``.
"""

from collections.abc import Callable
import dataclasses
import json
import time
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

import checkpointing
from configs.default import Config
from configs.default import ConfigError
import input_pipeline
import methods
import models
import steps


def validate(config: Config) -> None:
  """Raises ``ConfigError`` naming the first field that cannot run."""
  unknown = [m for m in config.methods if m not in methods.METHODS]
  if unknown or not config.methods:
    raise ConfigError(
      f'unknown method {", ".join(unknown) or "(none)"}; choose from {", ".join(methods.METHODS)}'
    )
  for name in (
    'num_layers',
    'num_heads',
    'embed_dim',
    'mlp_ratio',
    'context_length',
    'batch_size',
    'steps',
    'eval_interval',
    'eval_batches',
    'trials',
    'accumulate_steps',
  ):
    if getattr(config, name) < 1:
      raise ConfigError(f'{name} must be at least 1, got {getattr(config, name)}')
  if config.embed_dim % config.num_heads:
    raise ConfigError(f'num_heads {config.num_heads} does not divide embed_dim {config.embed_dim}')
  if not 0 <= config.warmup_steps < config.steps:
    raise ConfigError(f'warmup_steps must lie in [0, steps), got {config.warmup_steps}')
  if not config.learning_rate > 0:
    raise ConfigError(f'learning_rate must be positive, got {config.learning_rate}')
  for name in ('end_learning_rate_ratio', 'probability', 'score_decay'):
    if not 0.0 <= getattr(config, name) <= 1.0:
      raise ConfigError(f'{name} must lie in [0, 1], got {getattr(config, name)}')
  for name in ('b1', 'b2', 'momentum_decay'):
    if not 0.0 <= getattr(config, name) < 1.0:
      raise ConfigError(f'{name} must lie in [0, 1), got {getattr(config, name)}')
  if config.sbs_probability is not None and not 0.0 <= config.sbs_probability <= 1.0:
    raise ConfigError(f'sbs_probability must lie in [0, 1], got {config.sbs_probability}')
  if not config.tau > 0:
    raise ConfigError(f'tau must be positive, got {config.tau}')
  if not 0.0 <= config.dropout < 1.0:
    raise ConfigError(f'dropout must lie in [0, 1), got {config.dropout}')
  if config.weight_decay < 0 or config.clip_norm < 0:
    raise ConfigError('weight_decay and clip_norm must not be negative')
  if config.granularity not in ('leaf', 'element'):
    raise ConfigError(f"granularity must be 'leaf' or 'element', got {config.granularity!r}")


def learning_rate_schedule(config: Config) -> optax.Schedule:
  """Linear warm-up from 0 to ``learning_rate``, then a cosine down to
  ``end_learning_rate_ratio * learning_rate`` at the last step."""
  return optax.warmup_cosine_decay_schedule(
    0.0,
    config.learning_rate,
    config.warmup_steps,
    decay_steps=config.steps,
    end_value=config.learning_rate * config.end_learning_rate_ratio,
  )


def build_tx(config: Config, method: str) -> optax.GradientTransformation:
  """The method's tx (``methods.METHODS``) after gradient clipping. Built with
  ``methods.BUILD_KEY``: :func:`create_state` keys its state by trial."""
  tx = methods.METHODS[method].tx(config, learning_rate_schedule(config))
  if config.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return optax.chain(tx)


class TrialSetup(NamedTuple):
  """What one trial fixes, for every method alike (a paired comparison)."""

  model_key: jax.Array
  tx_key: jax.Array
  rng: np.random.Generator  # the training windows


def setup_trial(config: Config, trial: int) -> TrialSetup:
  """What trial ``trial`` fixes (seed ``config.seed + trial``): the model's
  init key, the tx's key (:func:`create_state`) and the Generator of the
  training windows."""
  seed = config.seed + trial
  model_key, tx_key = jax.random.split(jax.random.key(seed))
  return TrialSetup(model_key, tx_key, np.random.default_rng([seed, 1]))


# One tx per configuration and method, shared by its trials: the trial's key
# goes into the state instead (``create_state``), so the trials run the train step
# that nnx.jit compiled for the first one (it caches on the tx object, and a
# new one per trial would compile again). The last few are kept: a process
# that trains many configurations in turn (a study) does not hold them all.
_TXS: dict[tuple[str, str], optax.GradientTransformation] = {}
_TXS_KEPT = 4
# Fields that do not enter a tx (``methods``: the method is named apart).
NOT_TX_FIELDS = (
  'dataset',
  'data_dir',
  'download',
  'methods',
  'eval_interval',
  'eval_batches',
  'trials',
  'seed',
  'workdir',
)


def shared_tx(config: Config, method: str) -> optax.GradientTransformation:
  """``build_tx``, one object for every trial of a configuration and method."""
  fields = dataclasses.asdict(config)
  for name in NOT_TX_FIELDS:
    fields.pop(name)
  cache_key = (json.dumps(fields, sort_keys=True, default=str), method)
  if cache_key not in _TXS:
    while len(_TXS) >= _TXS_KEPT:
      del _TXS[next(iter(_TXS))]  # the oldest
    _TXS[cache_key] = build_tx(config, method)
  return _TXS[cache_key]


def with_tx_key(opt_state, key: jax.Array):
  """``opt_state`` with every PRNG key in it replaced by ``key``.

  The one way a trial's key reaches the tx's state (``methods`` builds every
  tx with ``methods.BUILD_KEY``): the library's transformations read their
  key only in ``init``, where it becomes the state's, so the result is the
  state the tx built with ``key`` would start from. A no-op for a state
  without keys.
  """
  is_key = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
  return jax.tree.map(lambda x: key if is_key(x) else x, opt_state)


def create_state(config: Config, method: str, vocab_size: int, model_key, tx_key):
  """A fresh ``(model, nnx.Optimizer)`` for one run: the model initialised
  from ``model_key``, the shared tx's state keyed by ``tx_key``
  (:func:`with_tx_key`)."""
  # The dropout stream (used only with --dropout) derives from the model's key.
  rngs = nnx.Rngs(params=model_key, dropout=jax.random.fold_in(model_key, 1))
  model = models.create_model(config, vocab_size, rngs)
  optimizer = nnx.Optimizer(model, shared_tx(config, method), wrt=nnx.Param)
  nnx.update(optimizer, with_tx_key(nnx.state(optimizer), tx_key))
  # Committed to the device, as Orbax restores them: a resumed run then
  # finds the train step compiled (nnx.jit tells the two apart).
  device = jax.devices()[0]
  for node in (model, optimizer):
    nnx.update(node, jax.device_put(nnx.state(node), device))
  return model, optimizer


class Throughput:
  """Training tokens per second over an interval, leaving out the step that
  compiled the program (the first step of a run or of a resumed run),
  unless it was the only one."""

  def __init__(self, compiles: bool):
    self._compiles = compiles
    self._start = self._first = time.perf_counter()
    self._tokens = self._all_tokens = 0

  def step(self, outputs, tokens: int) -> None:
    self._all_tokens += tokens
    if self._compiles:
      jax.block_until_ready(outputs)
      self._start = time.perf_counter()
      self._compiles = False
    else:
      self._tokens += tokens

  def per_second(self) -> float:
    """Call after the interval's outputs are on the host."""
    now = time.perf_counter()
    if self._tokens:
      return self._tokens / (now - self._start)
    return self._all_tokens / (now - self._first)


def family_statistics(optimizer: nnx.Optimizer) -> dict[str, float]:
  """The statistics of the last step of the optimizer's stochastic update
  masks (``optax_sbs.layer_statistics``), each the mean over the layers of
  every parameter: ``sbs_update_fraction`` and ``sbs_mean_count`` for SBS,
  ``{masked_updates,magma}_kept_fraction`` and ``magma_score``; empty for an
  optimizer without masks. Read outside the jitted step, so training
  computes what it computes without them."""
  try:
    per_layer = optax_sbs.layer_statistics(nnx.state(optimizer))
  except ValueError:  # no state of the family
    return {}
  grouped: dict[str, list[float]] = {}
  for key, value in per_layer.items():
    kind, statistic, _ = key.split('/', 2)
    grouped.setdefault(f'{kind}_{statistic}', []).append(float(value))
  return {name: float(np.mean(values)) for name, values in grouped.items()}


def run_trial(
  config: Config,
  method: str,
  data: input_pipeline.TextData,
  trial: int,
  progress: Callable[[dict], None] | None = None,
  checkpointer: checkpointing.RunCheckpointer | None = None,
) -> list[dict]:
  """Trains ``method`` for one trial; returns one row per evaluation.

  A row: ``method, trial, step, train_loss`` (mean over the steps since the
  previous row, in training mode), ``train_eval_loss`` (on fixed training
  windows, evaluated as the validation loss is), ``val_loss`` (on fixed
  validation windows),
  ``tokens_per_sec`` (without the compiling step), ``learning_rate`` (of
  the row's last step), and the masks' statistics (:func:`family_statistics`);
  the last row adds ``test_loss`` (fixed test windows).

  With a ``checkpointer``, the run starts from its latest checkpoint (if
  any) and saves one after every evaluation, so a resumed run ends with the
  rows of an uninterrupted one (timings aside).
  """
  model_key, tx_key, rng = setup_trial(config, trial)
  model, optimizer = create_state(config, method, data.vocab_size, model_key, tx_key)
  schedule = learning_rate_schedule(config)
  num_windows = config.eval_batches * config.batch_size
  val_windows = input_pipeline.eval_windows(data.validation, num_windows, config.context_length)
  train_windows = input_pipeline.eval_windows(data.train, num_windows, config.context_length)
  rows: list[dict] = []
  if checkpointer is not None:
    restored = checkpointer.restore(model, optimizer)
    if restored is not None:
      rows, rng.bit_generator.state = restored
      for row in rows if progress is not None else ():
        progress(row)
  step = rows[-1]['step'] if rows else 0
  tokens_per_step = config.batch_size * config.context_length
  compiles = True
  while step < config.steps:
    end = min(config.steps, (step // config.eval_interval + 1) * config.eval_interval)
    throughput = Throughput(compiles)
    compiles = False
    losses = []
    for _ in range(step, end):
      inputs, targets = input_pipeline.train_batch(
        data.train, config.batch_size, config.context_length, rng
      )
      loss = steps.train_step(model, optimizer, inputs, targets)
      throughput.step(loss, tokens_per_step)
      losses.append(loss)
    train_loss = float(np.mean(jax.device_get(losses)))
    tokens_per_sec = throughput.per_second()
    step = end
    row = dict(
      method=method,
      trial=trial,
      step=step,
      train_loss=train_loss,
      train_eval_loss=steps.evaluate(model, train_windows, config.batch_size),
      val_loss=steps.evaluate(model, val_windows, config.batch_size),
      tokens_per_sec=tokens_per_sec,
      learning_rate=float(schedule(step - 1)),
      **family_statistics(optimizer),
    )
    if step == config.steps:
      test_windows = input_pipeline.eval_windows(data.test, num_windows, config.context_length)
      row['test_loss'] = steps.evaluate(model, test_windows, config.batch_size)
    rows.append(row)
    if checkpointer is not None:
      checkpointer.save(step, model, optimizer, rows, rng.bit_generator.state)
    if progress is not None:
      progress(row)
  return rows


def run(
  config: Config,
  data: input_pipeline.TextData | Callable[[], input_pipeline.TextData],
  progress_factory: Callable[[str, int], Callable[[dict], None]] | None = None,
  checkpoint: bool = False,
  resume: bool = False,
) -> list[dict]:
  """All methods x trials, trial-major so paired runs sit together.

  Args:
    config: the run's configuration.
    data: the corpus, or a function that loads it: called once the
      configuration is known to run, so a configuration that cannot fails
      before any download.
    progress_factory: ``(method, trial) -> callable(row)``, per run.
    checkpoint: save an Orbax checkpoint after every evaluation of every run
      in ``config.workdir``.
    resume: continue from the checkpoints in ``config.workdir`` (made by the
      same configuration); finished runs are not repeated.
  """
  validate(config)  # the one place the example validates its configuration
  if callable(data):
    data = data()
  input_pipeline.check_lengths(data, config.context_length)
  if checkpoint or resume:
    checkpointing.prepare_workdir(config.workdir, config, resume)
  rows = []
  for trial in range(config.trials):
    for method in config.methods:
      progress = progress_factory(method, trial) if progress_factory else None
      checkpointer = (
        checkpointing.RunCheckpointer(config.workdir, method, trial)
        if checkpoint or resume
        else None
      )
      try:
        rows += run_trial(config, method, data, trial, progress, checkpointer)
      finally:
        if checkpointer is not None:
          checkpointer.close()
  return rows
