"""The jitted steps: train and eval steps over a device mesh, and the state they step."""

import functools
from typing import Any

import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax


class TrainState(train_state.TrainState):
  """Flax's train state with BatchNorm statistics and the dropout key."""

  batch_stats: Any = None
  dropout_key: Any = None


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


def create_state(model, tx, image_shape, model_key, tx_key) -> TrainState:
  """A trial's initial state: the model initialised from ``model_key`` (its
  dropout key split from it too), the tx's state keyed by ``tx_key``
  (:func:`with_tx_key`)."""
  init_key, dropout_key = jax.random.split(model_key)
  variables = model.init(init_key, jnp.zeros((1,) + image_shape, jnp.float32), train=False)
  state = TrainState.create(
    apply_fn=model.apply,
    params=variables['params'],
    tx=tx,
    batch_stats=variables.get('batch_stats', flax.core.FrozenDict()),
    dropout_key=dropout_key,
  )
  # A strongly typed step: the weakly typed 0 would recompile on step 2.
  return state.replace(
    step=jnp.zeros((), jnp.int32), opt_state=with_tx_key(state.opt_state, tx_key)
  )


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _inputs(images, mean, std):
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def train_step(state: TrainState, images, labels, mean, std, with_value_fn: bool = False):
  """One step of the state's tx on a batch of uint8 images (normalised here).

  ``with_value_fn``: pass the tx's ``update`` the batch's loss as a function
  of the parameters (``value_fn``), for the methods that take it
  (``methods.Method.takes_value_fn``).
  """
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
  extra_args = {'value_fn': lambda p: loss_fn(p)[0]} if with_value_fn else {}
  opt_updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **extra_args)
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


def make_steps(mesh: Mesh, vectorized: bool = False, with_value_fn: bool = False):
  """Jitted train and eval steps; batches sharded over 'data', state replicated.

  Args:
    mesh: the devices, one 'data' axis.
    vectorized: the steps are vmapped over a leading trial axis of the state,
      the training batches and the normalisation statistics (the test batches
      are shared by all trials).
    with_value_fn: the train step passes ``value_fn`` to the tx (see
      :func:`train_step`).
  """
  step = functools.partial(train_step, with_value_fn=with_value_fn)
  replicated = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P('data'))
  # Output shardings are left to propagation: the state stays replicated.
  # (Pinning out_shardings made the step 5x slower on XLA:CPU here.)
  if not vectorized:
    train = jax.jit(
      step, donate_argnums=0, in_shardings=(replicated, batch, batch, replicated, replicated)
    )
    evaluate = jax.jit(
      eval_step, in_shardings=(replicated, batch, batch, batch, replicated, replicated)
    )
    return train, evaluate
  trial_batch = NamedSharding(mesh, P(None, 'data'))
  train = jax.jit(
    jax.vmap(step),
    donate_argnums=0,
    in_shardings=(replicated, trial_batch, trial_batch, replicated, replicated),
  )
  evaluate = jax.jit(
    jax.vmap(eval_step, in_axes=(0, None, None, None, 0, 0)),
    in_shardings=(replicated, batch, batch, batch, replicated, replicated),
  )
  return train, evaluate
