"""Optimizer state bytes per parameter, and where a bfloat16 moving average
stops following the mean.

    python benchmarks/state_memory.py [--out benchmarks/results/state_memory.md]

1. Bytes of optimizer state per parameter, for each family member beside
   AdamW's, on GPT-2 small's tree (124M parameters, 12 stacked layers), with
   float32 and with bfloat16 params; computed from ``jax.eval_shape`` of each
   ``init`` (nothing is allocated), so the numbers are the library's, not
   typed by hand. "cheapest" is SBS with ``count_dtype='uint8'`` and
   ``cma_dtype='bfloat16'``.
2. The precision of a bfloat16 CMA: SBS at ``probability=0`` (no element is
   ever released, so ``k`` grows by one each step) on gradients
   ``g ~ N(1, 1)``, 4096 elements, against the exact running mean in float64.
   Once ``|g - cma| / k`` is below half a bfloat16 ulp of ``cma`` the fold
   ``cma + (g - cma) / k`` rounds back to ``cma``: the table shows from which
   ``k`` the CMA stops moving and its error grows past the mean's own
   standard error. A ``uint8`` count saturates at 255, after which the CMA is
   an exponential moving average with weight 1/255 (also measured).
"""

import argparse
import math
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_sbs

from harness import report

LAYERS, WIDTH, VOCAB, CONTEXT = 12, 768, 50257, 1024


def gpt2_small(dtype) -> dict:
  """GPT-2 small's params as abstract arrays, its blocks stacked on axis 0."""
  s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
  block = {
    'ln_1': {'scale': s(LAYERS, WIDTH), 'bias': s(LAYERS, WIDTH)},
    'attn': {
      'qkv': {'kernel': s(LAYERS, WIDTH, 3 * WIDTH), 'bias': s(LAYERS, 3 * WIDTH)},
      'proj': {'kernel': s(LAYERS, WIDTH, WIDTH), 'bias': s(LAYERS, WIDTH)},
    },
    'ln_2': {'scale': s(LAYERS, WIDTH), 'bias': s(LAYERS, WIDTH)},
    'mlp': {
      'fc': {'kernel': s(LAYERS, WIDTH, 4 * WIDTH), 'bias': s(LAYERS, 4 * WIDTH)},
      'proj': {'kernel': s(LAYERS, 4 * WIDTH, WIDTH), 'bias': s(LAYERS, WIDTH)},
    },
  }
  return {
    'wte': {'embedding': s(VOCAB, WIDTH)},
    'wpe': {'embedding': s(CONTEXT, WIDTH)},
    'layers': block,
    'ln_f': {'scale': s(WIDTH), 'bias': s(WIDTH)},
  }


LAYER_AXES = optax_sbs.layers_under('layers')


def methods() -> dict:
  adamw = optax.adamw(1e-3)
  cheap = dict(count_dtype='uint8', cma_dtype='bfloat16')
  return {
    'optax.adamw': adamw,
    'optax.sgd': optax.sgd(0.1),
    'sbs (SGD)': optax_sbs.sbs(0.1, key=0, layer_axes=LAYER_AXES),
    'sbs (SGD), cheapest': optax_sbs.sbs(0.1, key=0, layer_axes=LAYER_AXES, **cheap),
    'with_stochastic_batch_size(adamw)': optax_sbs.with_stochastic_batch_size(
      adamw, 0, layer_axes=LAYER_AXES
    ),
    'with_stochastic_batch_size(adamw), cheapest': optax_sbs.with_stochastic_batch_size(
      adamw, 0, layer_axes=LAYER_AXES, **cheap
    ),
    'masked_updates(adamw)': optax_sbs.masked_updates(adamw, 0),
    'magma(adamw), per tensor': optax_sbs.magma(adamw, 0, layer_axes=LAYER_AXES),
    'magma(adamw), per element': optax_sbs.magma(adamw, 0, granularity='element'),
  }


def state_bytes(tx, params) -> int:
  state = jax.eval_shape(tx.init, params)
  total = 0
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      total += 8 * math.prod(leaf.shape)  # threefry key data: 2 x uint32
    else:
      total += math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def memory_rows() -> tuple[list[str], list[dict]]:
  trees = {'float32': gpt2_small(jnp.float32), 'bfloat16': gpt2_small(jnp.bfloat16)}
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(trees['float32']))
  lines = [
    f'GPT-2 small ({n / 1e6:.1f}M parameters, {LAYERS} stacked layers). Bytes of optimizer',
    'state per parameter (the params themselves not counted), from `jax.eval_shape(tx.init)`.',
    '',
    *report.table_head('method', 'f32 params', '/ adamw', 'bf16 params', '/ adamw'),
  ]
  payload = []
  base = {name: state_bytes(optax.adamw(1e-3), tree) / n for name, tree in trees.items()}
  for name, tx in methods().items():
    per = {dtype: state_bytes(tx, tree) / n for dtype, tree in trees.items()}
    lines.append(
      f'| {name} | {per["float32"]:.2f} | {per["float32"] / base["float32"]:.2f}x | '
      f'{per["bfloat16"]:.2f} | {per["bfloat16"] / base["bfloat16"]:.2f}x |'
    )
    payload.append({'method': name, 'bytes_per_param': per, 'params': n})
  return lines, payload


