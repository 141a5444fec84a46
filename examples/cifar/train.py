"""Training and evaluation: the methods' txs, the loops over epochs, trials and methods.

The entry point is :func:`run` (every method x trial of a configuration);
:func:`run_trial` trains one, :func:`run_trials_vectorized` all trials of
one method at once. The steps are in ``steps``, a trial's set-up and rows in
``trials``, the device mesh in ``parallel``, summaries in ``results``.
"""

from collections.abc import Callable
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

import optax_sbs

import checkpointing
from configs.default import PAPER_MOMENTUM
from configs.default import Config
from configs.default import ConfigError
import input_pipeline
import methods
import models
import parallel
import steps
import trials

# SBS under momentum: Algorithm 2 (the wrapper) or SBS chained before SGD.
SBS_MOMENTUM = ('frozen', 'chain')


def default_momentum(batch_size: int) -> float:
  """The paper's pairing; other sizes take the pairing of the nearest size."""
  nearest = min(PAPER_MOMENTUM, key=lambda b: abs(math.log(batch_size / b)))
  return PAPER_MOMENTUM[nearest]


def validate(config: Config, num_devices: int) -> None:
  """Raises ``ConfigError`` naming the first field that cannot run on
  ``num_devices`` devices (and this run's processes)."""
  unknown = [m for m in config.methods if m not in methods.METHODS]
  if unknown or not config.methods:
    raise ConfigError(
      f'unknown method {", ".join(unknown) or "(none)"}; choose from {", ".join(methods.METHODS)}'
    )
  if config.model not in models.MODELS:
    raise ConfigError(f'unknown model {config.model!r}; choose one of {", ".join(models.MODELS)}')
  if not 0.0 < config.train_fraction <= 1.0:
    raise ConfigError(f'train fraction must lie in (0, 1], got {config.train_fraction}')
  for name in ('epochs', 'batch_size', 'trials', 'eval_batch_size'):
    if getattr(config, name) < 1:
      raise ConfigError(f'{name} must be at least 1, got {getattr(config, name)}')
  if config.batch_size % jax.process_count():
    raise ConfigError(
      f'batch size {config.batch_size} is not divisible by the {jax.process_count()} processes'
    )
  if config.batch_size % num_devices:
    raise ConfigError(
      f'batch size {config.batch_size} is not divisible by the {num_devices} devices'
    )
  if config.sbs_momentum not in SBS_MOMENTUM:
    raise ConfigError(
      f'sbs_momentum must be one of {", ".join(SBS_MOMENTUM)}, got {config.sbs_momentum!r}'
    )
  if config.group not in ('type', 'single'):
    raise ConfigError(f"group must be 'type' or 'single', got {config.group!r}")
  if config.global_normalization not in ('std', 'mean'):
    raise ConfigError(
      f"global_normalization must be 'std' or 'mean', got {config.global_normalization!r}"
    )
  for name in ('dropout_rate', 'depth_dropout'):
    if not 0.0 <= getattr(config, name) < 1.0:
      raise ConfigError(f'{name} must lie in [0, 1), got {getattr(config, name)}')
  if not config.esgd_gamma > 0:
    raise ConfigError(f'esgd_gamma must be positive, got {config.esgd_gamma}')
  if config.esgd_inner_steps < 1:
    raise ConfigError(f'esgd_inner_steps must be at least 1, got {config.esgd_inner_steps}')
  if config.asgd_kappa < 1 or not 0 < config.asgd_xi <= config.asgd_kappa**0.5:
    raise ConfigError(
      f'asgd needs kappa >= 1 and 0 < xi <= sqrt(kappa), got kappa '
      f'{config.asgd_kappa}, xi {config.asgd_xi}'
    )


def create_method_model(config: Config, method: str, num_classes: int):
  """The model a method trains: dropout variants add their regulariser."""
  options = methods.METHODS[method].model_options(config)
  return models.create_model(config.model, num_classes, **options)


def learning_rate_schedule(config: Config, total_steps: int):
  """The paper's sigmoid annealing from ``learning_rate`` to ``end_learning_rate``."""
  return optax_sbs.sigmoid_schedule(
    config.learning_rate, config.end_learning_rate, max(total_steps, 1)
  )


