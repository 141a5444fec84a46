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
import time
from typing import Any

import jax
import numpy as np

from harness import examples
from harness import report
from harness import runner as runner_lib
from harness import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The lm example's modules are imported when a timing runs, not when this
# module loads (the cifar example has modules of the same names).
LM = examples.EXAMPLES['lm']
VOCAB_SIZE = 65  # Tiny Shakespeare's characters
SMOKE = dict(num_layers=2, num_heads=2, embed_dim=16, context_length=16, batch_size=4)


def cell_configs(study: Any, scale: str, smoke: bool) -> dict[str, Any]:
  """Per cell of the study, the example's configuration of one of its runs."""
  fields = dict(study.SCALES[scale]['config'], **(SMOKE if smoke else {}))
  train = LM.module('train')
  out = {}
  for name, cell in study.CELLS.items():
    config = LM.config_class()(**dict(fields, **cell.options), methods=(cell.method,))
    train.validate(config)
    out[name] = config
  return out


def describe(study: Any, name: str) -> str:
  """The cell's method and the options it sets."""
  cell = study.CELLS[name]
  return ', '.join([cell.method, *(f'{k}={v}' for k, v in cell.options.items())])


def step_runner(config: Any, seed: int):
  """``run(n)``: ``n`` training steps of a fresh model and optimizer, blocked
  until done; the first call compiles."""
  train, steps = LM.module('train'), LM.module('steps')
  model_key, tx_key, _ = train.setup_trial(config, seed)
  model, optimizer = train.create_state(config, config.methods[0], VOCAB_SIZE, model_key, tx_key)
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.context_length)
  batches = [
    tuple(jax.device_put(rng.integers(0, VOCAB_SIZE, shape, dtype=np.int32)) for _ in range(2))
    for _ in range(4)
  ]

  def run(n: int) -> None:
    loss = None
    for i in range(n):
      loss = steps.train_step(model, optimizer, *batches[i % len(batches)])
    jax.block_until_ready(loss)

  return run


def measure(configs: dict[str, Any], rounds: int, steps: int) -> dict[str, list[float]]:
  """Per cell, its tokens per second in each round (after one warm-up)."""
  runners = {name: step_runner(config, seed=0) for name, config in configs.items()}
  for run in runners.values():
    run(2)  # compiles
  seconds: dict[str, list[float]] = {name: [] for name in runners}
  names = list(runners)
  for r in range(rounds):
    # Each round starts at another cell, so that no cell always runs first.
    for name in names[r % len(names) :] + names[: r % len(names)]:
      start = time.perf_counter()
      runners[name](steps)
      seconds[name].append(time.perf_counter() - start)
  tokens = {name: c.batch_size * c.context_length * steps for name, c in configs.items()}
  return {name: [tokens[name] / s for s in times] for name, times in seconds.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--study', default='lm_medium', help='a study of the lm example (run.py --list)'
  )
  parser.add_argument('--scale', default='cpu')
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--steps', type=int, default=10, help='steps per cell and round')
  parser.add_argument('--smoke', action='store_true', help='a tiny model, for the tests')
  parser.add_argument(
    '--out',
    default=None,
    help='markdown path (the .json goes beside it); needed unless the '
    'study and scale are the defaults and --smoke is off',
  )
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1:
    parser.error('--rounds and --steps must be at least 1')
  try:
    study = runner_lib.load_study(args.study)
  except ValueError as error:  # names the studies there are
    parser.error(str(error))
  if study.EXAMPLE != 'lm':
    parser.error(f'study {args.study} trains the {study.EXAMPLE} example, not lm')
  if args.scale not in study.SCALES:
    parser.error(f'study {args.study} has no scale {args.scale!r}: {", ".join(study.SCALES)}')
  defaults = parser.get_default('study'), parser.get_default('scale'), False
  if args.out is None and (args.study, args.scale, args.smoke) != defaults:
    parser.error('--out is needed for another study, scale or --smoke')
  configs = cell_configs(study, args.scale, args.smoke)
  if 'adamw' not in configs:
    parser.error(f'study {args.study} has no adamw cell to compare with')
  load = os.getloadavg()[0]
  per_round = measure(configs, args.rounds, args.steps)
  rows = stats.ratios_to_baseline(per_round, 'adamw')
  first = next(iter(configs.values()))
  command = f'python benchmarks/lm_speed.py --study {args.study} --scale {args.scale}'
  command += f' --rounds {args.rounds} --steps {args.steps}' + (' --smoke' if args.smoke else '')
  lines = [
    f'# Training-step speed of the {args.study} study\'s cells, scale "{args.scale}"'
    + (' (smoke: a tiny model)' if args.smoke else ''),
    '',
    f'- command: `{command}`',
    *report.machine_and_versions('flax'),
    f'- load average (1 min) before the timing: {load:.2f}',
    f'- model: {first.num_layers} blocks, width {first.embed_dim}, {first.num_heads} heads, '
    f'context {first.context_length}, batch {first.batch_size}'
    + (', blocks scanned' if first.scan_layers else '')
    + '; random tokens',
    f'- the full training step (forward, backward, clipping, the tx), {args.steps} steps per '
    f'cell and round after 2 warm-up steps that compile; {args.rounds} rounds, the cells '
    'interleaved, each round starting at the next cell',
    '',
    "tokens/s: the median over rounds. vs AdamW: the median over rounds of the cell's tokens/s "
    "over AdamW's in the same round, and its quartiles over rounds.",
    '',
    *report.table_head('cell', 'method and options', 'tokens/s', 'vs AdamW', 'quartiles'),
    *(
      f'| {name} | {describe(study, name)} | {r["median"]:.0f} | {r["ratio"]:.2f} | '
      f'{r["ratio_quartiles"][0]:.2f} to {r["ratio_quartiles"][1]:.2f} |'
      for name, r in rows.items()
    ),
  ]
  print('\n'.join(lines))
  platform = jax.devices()[0].platform
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results', f'lm_speed_{platform}.md')
  payload = {
    'command': command,
    'load_average': load,
    'cells': [
      dict(cell=name, **r, tokens_per_sec_per_round=per_round[name]) for name, r in rows.items()
    ],
  }
  report.write_results(out, lines, payload, indent=2)
  print(f'written to {out}')


if __name__ == '__main__':
  main()
