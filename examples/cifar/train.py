"""Training and evaluation: jit over a device mesh, SGD or SBS, trials, summaries."""

from collections.abc import Callable
import dataclasses
import hashlib
import math
import time
from typing import Any

import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

import optax_sbs

import checkpointing
from configs.default import PAPER_MOMENTUM
from configs.default import Config
import input_pipeline
import methods
import models

# The methods of the paper's comparison (§5.4), from the registry.
OPTIMIZERS = tuple(methods.METHODS)
# SBS under momentum: Algorithm 2 (the wrapper) or SBS chained before SGD.
SBS_MOMENTUM = ('frozen', 'chain')


class ConfigError(ValueError):
  """A configuration that cannot run, with a message saying why."""


class TrainState(train_state.TrainState):
  batch_stats: Any = None
  dropout_key: Any = None


def default_momentum(batch_size: int) -> float:
  """The paper's pairing; other sizes take the pairing of the nearest size."""
  nearest = min(PAPER_MOMENTUM, key=lambda b: abs(math.log(batch_size / b)))
  return PAPER_MOMENTUM[nearest]


def validate(config: Config, num_devices: int) -> None:
  unknown = [o for o in config.optimizers if o not in OPTIMIZERS]
  if unknown or not config.optimizers:
    raise ConfigError(
      f'unknown optimizer {", ".join(unknown) or "(none)"}; choose from {", ".join(OPTIMIZERS)}'
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


def build_optimizer(
  config: Config, optimizer: str, total_steps: int, key: jax.Array
) -> optax.GradientTransformation:
  """The method's optimizer (``methods.METHODS``) with the paper's sigmoid
  learning rate and momentum pairing, after the optional coupled L2 decay
  (the decay term is part of the gradient the method sees)."""
  lr = learning_rate_schedule(config, total_steps)
  momentum = default_momentum(config.batch_size) if config.momentum is None else config.momentum
  tx = methods.METHODS[optimizer].optimizer(config, lr, momentum, key)
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
  return optax.chain(tx)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _inputs(images, mean, std):
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def train_step(state: TrainState, images, labels, mean, std):
  """One SGD/SBS step on a batch of uint8 images (normalised here)."""
  x = _inputs(images, mean, std)
  dropout_key = jax.random.fold_in(state.dropout_key, state.step)

  def loss_fn(params):
    logits, updates = state.apply_fn(
      {'params': params, 'batch_stats': state.batch_stats},
      x,
      train=True,
      mutable=['batch_stats'],
      rngs={'dropout': dropout_key},
    )
    return cross_entropy(logits, labels).mean(), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # value_fn: the loss on this batch, for optimisers that evaluate it
  # elsewhere (Entropy-SGD's inner steps); the others ignore it.
  opt_updates, opt_state = state.tx.update(
    grads, state.opt_state, state.params, value_fn=lambda p: loss_fn(p)[0]
  )
  state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, opt_updates),
    opt_state=opt_state,
    batch_stats=updates['batch_stats'],
  )
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state, {'loss': loss, 'accuracy': accuracy}


def eval_step(state: TrainState, images, labels, mask, mean, std):
  """Summed loss and number correct over the unmasked examples."""
  logits = state.apply_fn(
    {'params': state.params, 'batch_stats': state.batch_stats},
    _inputs(images, mean, std),
    train=False,
  )
  loss = jnp.sum(jnp.where(mask, cross_entropy(logits, labels), 0.0))
  correct = jnp.sum(jnp.where(mask, jnp.argmax(logits, -1) == labels, False))
  return {'loss': loss, 'correct': correct}


def make_steps(mesh: Mesh, vectorized: bool = False):
  """Jitted train and eval steps; batches sharded over 'data', state replicated.

  ``vectorized``: the steps are vmapped over a leading trial axis of the
  state, the training batches and the normalisation statistics (the test
  batches are shared by all trials).
  """
  replicated = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P('data'))
  # Output shardings are left to propagation: the state stays replicated.
  # (Pinning out_shardings made the step 5x slower on XLA:CPU here.)
  if not vectorized:
    train = jax.jit(
      train_step, donate_argnums=0, in_shardings=(replicated, batch, batch, replicated, replicated)
    )
    evaluate = jax.jit(
      eval_step, in_shardings=(replicated, batch, batch, batch, replicated, replicated)
    )
    return train, evaluate
  trial_batch = NamedSharding(mesh, P(None, 'data'))
  train = jax.jit(
    jax.vmap(train_step),
    donate_argnums=0,
    in_shardings=(replicated, trial_batch, trial_batch, replicated, replicated),
  )
  evaluate = jax.jit(
    jax.vmap(eval_step, in_axes=(0, None, None, None, 0, 0)),
    in_shardings=(replicated, batch, batch, batch, replicated, replicated),
  )
  return train, evaluate


