"""Fabricated caches for the tests of the analyses."""

from harness import runner as runner_lib
from harness import store

PROVENANCE = {'machine': 'a machine', 'versions': 'some versions', 'command': 'a command'}


def runner_for(tmp_path, study, scale='smoke'):
  """A runner of ``study`` that reads and writes a cache under ``tmp_path``."""
  options = runner_lib.Options(
    study=study, scale=scale, cached_only=True, workdir=str(tmp_path), out=str(tmp_path / 'r.md')
  )
  return runner_lib.Runner(runner_lib.load_study(study), options)


def cache(runner, config, per_trial_rows, facts=None, provenance=PROVENANCE):
  """Caches one run per entry of ``per_trial_rows`` (trial t: seed + t)."""
  for trial, rows in enumerate(per_trial_rows):
    run = dict(config, seed=config['seed'] + trial)
    runner.store.add(
      {
        'key': store.run_key(run, runner.data_id),
        'config': store.run_config(run),
        'data': runner.data_id,
        'facts': facts or {'test_images': 100},
        'rows': rows,
        'seconds': 1.0,
        'provenance': provenance,
      }
    )


def epochs(accuracy, epochs=2, train_accuracy=100.0, **extra):
  return [
    dict(
      method='m',
      epoch=e,
      train_loss=0.01,
      train_accuracy=train_accuracy,
      val_loss=2.0,
      val_accuracy=accuracy,
      **extra,
    )
    for e in range(1, epochs + 1)
  ]


def steps(val, steps=(10, 20), test=None):
  rows = [
    dict(method='m', step=s, val_loss=val + (steps[-1] - s) / 1000, tokens_per_sec=100.0)
    for s in steps
  ]
  rows[-1]['test_loss'] = val + 0.1 if test is None else test
  return rows