def build_tx(config: Config, method: str, total_steps: int) -> optax.GradientTransformation:
  """The method's tx (``methods.METHODS``) with the paper's sigmoid learning
  rate and momentum pairing, after the optional coupled L2 decay (the decay
  term is part of the gradient the method sees). Built with
  ``methods.BUILD_KEY``: ``steps.create_state`` keys its state by trial."""
  lr = learning_rate_schedule(config, total_steps)
  momentum = default_momentum(config.batch_size) if config.momentum is None else config.momentum
  tx = methods.METHODS[method].tx(config, lr, momentum)
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
  return optax.chain(tx)


def evaluate_dataset(evaluate, state, x, y, batch_size, mesh, mean, std):
  """Mean loss and accuracy (%) over ``x``; arrays over trials if vmapped."""
  loss, correct = 0.0, 0
  for xb, yb, mask in input_pipeline.eval_batches(x, y, batch_size):
    out = evaluate(state, *parallel.to_global(mesh, xb, yb, mask), mean, std)
    loss += np.asarray(out['loss'], np.float64)
    correct += np.asarray(out['correct'], np.int64)
  return loss / len(x), 100.0 * correct / len(x)


def train_epoch(train, state, batches, mean, std, compiles: bool):
  """Runs ``train`` over ``batches``; returns the state, the epoch's mean
  training loss and accuracy (%) (arrays over trials if vectorised) and
  images/s (without the compiling step when ``compiles``)."""
  throughput = trials.Throughput(compiles=compiles)
  losses, accs = [], []
  for xb, yb, num_images in batches:
    state, metrics = train(state, xb, yb, mean, std)
    throughput.step(metrics, num_images)
    losses.append(metrics['loss'])
    accs.append(metrics['accuracy'])
  train_loss = np.mean(jax.device_get(losses), axis=0)
  train_acc = 100.0 * np.mean(jax.device_get(accs), axis=0)
  return state, train_loss, train_acc, throughput.per_second()


def _eval_batch_size(config: Config, mesh: Mesh) -> int:
  # Evaluation pads its last batch anyway: round up to a multiple of devices.
  return -(-config.eval_batch_size // mesh.size) * mesh.size


def run_trial(
  config: Config,
  method: str,
  data: input_pipeline.Dataset,
  trial: int,
  mesh: Mesh,
  progress: Callable | None = None,
  checkpointer: checkpointing.RunCheckpointer | None = None,
) -> list[dict]:
  """Trains ``method`` for one trial; returns one row per epoch
  (``trials.epoch_row``; the last adds ``params_sha256``).

  With a ``checkpointer``, the run starts from its latest checkpoint (if
  any) and saves one after every epoch.

  The trial seed fixes model init, data subset, data order, augmentation and
  the tx's key (``trials.setup_trial``), so the methods of one trial see
  identical runs but for the method itself (a paired comparison).
  """
  t = trials.setup_trial(config, data, trial)
  model = create_method_model(config, method, data.num_classes)
  tx = build_tx(config, method, t.total_steps)
  state = steps.create_state(model, tx, t.x_train.shape[1:], t.model_key, t.tx_key)
  state = parallel.replicate(state, mesh)
  train, evaluate = steps.make_steps(mesh, with_value_fn=methods.METHODS[method].takes_value_fn)
  mean, std = parallel.replicate((t.mean, t.std), mesh)
  schedule = learning_rate_schedule(config, t.total_steps)
  eval_batch_size = _eval_batch_size(config, mesh)
  rows = []
  if checkpointer is not None:
    restored = checkpointer.restore(state)
    if restored is not None:
      state, rows, t.rng.bit_generator.state = restored
      for row in rows if progress is not None else ():
        progress(row)
  first_epoch = len(rows) + 1
  for epoch in range(first_epoch, config.epochs + 1):
    batches = trials.epoch_batches(config, data, [t], mesh, vectorized=False)
    state, train_loss, train_acc, images_per_sec = train_epoch(
      train, state, batches, mean, std, compiles=epoch == first_epoch
    )
    val_loss, val_acc = evaluate_dataset(
      evaluate, state, data.x_test, data.y_test, eval_batch_size, mesh, mean, std
    )
    row = trials.epoch_row(
      method,
      trial,
      epoch,
      train_loss,
      train_acc,
      val_loss,
      val_acc,
      images_per_sec,
      schedule(epoch * t.steps_per_epoch),
      state.opt_state,
    )
    if epoch == config.epochs:
      row['params_sha256'] = parallel.params_digest(state.params)
    rows.append(row)
    if checkpointer is not None:
      checkpointer.save(epoch, state, rows, t.rng.bit_generator.state)
    if progress is not None:
      progress(row)
  return rows


def run_trials_vectorized(
  config: Config,
  method: str,
  data: input_pipeline.Dataset,
  mesh: Mesh,
  progress: Callable | None = None,
) -> list[dict]:
  """All trials of ``method`` at once: one program vmapped over trials.

  Each trial keeps its own subset, statistics, data order, augmentation,
  init and the tx's key, exactly as :func:`run_trial` draws them, so the rows
  equal the sequential ones up to float rounding. Single process, no
  checkpoints. On XLA:CPU this was 2.4x slower than running the trials one
  after another (``benchmarks/results/trials_vmap.md``).
  """
  if jax.process_count() > 1:
    raise ConfigError('vectorised trials run in a single process')
  setups = [trials.setup_trial(config, data, t) for t in range(config.trials)]
  if len({len(t.x_train) for t in setups}) > 1:
    raise ConfigError('vectorised trials need training subsets of one size')
  first = setups[0]
  model = create_method_model(config, method, data.num_classes)
  # One tx for all trials; each trial's key goes into its state.
  tx = build_tx(config, method, first.total_steps)
  shape = first.x_train.shape[1:]
  states = [steps.create_state(model, tx, shape, t.model_key, t.tx_key) for t in setups]
  stack = lambda *xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)
  state = parallel.replicate(stack(*states), mesh)
  mean, std = parallel.replicate(
    (np.stack([t.mean for t in setups]), np.stack([t.std for t in setups])), mesh
  )
  train, evaluate = steps.make_steps(
    mesh, vectorized=True, with_value_fn=methods.METHODS[method].takes_value_fn
  )
  schedule = learning_rate_schedule(config, first.total_steps)
  eval_batch_size = _eval_batch_size(config, mesh)
  rows = []
  for epoch in range(1, config.epochs + 1):
    batches = trials.epoch_batches(config, data, setups, mesh, vectorized=True)
    state, train_loss, train_acc, images_per_sec = train_epoch(
      train, state, batches, mean, std, compiles=epoch == 1
    )
    val_loss, val_acc = evaluate_dataset(
      evaluate, state, data.x_test, data.y_test, eval_batch_size, mesh, mean, std
    )
    for trial in range(config.trials):
      rows.append(
        trials.epoch_row(
          method,
          trial,
          epoch,
          train_loss[trial],
          train_acc[trial],
          val_loss[trial],
          val_acc[trial],
          images_per_sec,
          schedule(epoch * first.steps_per_epoch),
          jax.tree.map(lambda x, i=trial: x[i], state.opt_state),
        )
      )
    if progress is not None:
      progress(rows[-1])
  return rows