def create_state(model, tx, image_shape, key) -> TrainState:
  init_key, dropout_key = jax.random.split(key)
  variables = model.init(init_key, jnp.zeros((1,) + image_shape, jnp.float32), train=False)
  state = TrainState.create(
    apply_fn=model.apply,
    params=variables['params'],
    tx=tx,
    batch_stats=variables.get('batch_stats', flax.core.FrozenDict()),
    dropout_key=dropout_key,
  )
  # A strongly typed step: the weakly typed 0 would recompile on step 2.
  return state.replace(step=jnp.zeros((), jnp.int32))


def replicate(tree, mesh: Mesh):
  """Places a host tree replicated on every device of ``mesh``, all processes."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree.map(put, tree)


def to_global(mesh: Mesh, *arrays: np.ndarray):
  """Host batches -> arrays sharded over 'data' across all processes.

  Every process iterates the same global batches (same seeds); each one
  contributes its contiguous slice, which lands on its own devices.
  """
  sharding = NamedSharding(mesh, P('data'))
  n, i = jax.process_count(), jax.process_index()
  out = []
  for a in arrays:
    per = len(a) // n
    out.append(
      jax.make_array_from_process_local_data(sharding, a[i * per : (i + 1) * per], a.shape)
    )
  return out


def evaluate_dataset(evaluate, state, x, y, batch_size, mesh, mean, std):
  """Mean loss and accuracy (%) over ``x``; arrays over trials if vmapped."""
  loss, correct = 0.0, 0
  for xb, yb, mask in input_pipeline.eval_batches(x, y, batch_size):
    out = evaluate(state, *to_global(mesh, xb, yb, mask), mean, std)
    loss += np.asarray(out['loss'], np.float64)
    correct += np.asarray(out['correct'], np.int64)
  return loss / len(x), 100.0 * correct / len(x)


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
  sbs_key: jax.Array
  rng: np.random.Generator  # data order and augmentation


def setup_trial(config: Config, data: input_pipeline.Dataset, trial: int) -> TrialSetup:
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
  model_key, sbs_key = jax.random.split(jax.random.key(seed))
  return TrialSetup(
    x_train,
    y_train,
    mean,
    std,
    steps_per_epoch,
    steps_per_epoch * config.epochs,
    model_key,
    sbs_key,
    np.random.default_rng([seed, 1]),
  )


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
      yield *to_global(mesh, xs[0], ys[0]), len(xs[0])


def train_epoch(train, state, batches, mean, std, compiles: bool):
  """Runs ``train`` over ``batches``; returns the state, the epoch's mean
  training loss and accuracy (%) (arrays over trials if vectorised) and
  images/s (without the compiling step when ``compiles``)."""
  throughput = Throughput(compiles=compiles)
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


def epoch_row(
  config: Config,
  optimizer: str,
  trial: int,
  epoch: int,
  steps_per_epoch: int,
  train_loss,
  train_acc,
  val_loss,
  val_acc,
  images_per_sec: float,
  opt_state,
) -> dict:
  """The logged row of one epoch of one trial."""
  row = dict(
    optimizer=optimizer,
    trial=trial,
    epoch=epoch,
    train_loss=float(train_loss),
    train_accuracy=float(train_acc),
    val_loss=float(val_loss),
    val_accuracy=float(val_acc),
    images_per_sec=images_per_sec,
    learning_rate=float(
      learning_rate_schedule(config, steps_per_epoch * config.epochs)(epoch * steps_per_epoch)
    ),
  )
  row.update(sbs_statistics(opt_state))
  return row


def params_digest(params) -> str:
  """SHA-256 of this process's copy of the (replicated) params, leaf by leaf.

  Every process of a multi-host run computes it on its own devices' data:
  equal digests prove that the replicas hold bit-identical parameters.
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
  return digest.hexdigest()


