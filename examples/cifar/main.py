"""Train the paper's networks with SGD or SBS: the project's main job.

With no arguments: SGD vs SBS on the embedded CIFAR-10 sample with the small
CNN, a few trials; prints the summary table and writes the results folder.

  python examples/cifar/main.py                       # the main job
  python examples/cifar/main.py --dataset cifar10 --model resnet18 \\
      --batch-size 128 --epochs 100 --trials 10 --train-fraction 0.125
  python examples/cifar/main.py --dataset ../shared/data/cifar10.npz
"""

import argparse
import dataclasses
import os
import sys
import time

# Runnable as a script from anywhere: this folder holds its sibling modules.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from configs.default import Config  # pylint: disable=g-import-not-at-top


def parse_args(argv) -> tuple[bool, bool, bool, Config]:
  """Returns ``(resume, checkpoint, vmap_trials, config)``."""
  d = Config()
  p = argparse.ArgumentParser(
    description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument(
    '--dataset', default=d.dataset, help='TFDS name (cifar10, svhn_cropped, stl10) or a .npz path'
  )
  p.add_argument('--data-dir', default=d.data_dir, help='TFDS data_dir')
  p.add_argument('--no-download', action='store_true', help='never let TFDS download')
  p.add_argument('--model', default=d.model, help='small_cnn, vgg11, resnet18 or resnet50')
  p.add_argument(
    '--optimizers',
    default=','.join(d.optimizers),
    help='comma-separated methods: sgd, sbs, dropout (SGD + dropout), '
    'adrop (SGD + adaptive dropout / stochastic depth), esgd '
    '(Entropy-SGD), asgd (Accelerated SGD)',
  )
  p.add_argument('--epochs', type=int, default=d.epochs)
  p.add_argument('--batch-size', type=int, default=d.batch_size)
  p.add_argument('--learning-rate', type=float, default=d.learning_rate)
  p.add_argument('--end-learning-rate', type=float, default=d.end_learning_rate)
  p.add_argument(
    '--momentum',
    type=float,
    default=d.momentum,
    help='default: the paper pairing 16:0, 32:0.3, 64:0.6, 128:0.9',
  )
  p.add_argument('--weight-decay', type=float, default=d.weight_decay)
  p.add_argument('--alpha', type=float, default=d.alpha)
  p.add_argument('--lam', type=float, default=d.lam)
  p.add_argument('--probability', type=float, default=d.probability)
  p.add_argument('--scale-by-count', action='store_true')
  p.add_argument('--magnitude', default=d.magnitude, choices=('cma', 'gradient'))
  p.add_argument('--group', default=d.group, choices=('type', 'single'))
  p.add_argument('--count-dtype', default=d.count_dtype)
  p.add_argument(
    '--sbs-momentum',
    default=d.sbs_momentum,
    choices=('frozen', 'chain'),
    help="SBS under momentum: 'frozen' (Algorithm 2: a waiting "
    "element keeps its value and momentum) or 'chain' (SBS then "
    'SGD: momentum keeps moving waiting elements)',
  )
  b = p.add_argument_group('baselines')
  b.add_argument('--dropout-rate', type=float, default=d.dropout_rate)
  b.add_argument('--depth-dropout', type=float, default=d.depth_dropout)
  b.add_argument('--esgd-inner-steps', type=int, default=d.esgd_inner_steps)
  b.add_argument('--esgd-inner-learning-rate', type=float, default=d.esgd_inner_learning_rate)
  b.add_argument('--esgd-gamma', type=float, default=d.esgd_gamma)
  b.add_argument('--esgd-noise', type=float, default=d.esgd_noise)
  b.add_argument('--asgd-kappa', type=float, default=d.asgd_kappa)
  b.add_argument('--asgd-xi', type=float, default=d.asgd_xi)
  p.add_argument('--train-fraction', type=float, default=d.train_fraction)
  p.add_argument('--no-augment', action='store_true')
  p.add_argument('--trials', type=int, default=d.trials)
  p.add_argument('--seed', type=int, default=d.seed)
  p.add_argument('--eval-batch-size', type=int, default=d.eval_batch_size)
  p.add_argument('--workdir', default=d.workdir)
  p.add_argument(
    '--resume', action='store_true', help='continue the runs checkpointed in --workdir'
  )
  p.add_argument(
    '--no-checkpoint', action='store_true', help='do not save a checkpoint after every epoch'
  )
  p.add_argument(
    '--vmap-trials',
    action='store_true',
    help='run the trials of each optimizer at once with jax.vmap '
    '(no checkpoints; slower than sequential on CPU)',
  )
  g = p.add_argument_group(
    'multi-host',
    'run one process per host, each with the same flags but '
    '--process-id; all processes join through jax.distributed.initialize',
  )
  g.add_argument('--coordinator-address', default=None, help='host:port of process 0')
  g.add_argument('--num-processes', type=int, default=None)
  g.add_argument('--process-id', type=int, default=None)
  a = p.parse_args(argv)
  if a.coordinator_address is not None:
    if a.num_processes is None or a.process_id is None:
      p.error('--coordinator-address needs --num-processes and --process-id')
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(a.coordinator_address, a.num_processes, a.process_id)
  return (
    a.resume,
    not a.no_checkpoint,
    a.vmap_trials,
    dataclasses.replace(
      d,
      dataset=a.dataset,
      data_dir=a.data_dir,
      download=not a.no_download,
      model=a.model,
      optimizers=tuple(o.strip() for o in a.optimizers.split(',') if o.strip()),
      epochs=a.epochs,
      batch_size=a.batch_size,
      learning_rate=a.learning_rate,
      end_learning_rate=a.end_learning_rate,
      momentum=a.momentum,
      weight_decay=a.weight_decay,
      alpha=a.alpha,
      lam=a.lam,
      probability=a.probability,
      scale_by_count=a.scale_by_count,
      magnitude=a.magnitude,
      group=a.group,
      count_dtype=a.count_dtype,
      sbs_momentum=a.sbs_momentum,
      dropout_rate=a.dropout_rate,
      depth_dropout=a.depth_dropout,
      esgd_inner_steps=a.esgd_inner_steps,
      esgd_inner_learning_rate=a.esgd_inner_learning_rate,
      esgd_gamma=a.esgd_gamma,
      esgd_noise=a.esgd_noise,
      asgd_kappa=a.asgd_kappa,
      asgd_xi=a.asgd_xi,
      train_fraction=a.train_fraction,
      augment=not a.no_augment,
      trials=a.trials,
      seed=a.seed,
      eval_batch_size=a.eval_batch_size,
      workdir=a.workdir,
    ),
  )


def progress_bar(optimizer, trial, epochs):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  desc = f'{optimizer} trial {trial}' if trial != 'all' else f'{optimizer} all trials'
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


def main(argv=None) -> int:
  resume, checkpoint, vmap_trials, config = parse_args(sys.argv[1:] if argv is None else argv)
  checkpoint = checkpoint and not vmap_trials
  # Heavy imports after argument parsing, so --help is instant.
  import jax  # pylint: disable=g-import-not-at-top

  import checkpointing  # pylint: disable=g-import-not-at-top
  import input_pipeline  # pylint: disable=g-import-not-at-top
  import results  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top

  start = time.time()
  try:
    train.validate(config, jax.device_count())
    data = input_pipeline.load(config.dataset, config.data_dir, config.download)
    print(
      f'{data.name}: {len(data.x_train)} train / {len(data.x_test)} test '
      f'images {data.x_train.shape[1:]}, {data.num_classes} classes; '
      f'{jax.device_count()} device(s): {jax.devices()[0].platform}'
    )
    rows = train.run(
      config,
      data,
      progress_factory=lambda o, t: progress_bar(o, t, config.epochs),
      checkpoint=checkpoint,
      resume=resume,
      vectorized=vmap_trials,
    )
  except (input_pipeline.DataError, train.ConfigError, checkpointing.ResumeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  summary = train.summarize(rows, config.epochs)
  if jax.process_count() > 1:  # replicas must hold identical params
    for r in rows:
      if 'params_sha256' in r:
        print(
          f'process {jax.process_index()}: {r["optimizer"]} trial '
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
