"""The classic ``jax.pmap`` + ``TrainState`` pattern with SBS, in one short script.

Data parallel over N devices: each device gets ``batch_size / N`` images,
gradients are averaged with ``lax.pmean`` *before* the tx's update, BatchNorm
statistics are averaged over the global batch (``axis_name``), and the train
state, SBS key included, is replicated. So every replica draws the same SBS
masks and the replicas stay identical (see the README's rule).

  python examples/cifar/pmap_train.py --steps 100
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/cifar/pmap_train.py
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

from configs.default import EMBEDDED_SAMPLE
import input_pipeline
import models
import steps as steps_lib


def replicate(tree, n):
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


def train(
  data: input_pipeline.Dataset, num_devices: int, steps: int, batch_size: int = 32, seed: int = 0
):
  """Trains the small CNN with SBS for ``steps``; returns (losses, state)."""
  if batch_size % num_devices:
    raise ValueError(f'batch size {batch_size} is not divisible by {num_devices}')
  devices = jax.devices()[:num_devices]
  model = models.SmallCNN(num_classes=data.num_classes, axis_name='batch')
  tx = optax_sbs.sbs(optax_sbs.sigmoid_schedule(0.1, 0.001, steps), key=seed, momentum=0.3)
  key = jax.random.key(seed)  # the model's and the tx's (as ``key=seed`` above)
  state = steps_lib.create_state(model, tx, data.x_train.shape[1:], key, key)
  state = replicate(state, num_devices)
  mean, std = input_pipeline.channel_stats(data.x_train)

  @functools.partial(jax.pmap, axis_name='batch', devices=devices)
  def train_step(state, images, labels):
    x = (images.astype(jnp.float32) / 255.0 - mean) / std

    def loss_fn(params):
      logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True, mutable=['batch_stats']
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, 'batch')  # average BEFORE the tx's update
    state = state.apply_gradients(grads=grads, batch_stats=updates['batch_stats'])
    return state, jax.lax.pmean(loss, 'batch')

  rng = np.random.default_rng(seed)
  losses = []
  while len(losses) < steps:
    for xb, yb in input_pipeline.train_batches(data.x_train, data.y_train, batch_size, rng):
      shard = lambda a: a.reshape((num_devices, -1) + a.shape[1:])
      state, loss = train_step(state, shard(xb), shard(yb))
      losses.append(float(loss[0]))
      if len(losses) == steps:
        break
  return losses, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dataset', default=EMBEDDED_SAMPLE)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--batch-size', type=int, default=32)
  args = parser.parse_args()
  data = input_pipeline.load(args.dataset)
  n = jax.local_device_count()
  while args.batch_size % n:
    n -= 1
  losses, state = train(data, n, args.steps, args.batch_size)
  same = all(bool(jnp.all(leaf == leaf[0])) for leaf in jax.tree.leaves(state.params))
  print(
    f'{n} device(s), {args.steps} steps: loss {losses[0]:.3f} -> '
    f'{np.mean(losses[-10:]):.3f}; replicas identical: {same}'
  )
  counts = optax_sbs.find_state(jax.tree.map(lambda x: x[0], state.opt_state))
  print(f'SBS mean batch count: {np.mean(jax.tree.leaves(counts.mean_count())):.2f}')


if __name__ == '__main__':
  main()