def sbs_statistics(opt_state) -> dict[str, float]:
  """Mean over leaves of SBS's per-leaf update fraction and mean count;
  empty for an optimizer without stochastic batch size."""
  try:
    sbs_state = optax_sbs.find_state(opt_state)
  except ValueError:
    return {}
  return dict(
    sbs_update_fraction=float(np.mean(jax.tree.leaves(sbs_state.update_fraction()))),
    sbs_mean_count=float(np.mean(jax.tree.leaves(sbs_state.mean_count()))),
  )


def run_trial(
  config: Config,
  optimizer: str,
  data: input_pipeline.Dataset,
  trial: int,
  mesh: Mesh,
  progress: Callable | None = None,
  checkpointer: checkpointing.RunCheckpointer | None = None,
) -> list[dict]:
  """Trains ``optimizer`` for one trial; returns one row per epoch.

  With a ``checkpointer``, the run starts from its latest checkpoint (if
  any) and saves one after every epoch.

  The trial seed fixes model init, data subset, data order, augmentation and
  the SBS key, so the optimizers of one trial see identical runs but for
  the optimizer itself (a paired comparison).
  """
  t = setup_trial(config, data, trial)
  model = create_method_model(config, optimizer, data.num_classes)
  tx = build_optimizer(config, optimizer, t.total_steps, t.sbs_key)
  state = create_state(model, tx, t.x_train.shape[1:], t.model_key)
  state = replicate(state, mesh)
  train, evaluate = make_steps(mesh)
  mean, std = replicate((t.mean, t.std), mesh)
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
    batches = epoch_batches(config, data, [t], mesh, vectorized=False)
    state, train_loss, train_acc, images_per_sec = train_epoch(
      train, state, batches, mean, std, compiles=epoch == first_epoch
    )
    val_loss, val_acc = evaluate_dataset(
      evaluate, state, data.x_test, data.y_test, eval_batch_size, mesh, mean, std
    )
    row = epoch_row(
      config,
      optimizer,
      trial,
      epoch,
      t.steps_per_epoch,
      train_loss,
      train_acc,
      val_loss,
      val_acc,
      images_per_sec,
      state.opt_state,
    )
    if epoch == config.epochs:
      row['params_sha256'] = params_digest(state.params)
    rows.append(row)
    if checkpointer is not None:
      checkpointer.save(epoch, state, rows, t.rng.bit_generator.state)
    if progress is not None:
      progress(row)
  return rows


def with_optimizer_key(opt_state, key):
  """The optimizer state with its PRNG key (SBS masks, Entropy-SGD noise)
  replaced; a no-op for optimisers without one."""
  types = methods.keyed_states()
  keyed = lambda x: isinstance(x, types)
  return jax.tree.map(lambda n: n._replace(key=key) if keyed(n) else n, opt_state, is_leaf=keyed)


def run_trials_vectorized(
  config: Config,
  optimizer: str,
  data: input_pipeline.Dataset,
  mesh: Mesh,
  progress: Callable | None = None,
) -> list[dict]:
  """All trials of ``optimizer`` at once: one program vmapped over trials.

  Each trial keeps its own subset, statistics, data order, augmentation,
  init and SBS key, exactly as :func:`run_trial` draws them, so the rows
  equal the sequential ones up to float rounding. Single process, no
  checkpoints. On XLA:CPU this was 2.4x slower than running the trials one
  after another (``benchmarks/results/trials_vmap.md``).
  """
  if jax.process_count() > 1:
    raise ConfigError('vectorised trials run in a single process')
  setups = [setup_trial(config, data, t) for t in range(config.trials)]
  if len({len(t.x_train) for t in setups}) > 1:
    raise ConfigError('vectorised trials need training subsets of one size')
  first = setups[0]
  model = create_method_model(config, optimizer, data.num_classes)
  # One optimizer for all trials; each trial's SBS key goes into its state.
  tx = build_optimizer(config, optimizer, first.total_steps, first.sbs_key)
  states = [create_state(model, tx, first.x_train.shape[1:], t.model_key) for t in setups]
  states = [
    s.replace(opt_state=with_optimizer_key(s.opt_state, t.sbs_key)) for s, t in zip(states, setups)
  ]
  stack = lambda *xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)
  state = replicate(stack(*states), mesh)
  mean, std = replicate(
    (np.stack([t.mean for t in setups]), np.stack([t.std for t in setups])), mesh
  )
  train, evaluate = make_steps(mesh, vectorized=True)
  eval_batch_size = _eval_batch_size(config, mesh)
  rows = []
  for epoch in range(1, config.epochs + 1):
    batches = epoch_batches(config, data, setups, mesh, vectorized=True)
    state, train_loss, train_acc, images_per_sec = train_epoch(
      train, state, batches, mean, std, compiles=epoch == 1
    )
    val_loss, val_acc = evaluate_dataset(
      evaluate, state, data.x_test, data.y_test, eval_batch_size, mesh, mean, std
    )
    for trial in range(config.trials):
      rows.append(
        epoch_row(
          config,
          optimizer,
          trial,
          epoch,
          first.steps_per_epoch,
          train_loss[trial],
          train_acc[trial],
          val_loss[trial],
          val_acc[trial],
          images_per_sec,
          jax.tree.map(lambda x, i=trial: x[i], state.opt_state),
        )
      )
    if progress is not None:
      progress(rows[-1])
  return rows


