"""A small self-contained demo: SGD vs SBS on a synthetic classification task.

Trains a two-layer Flax MLP on a noisy spiral data set with plain SGD and
with SGD + stochastic batch size, for a few seeds, and prints the test
accuracy of each. Runs in well under a minute on 2 CPU cores.

Usage: python examples/demo.py [--steps N] [--trials N]
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs


def spiral(rng, n, classes=3, noise=0.25):
  x, y = [], []
  for c in range(classes):
    r = rng.uniform(0.1, 1.0, n)
    t = 4.0 * r + 2 * np.pi * c / classes + rng.normal(0, noise, n)
    x.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
    y.append(np.full(n, c))
  return np.concatenate(x).astype(np.float32), np.concatenate(y)


class MLP(nn.Module):
  hidden: int = 64

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(3)(x)


def train(tx, seed, data, steps, batch):
  x_train, y_train, x_test, y_test = data
  model = MLP()
  params = model.init(jax.random.key(seed), x_train[:1])
  opt_state = tx.init(params)

  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(x_train), batch)
    params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])
  accuracy = np.mean(
      np.argmax(model.apply(params, x_test), -1) == y_test
  )
  return 100 * float(accuracy), opt_state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--trials', type=int, default=3)
  parser.add_argument('--batch', type=int, default=16)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  x_train, y_train = spiral(rng, 100)  # small training set: 300 points
  x_test, y_test = spiral(rng, 1000)
  data = (x_train, y_train, x_test, y_test)
  lr = optax_sbs.sigmoid_schedule(0.1, 0.001, args.steps)
  optimizers = {
      'sgd': lambda seed: optax.sgd(lr),
      'sbs': lambda seed: optax_sbs.sbs(lr, key=seed, alpha=0.1, lam=-4.0),
  }
  print(f'jax {jax.__version__}, devices: {jax.devices()}')
  print(f'{args.trials} trials x {args.steps} steps, batch {args.batch}')
  results = {}
  for name, make in optimizers.items():
    start = time.time()
    accs = []
    for seed in range(args.trials):
      acc, state = train(make(seed), seed, data, args.steps, args.batch)
      accs.append(acc)
    results[name] = accs
    extra = ''
    if name == 'sbs':
      counts = optax_sbs.find_state(state).mean_count()
      extra = f', mean batch count at the end: {np.mean(jax.tree.leaves(counts)):.2f}'
    print(f'{name}: {np.mean(accs):.2f} +- {np.std(accs):.2f}% '
          f'({time.time() - start:.1f}s{extra})')
  print('\n| optimizer | test accuracy (%) | per trial |')
  print('|---|---|---|')
  for name, accs in results.items():
    print(f'| {name} | {np.mean(accs):.2f} +- {np.std(accs):.2f} | '
          + ', '.join(f'{a:.1f}' for a in accs) + ' |')


if __name__ == '__main__':
  main()