def run(
  config: Config,
  data: input_pipeline.Dataset | Callable[[], input_pipeline.Dataset],
  progress_factory=None,
  mesh: Mesh | None = None,
  checkpoint: bool = False,
  resume: bool = False,
  vectorized: bool = False,
) -> list[dict]:
  """All methods x trials, trial-major so paired runs sit together.

  Args:
    config: the run's configuration.
    data: the dataset, or a function that loads it: called once the
      configuration is known to run, so a configuration that cannot fails
      before any download.
    progress_factory: ``(method, trial) -> callable(row)``, per run
      (``trial`` is ``'all'`` for vectorised trials).
    mesh: defaults to all local devices on one 'data' axis.
    checkpoint: save an Orbax checkpoint after every epoch of every run in
      ``config.workdir``.
    resume: continue from the checkpoints in ``config.workdir`` (made by the
      same configuration); finished runs are not repeated.
    vectorized: run the trials of each method at once, vmapped (no
      checkpoints); rows come out method-major.

  Returns:
    One row per epoch of every run (``trials.epoch_row``).

  Raises:
    ConfigError: for a configuration that cannot run (the one place the
      example validates it).
  """
  mesh = mesh or parallel.mesh_over_local_devices()
  validate(config, mesh.size)
  if callable(data):
    data = data()
  if vectorized:
    if checkpoint or resume:
      raise ConfigError('vectorised trials do not checkpoint or resume')
    rows = []
    for method in config.methods:
      progress = progress_factory(method, 'all') if progress_factory else None
      try:
        rows += run_trials_vectorized(config, method, data, mesh, progress)
      finally:
        if progress is not None and hasattr(progress, 'close'):
          progress.close()
    return rows
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
        rows += run_trial(config, method, data, trial, mesh, progress, checkpointer)
      finally:
        if checkpointer is not None:
          checkpointer.close()
        if progress is not None and hasattr(progress, 'close'):
          progress.close()
  return rows
