"""Train the paper's networks with SGD or SBS: the project's main job.

With no arguments: SGD vs SBS on the embedded CIFAR-10 sample with the small
CNN, a few trials; prints the summary table and writes the results folder.

  python examples/cifar/main.py                       # the main job
  python examples/cifar/main.py --dataset cifar10 --model resnet18 \\
      --batch-size 128 --epochs 100 --trials 10 --train-fraction 0.125
  python examples/cifar/main.py --dataset path/to/cifar10.npz
"""

import contextlib
import dataclasses
import io
import os
import sys
import time
from typing import Annotated
from typing import Literal

import tyro

from configs.default import Config
from configs.default import ConfigError
import methods  # light: no JAX import

MethodName = Literal[tuple(methods.METHODS)]  # type: ignore[valid-type]
# Computed out here: inside the class body, ``methods`` is the field.
METHODS_HELP = (
  'Methods to compare, each trained on the same trials. '
  + '; '.join(f'{m.name}: {m.description}' for m in methods.METHODS.values())
  + '.'
)


@dataclasses.dataclass
class CommandLineConfig(Config):
  """Everything that defines a run. Saved as config.json in the workdir."""

  methods: Annotated[tuple[MethodName, ...], tyro.conf.arg(help=METHODS_HELP)] = Config.methods


@dataclasses.dataclass
class RunOptions:
  """How the program runs; not part of the results' configuration."""

  resume: bool = False
  """Continue the runs checkpointed in --workdir (made by the same configuration)."""
  checkpoint: bool = True
  """Save an Orbax checkpoint after every epoch of every run."""
  vmap_trials: bool = False
  """Run the trials of each method at once with jax.vmap (no checkpoints; slower than sequential on CPU)."""
  coordinator_address: str | None = None
  """Multi-host: host:port of process 0. Run one process per host, each with the same flags but --process-id; they join through jax.distributed.initialize."""
  num_processes: int | None = None
  """Multi-host: the number of processes."""
  process_id: int | None = None
  """Multi-host: this process's index."""


@dataclasses.dataclass
class Flags:
  config: Annotated[CommandLineConfig, tyro.conf.OmitArgPrefixes]
  run: Annotated[RunOptions, tyro.conf.OmitArgPrefixes]


def parse_args(argv) -> tuple[RunOptions, Config]:
  """The command line (generated from ``Config``) -> ``(run options, config)``.

  Raises ``SystemExit(2)`` with tyro's message on a malformed command line,
  ``ConfigError`` on incomplete multi-host options.
  """
  flags = tyro.cli(
    Flags,
    args=argv,
    prog='main.py',
    description=__doc__,
    default=Flags(CommandLineConfig(), RunOptions()),
  )
  run = flags.run
  multi_host = (run.coordinator_address, run.num_processes, run.process_id)
  if any(x is not None for x in multi_host) and any(x is None for x in multi_host):
    raise ConfigError(
      'multi-host runs need --coordinator-address, --num-processes and --process-id'
    )
  config = Config(**{f.name: getattr(flags.config, f.name) for f in dataclasses.fields(Config)})
  return run, config


def progress_bar(method: str, trial, epochs: int):
  """A progress bar of one run (``trial == 'all'``: vectorised trials)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  desc = f'{method} trial {trial}' if trial != 'all' else f'{method} all trials'
  bar = tqdm(total=epochs, desc=desc, unit='epoch', leave=True, dynamic_ncols=True, file=sys.stdout)

  def update(row):
    bar.set_postfix(
      loss=f'{row["train_loss"]:.3f}',
      acc=f'{row["val_accuracy"]:.1f}',
      img_s=f'{row["images_per_sec"]:.0f}',
    )
    bar.update(1)

  update.close = bar.close
  return update


def _box_text(text: str) -> str:
  """The message inside tyro's framed error box, on one line."""
  body = []
  for line in text.splitlines()[1:]:  # below the top border (the box's title)
    line = line.strip().strip('│').strip()
    if not line or set(line) <= set('─╰╯ '):
      break
    body.append(line)
  return ' '.join(body) or ' '.join(text.split())


def main(argv=None) -> int:
  """Runs the command line; returns the exit status (2 on any error, with
  one line ``error: ...`` on stderr)."""
  captured = io.StringIO()
  try:
    with contextlib.redirect_stderr(captured):
      run, config = parse_args(sys.argv[1:] if argv is None else argv)
  except SystemExit as e:  # --help (printed), or a malformed command line
    if e.code in (None, 0):
      return 0
    print(f'error: {_box_text(captured.getvalue())} (see main.py --help)', file=sys.stderr)
    return int(e.code) if isinstance(e.code, int) else 2
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  sys.stderr.write(captured.getvalue())
  checkpoint = run.checkpoint and not run.vmap_trials
  # Heavy imports after argument parsing, so --help is instant.
  import jax  # pylint: disable=g-import-not-at-top

  if run.coordinator_address is not None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(run.coordinator_address, run.num_processes, run.process_id)

  import checkpointing  # pylint: disable=g-import-not-at-top
  import input_pipeline  # pylint: disable=g-import-not-at-top
  import results  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top

  def load_data():  # train.run validates the configuration, then loads
    data = input_pipeline.load(config.dataset, config.data_dir, config.download)
    print(
      f'{data.name}: {len(data.x_train)} train / {len(data.x_test)} test '
      f'images {data.x_train.shape[1:]}, {data.num_classes} classes; '
      f'{jax.device_count()} device(s): {jax.devices()[0].platform}'
    )
    return data

  start = time.time()
  try:
    rows = train.run(
      config,
      load_data,
      progress_factory=lambda m, t: progress_bar(m, t, config.epochs),
      checkpoint=checkpoint,
      resume=run.resume,
      vectorized=run.vmap_trials,
    )
  except (input_pipeline.DataError, ConfigError, checkpointing.ResumeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  summary = results.summarize(rows, config.epochs)
  if jax.process_count() > 1:  # replicas must hold identical params
    for r in rows:
      if 'params_sha256' in r:
        print(
          f'process {jax.process_index()}: {r["method"]} trial '
          f'{r["trial"]} final params sha256 {r["params_sha256"]}'
        )
  if jax.process_index() != 0:  # every process has the same rows
    return 0
  paths = results.write(config.workdir, config, rows, summary)
  print()
  print(results.summary_markdown(summary, config))
  print(
    f'results in {os.path.abspath(config.workdir)} '
    f'({", ".join(os.path.basename(p) for p in paths.values())}); '
    f'{time.time() - start:.0f} s'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
