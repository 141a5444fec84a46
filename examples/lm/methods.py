"""The compared methods: AdamW and update masks around it, one registry entry each.

Every method is a factory of its Optax transformation (its ``tx``),
``(config, learning_rate) -> optax.GradientTransformation``; the training
program clips the gradient before it (``--clip-norm``). Adding a method is
adding one entry to ``METHODS``; the flags and the benchmark read the
registry.

A trial's key reaches the tx's state one way: every tx is built with
``BUILD_KEY``, and ``train.create_state`` puts the trial's key in place of every
PRNG key of the initial state (``train.with_tx_key``). The library's
transformations read their key only in ``init``, where it becomes the
state's, so the state is the one the tx built with the trial's key would
start from, and one tx (one compiled step) serves every trial.

The methods that act per layer (``masked_updates``, ``lr_dropout``, ``magma``,
``sbs``) get ``layer_axes=models.layer_axes(config)``: None for the unrolled
model (the library's default), and with ``--scan-layers`` axis 0 of every
leaf under ``layers``, so each stacked slice is a layer, as each block of the
unrolled model is.

The factories import JAX, Optax, optax_sbs and the model when they run, not
when this module loads, so ``--help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import TYPE_CHECKING
from typing import Any

from configs.default import Config

if TYPE_CHECKING:
  import optax


@dataclasses.dataclass(frozen=True)
class Method:
  """One method of the comparison.

  Attributes:
    name: the name used on the command line and in results.
    description: one line for ``--help``.
    tx: ``(config, learning_rate) -> tx``, where ``learning_rate`` is the
      warm-up + cosine schedule. A tx that draws random numbers (the masks)
      is built with ``BUILD_KEY`` (see the module's docstring).
  """

  name: str
  description: str
  tx: Callable[[Config, optax.Schedule], optax.GradientTransformation]


# The key every tx is built with; the trial's key replaces it in the state.
BUILD_KEY = 0


def _layer_axes(config: Config):
  """The model's stacked-layer axes for the txs (None: unrolled)."""
  import models  # pylint: disable=g-import-not-at-top

  return models.layer_axes(config)


def _decay_mask(config: Config):
  """Weight decay on matrices and embeddings, not on biases and norm scales:
  on leaves whose layer (a slice, for stacked leaves) has 2 or more axes."""
  import jax  # pylint: disable=g-import-not-at-top

  layer_axes = _layer_axes(config) or (lambda path, p: ())
  return lambda params: jax.tree_util.tree_map_with_path(
    lambda path, p: p.ndim - len(layer_axes(path, p)) >= 2, params
  )


def _adamw(config: Config, lr: optax.Schedule):
  import optax  # pylint: disable=g-import-not-at-top

  return optax.adamw(
    lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=_decay_mask(config)
  )


def _around_adamw(factory: str, options: Callable[[Config, Any], dict[str, Any]]):
  """The tx ``optax_sbs.<factory>`` around AdamW, built with ``BUILD_KEY`` and
  the model's ``layer_axes``; ``options(config, optax_sbs)`` gives its own
  keyword arguments."""

  def tx(config: Config, lr: optax.Schedule):
    import optax_sbs  # pylint: disable=g-import-not-at-top

    return getattr(optax_sbs, factory)(
      _adamw(config, lr),
      BUILD_KEY,
      layer_axes=_layer_axes(config),
      **options(config, optax_sbs),
    )

  return tx


_masked_updates = _around_adamw(
  'masked_updates',
  lambda c, _: dict(probability=c.probability, rescale=True, granularity=c.granularity),
)
# Learning-Rate Dropout (Lin et al., 2019): each coordinate's step is dropped
# with probability 1 - p, kept steps are not rescaled (layer_axes has no effect
# per element; passed for uniformity).
_lr_dropout = _around_adamw(
  'masked_updates',
  lambda c, _: dict(probability=c.probability, rescale=False, granularity='element'),
)
_magma = _around_adamw(
  'magma',
  lambda c, _: dict(
    probability=c.probability,
    tau=c.tau,
    score_decay=c.score_decay,
    momentum_decay=c.momentum_decay,
    granularity=c.granularity,
  ),
)
_sbs = _around_adamw(
  'with_stochastic_batch_size',
  lambda c, sbs: dict(
    alpha=c.alpha, lam=c.lam, probability=c.sbs_probability, group_fn=sbs.parameter_type
  ),
)


def _adamw_accumulate(config: Config, lr: optax.Schedule):
  import optax  # pylint: disable=g-import-not-at-top

  k = config.accumulate_steps
  # The inner AdamW counts its own updates (one per k steps): its schedule
  # reads the outer step, so warm-up and decay end where AdamW's do.
  return optax.MultiSteps(_adamw(config, lambda count: lr(count * k)), every_k_schedule=k)


METHODS: dict[str, Method] = {
  m.name: m
  for m in (
    Method('adamw', 'AdamW, warm-up + cosine learning rate (--b1 --b2 --weight-decay)', _adamw),
    Method(
      'masked_updates',
      'AdamW whose updates are kept with probability p and rescaled by 1/p, its state '
      'dense (SkipUpdate; --probability --granularity)',
      _masked_updates,
    ),
    Method(
      'lr_dropout',
      'Learning-Rate Dropout: AdamW steps dropped per element with probability 1 - p, '
      'not rescaled (--probability)',
      _lr_dropout,
    ),
    Method(
      'magma',
      'Magma: masked AdamW updates scaled by momentum-gradient alignment '
      '(--probability --tau --score-decay --momentum-decay --granularity)',
      _magma,
    ),
    Method(
      'sbs',
      'stochastic batch size around AdamW (Algorithm 2; --alpha --lam --sbs-probability)',
      _sbs,
    ),
    Method(
      'adamw_accumulate',
      'AdamW on the mean gradient of k batches (optax.MultiSteps; --accumulate-steps): the '
      'control for the larger batches SBS gives',
      _adamw_accumulate,
    ),
  )
}
