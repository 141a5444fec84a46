"""What does each method of a language-model study cost per training step?

Times the lm example's full training step (forward, backward, gradient
clipping, the method's tx) for every cell of a study (by default
``lm_medium``: AdamW, SBS lam = 0 and at a fixed p = 0.5 around AdamW,
Learning-Rate Dropout, AdamW on the model with dropout) on the study's model
and batch, with random tokens. In one process, interleaved: every round
times a block of steps of each cell in turn, so a slow spell of the machine
falls on all of them; the table gives the median over rounds of each cell's
tokens per second and its ratio to AdamW's in the same rounds.

  python benchmarks/lm_speed.py                       # lm_medium's cpu scale
  python benchmarks/lm_speed.py --smoke --out /tmp/lm_speed.md   # seconds

Writes ``benchmarks/results/lm_speed_<platform>.md`` and the JSON beside it.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'examples', 'lm'))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from configs.default import Config
from harness import report
from harness import runner as runner_lib
import train

VOCAB_SIZE = 65  # Tiny Shakespeare's characters
SMOKE = dict(num_layers=2, num_heads=2, embed_dim=16, context_length=16, batch_size=4)


def cell_configs(study_name: str, scale: str, smoke: bool) -> dict[str, Config]:
  """Per cell of the study, the example's configuration of one of its runs."""
  study = runner_lib.load_study(study_name)
  fields = dict(study.SCALES[scale]['config'], **(SMOKE if smoke else {}))
  out = {}
  for name, (method, options, _) in study.CELLS.items():
    config = Config(**dict(fields, **options), methods=(method,))
    train.validate(config)
    out[name] = config
  return out


def step_runner(config: Config, seed: int):
  """``run(n)``: ``n`` training steps of a fresh model and optimizer, blocked
  until done; the first call compiles."""
  model_key, tx_key, _ = train.trial_seeds(config, seed)
  model, optimizer = train.create(config, config.methods[0], VOCAB_SIZE, model_key, tx_key)
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.context_length)
  batches = [
    tuple(jax.device_put(rng.integers(0, VOCAB_SIZE, shape, dtype=np.int32)) for _ in range(2))
    for _ in range(4)
  ]

  def run(n: int) -> None:
    loss = None
    for i in range(n):
      loss = train.train_step(model, optimizer, *batches[i % len(batches)])
    jax.block_until_ready(loss)

  return run


def measure(configs: dict[str, Config], rounds: int, steps: int) -> dict[str, list[float]]:
  """Per cell, its tokens per second in each round (after one warm-up)."""
  runners = {name: step_runner(config, seed=0) for name, config in configs.items()}
  for run in runners.values():
    run(2)  # compiles
  seconds: dict[str, list[float]] = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      start = time.perf_counter()
      run(steps)
      seconds[name].append(time.perf_counter() - start)
  tokens = {name: c.batch_size * c.context_length * steps for name, c in configs.items()}
  return {name: [tokens[name] / s for s in times] for name, times in seconds.items()}


def table(per_round: dict[str, list[float]], baseline: str) -> list[dict]:
  """Per cell: median tokens/s over rounds, and the median over rounds of its
  ratio to ``baseline`` in the same round."""
  base = np.asarray(per_round[baseline])
  return [
    dict(
      cell=name,
      tokens_per_sec=float(np.median(values)),
      vs_adamw=float(np.median(np.asarray(values) / base)),
    )
    for name, values in per_round.items()
  ]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--study', default='lm_medium', help='an lm study (run.py --list)')
  parser.add_argument('--scale', default='cpu')
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--steps', type=int, default=10, help='steps per cell and round')
  parser.add_argument('--smoke', action='store_true', help='a tiny model, for the tests')
  parser.add_argument('--out', default=None, help='markdown path (the .json goes beside it)')
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1:
    parser.error('--rounds and --steps must be at least 1')
  configs = cell_configs(args.study, args.scale, args.smoke)
  if 'adamw' not in configs:
    parser.error(f'study {args.study} has no adamw cell to compare with')
  rows = table(measure(configs, args.rounds, args.steps), 'adamw')
  first = next(iter(configs.values()))
  command = f'python benchmarks/lm_speed.py --study {args.study} --scale {args.scale}'
  command += f' --rounds {args.rounds} --steps {args.steps}' + (' --smoke' if args.smoke else '')
  lines = [
    f'# Training-step speed of the {args.study} study\'s cells, scale "{args.scale}"',
    '',
    f'- command: `{command}`',
    *report.machine_and_versions('flax'),
    f'- model: {first.num_layers} blocks, width {first.embed_dim}, {first.num_heads} heads, '
    f'context {first.context_length}, batch {first.batch_size}'
    + (', blocks scanned' if first.scan_layers else '')
    + '; random tokens',
    f'- the full training step, {args.steps} steps per cell and round, the cells interleaved, '
    f'{args.rounds} rounds after a warm-up; median over rounds',
    '',
    *report.table_head('cell', 'tokens/s', 'vs AdamW (same rounds)'),
    *(f'| {r["cell"]} | {r["tokens_per_sec"]:.0f} | {r["vs_adamw"]:.2f} |' for r in rows),
  ]
  print('\n'.join(lines))
  platform = jax.devices()[0].platform
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'lm_speed_{platform}.md')
  report.write_results(out, lines, {'command': command, 'cells': rows}, indent=2)
  print(f'written to {out}')


if __name__ == '__main__':
  main()
