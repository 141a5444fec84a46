"""Train a MaxText model with an optimiser of the optax_sbs family.

  python examples/maxtext/launcher.py --method sbs [config.yml] [MaxText overrides ...]

  --method sbs             with_stochastic_batch_size(MaxText's optimiser), lam=0
  --method magma           magma(MaxText's optimiser)
  --method masked_updates  masked_updates(MaxText's optimiser)

Everything else is MaxText's: an optional config file (default: MaxText's
base.yml) and ``key=value`` overrides, as ``python -m
maxtext.trainers.pre_train.train`` takes them. MaxText has no optimiser hook
and no metrics hook, so this file patches two of its functions before it
calls MaxText's own ``main``:

- ``maxtext.optimizers.optimizers.get_optimizer``: the family member wraps
  the optimiser MaxText builds (``opt_type``, its learning-rate schedule,
  weight decay). With ``skip_step_on_spikes=true`` it wraps it *inside* the
  spike skipper, so a skipped step leaves its state (SBS's moving averages
  and counts, the masks' key) as it was. With ``trainable_parameters_mask``
  (and no spike skipper) it wraps ``optax.multi_transform``: the frozen
  parameters stay frozen (their update is set to zero after the mask), but
  the wrapper keeps state for them too and reports statistics for them.
- ``maxtext.trainers.pre_train.train.train_step``: the family's statistics
  per parameter and per layer (``optax_sbs.layer_statistics``) join the
  step's scalar metrics, so they reach MaxText's log, TensorBoard and
  ``metrics_file`` (``sbs/update_fraction/decoder/layers_3/mlp/wo/kernel``).

Scanned layers (``scan_layers=true``, MaxText's default) are stacked on axis
``param_scan_axis`` of each kernel under the path entry ``layers``
(DeepSeek-style models: ``dense_layers`` and ``moe_layers``); ``layer_axes``
tells the optimiser so, and each layer gets its own statistics and masks.
"""

from collections.abc import Sequence
import functools
import os

from absl import app
from absl import flags
from maxtext.common.common_types import DecoderBlockType
from maxtext.optimizers import optimizers
from maxtext.trainers.pre_train import train
from maxtext.utils.globals import MAXTEXT_CONFIGS_DIR

import optax_sbs

_METHOD = flags.DEFINE_enum(
  'method', 'sbs', ['sbs', 'magma', 'masked_updates'], 'The optax_sbs wrapper.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the masks (the same on every host and device).')


def layer_axes(config):
  """Which axis of each parameter indexes layers: MaxText's ``param_scan_axis``."""
  if not config.scan_layers:
    return None  # every layer is its own parameter: layers_0, layers_1, ...
  axis = config.param_scan_axis
  if config.decoder_block == DecoderBlockType.DEEPSEEK:
    dense = config.first_num_dense_layers
    counts = {'dense_layers': dense, 'moe_layers': config.num_decoder_layers - dense}
    return optax_sbs.layers_under(tuple(counts), axis=axis, num_layers=counts)
  return optax_sbs.layers_under('layers', axis=axis, num_layers=config.num_decoder_layers)


def wrap(method, seed, config, inner):
  """The family member ``method`` around MaxText's optimiser ``inner``."""
  axes = layer_axes(config)
  if method == 'sbs':  # the wrapper's defaults: alpha=0.1, lam=0
    return optax_sbs.with_stochastic_batch_size(inner, key=seed, layer_axes=axes)
  if method == 'magma':
    return optax_sbs.magma(inner, key=seed, layer_axes=axes)
  return optax_sbs.masked_updates(inner, key=seed, layer_axes=axes)


def patch_get_optimizer(method, seed):
  """Makes MaxText's ``get_optimizer`` return ``method`` around its optimiser."""
  get_optimizer = optimizers.get_optimizer
  skip_step_on_spikes = optimizers.skip_step_on_spikes

  def get_family_optimizer(config, learning_rate_schedule, model=None, mesh=None):
    wrapped = functools.partial(wrap, method, seed, config)
    if not config.skip_step_on_spikes:
      return wrapped(get_optimizer(config, learning_rate_schedule, model, mesh=mesh))
    # get_optimizer calls the module's skip_step_on_spikes(base_opt, ...): wrap base_opt there.
    optimizers.skip_step_on_spikes = lambda inner, **kw: skip_step_on_spikes(wrapped(inner), **kw)
    try:
      return get_optimizer(config, learning_rate_schedule, model, mesh=mesh)
    finally:
      optimizers.skip_step_on_spikes = skip_step_on_spikes

  optimizers.get_optimizer = get_family_optimizer


# Layer 3 of a stack named as MaxText's unrolled model names it: decoder/layers_3/mlp/wo/kernel.
_UNROLLED_NAMES = optax_sbs.maxtext_slice_names(('layers', 'dense_layers', 'moe_layers'))


def patch_train_step():
  """Adds ``optax_sbs.layer_statistics`` of the optimiser state to the step's metrics."""
  train_step = train.train_step

  @functools.wraps(train_step)
  def train_step_with_statistics(*args, **kwargs):
    state, metrics = train_step(*args, **kwargs)
    stats = optax_sbs.layer_statistics(state['optimizer'], slice_name=_UNROLLED_NAMES)
    metrics['scalar'].update(stats)
    return state, metrics

  train.train_step = train_step_with_statistics


def main(argv: Sequence[str]) -> None:
  patch_get_optimizer(_METHOD.value, _SEED.value)
  patch_train_step()
  program, *overrides = argv
  if not (overrides and overrides[0].endswith('.yml')):
    overrides.insert(0, os.path.join(MAXTEXT_CONFIGS_DIR, 'base.yml'))
  train.main([program, *overrides])


if __name__ == '__main__':
  app.run(main)
