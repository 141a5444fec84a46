"""Orbax checkpoints of a training run, one per epoch, for ``--resume``.

Each (method, trial) run has its own Orbax ``CheckpointManager`` folder,
``<workdir>/checkpoints/<method>_trial<k>/<epoch>/``, holding the train
state and, as JSON, the rows logged so far and the data-order generator's
state. Orbax writes a checkpoint to a temporary folder and renames it when
complete, so an interrupted save never leaves a half-written checkpoint
that a resume would read.

Typed PRNG keys (the SBS key, the dropout key) are saved and restored by
Orbax itself (orbax-checkpoint >= 0.12), with their implementation.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp


class ResumeError(ValueError):
  """A workdir that cannot be resumed with this configuration."""


def _state_tree(state) -> dict:
  return dict(
    step=state.step,
    params=state.params,
    opt_state=state.opt_state,
    batch_stats=state.batch_stats,
    dropout_key=state.dropout_key,
  )


class RunCheckpointer:
  """Saves and restores one (method, trial) run."""

  def __init__(self, workdir: str, method: str, trial: int):
    path = os.path.abspath(os.path.join(workdir, 'checkpoints', f'{method}_trial{trial}'))
    self._manager = ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    )

  def save(self, epoch: int, state, rows: list[dict], rng_state: dict) -> None:
    self._manager.save(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_state_tree(state)),
        meta=ocp.args.JsonSave({'rows': rows, 'rng': rng_state}),
      ),
    )
    self._manager.wait_until_finished()

  def restore(self, template_state) -> tuple[Any, list[dict], dict] | None:
    """``(state, rows, rng_state)`` of the latest epoch, or None if none."""
    epoch = self._manager.latest_step()
    if epoch is None:
      return None
    template = _state_tree(template_state)
    # Shapes, dtypes (typed keys included) and shardings of the live state.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    state = template_state.replace(**restored['state'])
    return state, restored['meta']['rows'], restored['meta']['rng']

  def close(self):
    self._manager.close()


def prepare_workdir(workdir: str, config, resume: bool) -> None:
  """Checks a resumed workdir's config; clears old checkpoints otherwise.

  Raises:
    ResumeError: ``resume`` with a workdir made by another configuration, or
      with no saved configuration.
  """
  path = os.path.join(workdir, 'config.json')
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  if resume:
    if not os.path.isfile(path):
      raise ResumeError(f'--resume: {workdir} has no config.json to resume')
    with open(path) as f:
      saved = json.load(f)
    ignore = {'workdir'}
    diffs = [
      f'{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)'
      for k in sorted(set(saved) | set(current))
      if k not in ignore and saved.get(k) != current.get(k)
    ]
    if diffs:
      raise ResumeError(
        f'--resume: {workdir} was made with a different configuration; ' + '; '.join(diffs)
      )
    return
  shutil.rmtree(os.path.join(workdir, 'checkpoints'), ignore_errors=True)
  os.makedirs(workdir, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(current, f, indent=2)
