"""The methods of the paper's comparison (§5.4), one registry entry each.

A method is a model option (dropout variants regularise the model) and an
optimizer factory. Adding a method is adding one entry to ``METHODS``; the
training program, its flags and the benchmarks read the registry.

The factories import JAX, Optax and optax_sbs when they run, not when this
module loads: the command line reads the registry's names and descriptions,
and ``--help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import TYPE_CHECKING
from typing import Any

from configs.default import Config

if TYPE_CHECKING:
  import jax
  import optax


@dataclasses.dataclass(frozen=True)
class Method:
  """One method of the comparison.

  Attributes:
    name: the name used on the command line and in results.
    description: one line for ``--help``.
    optimizer: ``(config, learning_rate, momentum, key) -> optimizer`` where
      ``learning_rate`` is the schedule, ``momentum`` the resolved momentum
      and ``key`` the trial's optimizer key; the program adds the coupled L2
      decay before it.
    model_options: ``config -> keyword arguments`` of
      ``models.create_model`` (the regulariser of dropout variants).
  """

  name: str
  description: str
  optimizer: Callable[[Config, optax.Schedule, float, jax.Array], optax.GradientTransformation]
  model_options: Callable[[Config], dict[str, Any]] = lambda config: {}


def _sgd(config: Config, lr: optax.Schedule, momentum: float, key: jax.Array):
  import optax  # pylint: disable=g-import-not-at-top

  del config, key
  return optax.sgd(lr, momentum=momentum or None)


def sbs_options(config: Config) -> dict[str, Any]:
  """The SBS keyword arguments a configuration asks for."""
  import optax_sbs  # pylint: disable=g-import-not-at-top

  return dict(
    alpha=config.alpha,
    lam=config.lam,
    global_normalization=config.global_normalization,
    probability=config.probability,
    scale_by_count=config.scale_by_count,
    magnitude=config.magnitude,
    group_fn=optax_sbs.single_group if config.group == 'single' else optax_sbs.parameter_type,
    count_dtype=config.count_dtype,
  )


def _sbs(config: Config, lr: optax.Schedule, momentum: float, key: jax.Array):
  import optax  # pylint: disable=g-import-not-at-top

  import optax_sbs  # pylint: disable=g-import-not-at-top

  sgd = _sgd(config, lr, momentum, key)
  if config.sbs_momentum == 'frozen':
    # Algorithm 2: a waiting element keeps its value and momentum trace.
    return optax_sbs.with_stochastic_batch_size(sgd, key, **sbs_options(config))
  # SBS then SGD: the trace keeps moving the waiting elements.
  return optax.chain(optax_sbs.stochastic_batch_size(key, **sbs_options(config)), sgd)


def _esgd(config: Config, lr: optax.Schedule, momentum: float, key: jax.Array):
  import optax_sbs  # pylint: disable=g-import-not-at-top

  return optax_sbs.baselines.entropy_sgd(
    lr,
    key=key,
    momentum=momentum or None,
    num_inner_steps=config.esgd_inner_steps,
    inner_learning_rate=config.esgd_inner_learning_rate,
    gamma=config.esgd_gamma,
    noise=config.esgd_noise,
    # The authors' x - mu, not Algorithm 1's gamma (x - mu): at SGD's rate,
    # gamma = 0.03 made every outer step 33x shorter (25% test accuracy
    # where SGD reached 46%).
    outer_step='authors',
  )


def _asgd(config: Config, lr: optax.Schedule, momentum: float, key: jax.Array):
  import optax_sbs  # pylint: disable=g-import-not-at-top

  del momentum, key  # Accelerated SGD has its own momentum-like iterate.
  return optax_sbs.baselines.accelerated_sgd(lr, kappa=config.asgd_kappa, xi=config.asgd_xi)


METHODS: dict[str, Method] = {
  m.name: m
  for m in (
    Method('sgd', "SGD (momentum by the paper's batch-size pairing)", _sgd),
    Method('sbs', 'stochastic batch size around SGD (--sbs-momentum)', _sbs),
    Method(
      'dropout',
      'SGD on the model with dropout before the classifier (--dropout-rate)',
      _sgd,
      lambda config: {'dropout_rate': config.dropout_rate},
    ),
    Method(
      'adrop',
      'SGD with adaptive dropout: rates linear in depth, stochastic depth in '
      'ResNets (--depth-dropout)',
      _sgd,
      lambda config: {'depth_dropout': config.depth_dropout},
    ),
    Method('esgd', "Entropy-SGD (--esgd-*), the authors' outer step", _esgd),
    Method('asgd', 'Accelerated SGD (--asgd-kappa, --asgd-xi)', _asgd),
  )
}


def keyed_states() -> tuple[type, ...]:
  """Optimizer state types that carry a PRNG key (replaced per trial when
  trials are vectorised)."""
  import optax_sbs  # pylint: disable=g-import-not-at-top

  return (optax_sbs.StochasticBatchSizeState, optax_sbs.baselines.ScaleByEntropySGDState)