CHECKPOINTS = (2, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def precision_run(cma_dtype: str, count_dtype: str, elements: int = 4096, seed: int = 0):
  """Per checkpoint k: the fraction of elements whose CMA moved at step k,
  and the RMS error against the exact running mean in units of its standard
  error (1 / sqrt(k))."""
  tx = optax_sbs.stochastic_batch_size(
    0, probability=0.0, cma_dtype=cma_dtype, count_dtype=count_dtype
  )
  steps = CHECKPOINTS[-1]
  grads = np.random.default_rng(seed).normal(1.0, 1.0, (steps, elements)).astype(np.float32)
  params = jnp.zeros(elements)

  def body(state, g):
    _, new = tx.update(g, state)
    moved = jnp.mean(new.cma != state.cma)
    return new, (new.cma.astype(jnp.float32), moved)

  _, (cmas, moved) = jax.jit(lambda s, g: jax.lax.scan(body, s, g))(tx.init(params), grads)
  exact = np.cumsum(grads.astype(np.float64), axis=0) / np.arange(1, steps + 1)[:, None]
  rows = []
  for k in CHECKPOINTS:
    err = np.sqrt(np.mean((np.asarray(cmas[k - 1], np.float64) - exact[k - 1]) ** 2))
    rows.append({'k': k, 'moved': float(moved[k - 1]), 'rms_error_in_se': err * math.sqrt(k)})
  return rows


def precision_rows() -> tuple[list[str], dict]:
  runs = {
    'float32 CMA, int32 count': precision_run('float32', 'int32'),
    'bfloat16 CMA, int32 count': precision_run('bfloat16', 'int32'),
    'bfloat16 CMA, uint8 count': precision_run('bfloat16', 'uint8'),
  }
  lines = [
    'Gradients g ~ N(1, 1), 4096 elements, never released (k = step). "moved": fraction of',
    'elements whose CMA changed at step k; "error": RMS distance to the exact running mean',
    'in units of its standard error 1/sqrt(k) (1.0 = as large as the sampling noise itself).',
    '',
    *report.table_head('k', *(f'{name}: moved / error' for name in runs)),
  ]
  for i, k in enumerate(CHECKPOINTS):
    cells = [f'{r[i]["moved"]:.2f} / {r[i]["rms_error_in_se"]:.2f}' for r in runs.values()]
    lines.append(f'| {k} | ' + ' | '.join(cells) + ' |')
  return lines, runs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='benchmarks/results/state_memory.md')
  args = parser.parse_args(argv)
  command = 'python benchmarks/state_memory.py' + (
    ' ' + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ''
  )
  memory, memory_payload = memory_rows()
  precision, precision_payload = precision_rows()
  bf16 = precision_payload['bfloat16 CMA, int32 count']
  stalled = next((r['k'] for r in bf16 if r['moved'] < 0.5), None)
  drifted = next((r['k'] for r in bf16 if r['rms_error_in_se'] > 1.0), None)
  lines = [
    '# Optimizer state memory and the precision of a bfloat16 CMA',
    '',
    f'- command: `{command}`',
    *report.machine_and_versions(),
    '',
    '## State bytes per parameter',
    '',
    *memory,
    '',
    '## Precision of a bfloat16 moving average',
    '',
    *precision,
    '',
    f'With a bfloat16 CMA, fewer than half of the elements still move from k = {stalled}, and',
    f'the error exceeds the sampling noise of the mean from k = {drifted}: past that, a',
    'bfloat16 CMA no longer averages the batches it accumulates. Keep `cma_dtype` at float32',
    '(the default) when elements wait that long (small update probabilities); a uint8 count',
    'saturates at 255 and then weights new gradients by 1/255 (an exponential moving average).',
  ]
  payload = {
    'command': command,
    'memory': memory_payload,
    'precision': precision_payload,
    'bfloat16_stalls_at_k': stalled,
    'bfloat16_error_exceeds_se_at_k': drifted,
  }
  report.write_results(args.out, lines, payload)
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
