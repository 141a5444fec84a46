"""Orbax checkpoints of a training run, one per evaluation, for ``--resume``.

Each (method, trial) run has its own Orbax ``CheckpointManager`` folder,
``<workdir>/checkpoints/<method>_trial<k>/<step>/``, holding the NNX states
of the model and of the optimizer (``nnx.state``; typed PRNG keys of the
masks included) and, as JSON, the rows logged so far and the state of the
numpy Generator that draws the training windows. Orbax writes a checkpoint to
a temporary folder and renames it when complete, so an interrupted save
never leaves a half-written checkpoint behind.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

from flax import nnx
import jax
import orbax.checkpoint as ocp


class ResumeError(ValueError):
  """A workdir that cannot be resumed with this configuration."""


class RunCheckpointer:
  """Saves and restores one (method, trial) run."""

  def __init__(self, workdir: str, method: str, trial: int):
    path = os.path.abspath(os.path.join(workdir, 'checkpoints', f'{method}_trial{trial}'))
    self._manager = ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    )

  def save(self, step: int, model, optimizer, rows: list[dict], rng_state: dict) -> None:
    state = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({'rows': rows, 'rng': rng_state}),
      ),
    )
    self._manager.wait_until_finished()

  def restore(self, model, optimizer) -> tuple[list[dict], dict] | None:
    """Loads the latest checkpoint into ``model`` and ``optimizer`` (in place);
    returns ``(rows, rng_state)``, or None if there is none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    template = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
    # Shapes, dtypes (typed keys included) and shardings of the live state.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    nnx.update(model, restored['state']['model'])
    nnx.update(optimizer, restored['state']['optimizer'])
    meta: Any = restored['meta']
    return meta['rows'], meta['rng']

  def close(self) -> None:
    self._manager.close()


def prepare_workdir(workdir: str, config, resume: bool) -> None:
  """Checks a resumed workdir's config; clears old checkpoints otherwise.

  A field the saved config lacks (added to ``Config`` since) counts as its
  default, which is what the run used.

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
    # Fields added since the workdir was made (e.g. scan_layers) ran at their defaults.
    defaults = json.loads(json.dumps(dataclasses.asdict(type(config)())))
    saved = {**defaults, **saved}
    diffs = [
      f'{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)'
      for k in sorted(set(saved) | set(current))
      if k != 'workdir' and saved.get(k) != current.get(k)
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
