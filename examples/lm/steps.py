"""The jitted train and eval steps of the NNX transformer, and evaluation.

Losses are cross-entropies in nats per character.
"""

from flax import nnx
import jax
import numpy as np
import optax

import models


def loss_fn(model: models.Transformer, inputs, targets) -> jax.Array:
  """Mean next-character cross-entropy (nats per character)."""
  logits = model(inputs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@nnx.jit
def train_step(model: models.Transformer, optimizer: nnx.Optimizer, inputs, targets):
  """One step on a batch of windows; returns the batch's loss (before the step)."""
  loss, grads = nnx.value_and_grad(loss_fn)(model, inputs, targets)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def eval_step(model: models.Transformer, inputs, targets):
  """Summed cross-entropy over every character of the batch."""
  logits = model(inputs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).sum()


def evaluate(model, windows: tuple[np.ndarray, np.ndarray], batch_size: int) -> float:
  """Mean loss (nats per character) over fixed windows, ``batch_size`` at a
  time, with the model's dropout off."""
  model = models.deterministic(model)
  inputs, targets = windows
  total = 0.0
  for start in range(0, len(inputs), batch_size):
    total += float(
      eval_step(model, inputs[start : start + batch_size], targets[start : start + batch_size])
    )
  return total / inputs.size