def summarize(rows: list[dict], epochs: int) -> dict[str, dict]:
  """Per optimizer: mean over trials (± std) of the mean validation accuracy
  over the last 10% of epochs, and of the maximum over epochs."""
  last = max(1, math.ceil(0.1 * epochs))
  summary = {}
  for opt in dict.fromkeys(r['optimizer'] for r in rows):
    per_trial_last, per_trial_max = [], []
    for trial in sorted({r['trial'] for r in rows if r['optimizer'] == opt}):
      accs = [
        r['val_accuracy']
        for r in sorted(
          (r for r in rows if r['optimizer'] == opt and r['trial'] == trial),
          key=lambda r: r['epoch'],
        )
      ]
      per_trial_last.append(float(np.mean(accs[-last:])))
      per_trial_max.append(float(np.max(accs)))
    summary[opt] = dict(
      trials=len(per_trial_last),
      last_epochs=last,
      last_mean=float(np.mean(per_trial_last)),
      last_std=float(np.std(per_trial_last, ddof=1)) if len(per_trial_last) > 1 else 0.0,
      max_mean=float(np.mean(per_trial_max)),
      max_std=float(np.std(per_trial_max, ddof=1)) if len(per_trial_max) > 1 else 0.0,
      per_trial_last=per_trial_last,
    )
  return summary


def mesh_over_local_devices(num_devices: int | None = None) -> Mesh:
  devices = jax.devices()
  return Mesh(np.array(devices[: num_devices or len(devices)]), ('data',))


def run(
  config: Config,
  data: input_pipeline.Dataset,
  progress_factory=None,
  mesh: Mesh | None = None,
  checkpoint: bool = False,
  resume: bool = False,
  vectorized: bool = False,
) -> list[dict]:
  """All optimizers x trials, trial-major so paired runs sit together.

  Args:
    config: the run's configuration.
    data: the dataset.
    progress_factory: ``(optimizer, trial) -> callable(row)``, per run.
    mesh: defaults to all local devices on one 'data' axis.
    checkpoint: save an Orbax checkpoint after every epoch of every run in
      ``config.workdir``.
    resume: continue from the checkpoints in ``config.workdir`` (made by the
      same configuration); finished runs are not repeated.
    vectorized: run the trials of each optimizer at once, vmapped (no
      checkpoints); rows come out optimizer-major.
  """
  mesh = mesh or mesh_over_local_devices()
  validate(config, mesh.size)
  if vectorized:
    if checkpoint or resume:
      raise ConfigError('vectorised trials do not checkpoint or resume')
    rows = []
    for opt in config.optimizers:
      progress = progress_factory(opt, 'all') if progress_factory else None
      try:
        rows += run_trials_vectorized(config, opt, data, mesh, progress)
      finally:
        if progress is not None and hasattr(progress, 'close'):
          progress.close()
    return rows
  if checkpoint or resume:
    checkpointing.prepare_workdir(config.workdir, config, resume)
  rows = []
  for trial in range(config.trials):
    for opt in config.optimizers:
      progress = progress_factory(opt, trial) if progress_factory else None
      checkpointer = (
        checkpointing.RunCheckpointer(config.workdir, opt, trial) if checkpoint or resume else None
      )
      try:
        rows += run_trial(config, opt, data, trial, mesh, progress, checkpointer)
      finally:
        if checkpointer is not None:
          checkpointer.close()
        if progress is not None and hasattr(progress, 'close'):
          progress.close()
  return rows
