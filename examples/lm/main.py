"""Train a small character-level transformer (Flax NNX) with AdamW and update masks.

With no arguments: AdamW, masked_updates(AdamW) and magma(AdamW) on TFDS's
tiny_shakespeare, one trial each; prints the summary table and writes the
results folder. Offline, pass a local copy of the file TFDS downloads (the
same splits):

  python examples/lm/main.py --dataset path/to/tinyshakespeare.txt
  python examples/lm/main.py --dataset path/to/tinyshakespeare.txt \\
      --methods adamw lr_dropout sbs --trials 3 --steps 2000 --learning-rate 2e-3
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
  """Save an Orbax checkpoint at every evaluation of every run."""


@dataclasses.dataclass
class Flags:
  config: Annotated[CommandLineConfig, tyro.conf.OmitArgPrefixes]
  run: Annotated[RunOptions, tyro.conf.OmitArgPrefixes]


def parse_args(argv) -> tuple[RunOptions, Config]:
  """The command line (generated from ``Config``) -> ``(run options, config)``.

  Raises ``SystemExit(2)`` with tyro's message on a malformed command line.
  """
  flags = tyro.cli(
    Flags,
    args=argv,
    prog='main.py',
    description=__doc__,
    default=Flags(CommandLineConfig(), RunOptions()),
  )
  config = Config(**{f.name: getattr(flags.config, f.name) for f in dataclasses.fields(Config)})
  return flags.run, config


def progress_line(method: str, trial: int, steps: int):
  """Prints one line per evaluation of a run."""

  def update(row):
    print(
      f'{method} trial {trial} step {row["step"]}/{steps}: train {row["train_loss"]:.4f}'
      f' val {row["val_loss"]:.4f} nats/char, {row["tokens_per_sec"]:.0f} tokens/s,'
      f' lr {row["learning_rate"]:.2e}',
      flush=True,
    )

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
  sys.stderr.write(captured.getvalue())
  # Heavy imports after argument parsing, so --help is instant.
  import jax  # pylint: disable=g-import-not-at-top

  import checkpointing  # pylint: disable=g-import-not-at-top
  import input_pipeline  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  import results  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top

  def load_data():  # train.run validates the configuration, then loads
    data = input_pipeline.load(config.dataset, config.data_dir, config.download)
    print(
      f'{data.name}: {len(data.train)} / {len(data.validation)} / {len(data.test)} characters'
      f' (train / validation / test), vocabulary {data.vocab_size};'
      f' {models.num_params(config, data.vocab_size)}'
      f' parameters; {jax.devices()[0].platform}',
      flush=True,
    )
    return data

  start = time.time()
  try:
    rows = train.run(
      config,
      load_data,
      progress_factory=lambda m, t: progress_line(m, t, config.steps),
      checkpoint=run.checkpoint,
      resume=run.resume,
    )
  except (input_pipeline.DataError, ConfigError, checkpointing.ResumeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  summary = results.summarize(rows)
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
