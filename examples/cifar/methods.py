"""The methods of the paper's comparison (§5.4), one registry entry each.

A method is a model option (dropout variants regularise the model) and a
factory of its Optax transformation (its ``tx``). Adding a method is adding
one entry to ``METHODS``; the training program, its flags and the benchmarks
read the registry.

A trial's key reaches the tx's state one way: every tx is built with
``BUILD_KEY``, and ``steps.create_state`` puts the trial's key in place of
every PRNG key of the initial state (``steps.with_tx_key``). The library's
transformations read their key only in ``init``, where it becomes the
state's, so the state is the one the tx built with the trial's key would
start from, and one tx serves every trial (vmapped trials share it).

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
  import optax


@dataclasses.dataclass(frozen=True)
class Method:
  """One method of the comparison.

  Attributes:
    name: the name used on the command line and in results.
    description: one line for ``--help``.
    tx: ``(config, learning_rate, momentum) -> tx`` where ``learning_rate``
      is the schedule and ``momentum`` the resolved momentum; the program
      adds the coupled L2 decay before it. A tx that draws random numbers
      is built with ``BUILD_KEY`` (see the module's docstring).
    model_options: ``config -> keyword arguments`` of
      ``models.create_model`` (the regulariser of dropout variants).
    takes_value_fn: the tx's ``update`` takes ``value_fn``, the loss of the
      step's batch as a function of the parameters (Entropy-SGD's inner
      steps); the train step passes it to these methods only.
  """

  name: str
  description: str
  tx: Callable[[Config, optax.Schedule, float], optax.GradientTransformation]
  model_options: Callable[[Config], dict[str, Any]] = lambda config: {}
  takes_value_fn: bool = False


# The key every tx is built with; the trial's key replaces it in the state.
BUILD_KEY = 0


def _sgd(config: Config, lr: optax.Schedule, momentum: float):
  import optax  # pylint: disable=g-import-not-at-top

  del config
  return optax.sgd(lr, momentum=momentum or None)


# The configuration's fields that are SBS keyword arguments of the same name.
_SBS_FIELDS = (
  'alpha',
  'lam',
  'global_normalization',
  'probability',
  'scale_by_count',
  'magnitude',
  'count_dtype',
)


def sbs_options(config: Config) -> dict[str, Any]:
  """The SBS keyword arguments a configuration asks for."""
  import optax_sbs  # pylint: disable=g-import-not-at-top

  return {
    **{name: getattr(config, name) for name in _SBS_FIELDS},
    'group_fn': optax_sbs.single_group if config.group == 'single' else optax_sbs.parameter_type,
  }


def _sbs(config: Config, lr: optax.Schedule, momentum: float):
  import optax  # pylint: disable=g-import-not-at-top

  import optax_sbs  # pylint: disable=g-import-not-at-top

  sgd = _sgd(config, lr, momentum)
  if config.sbs_momentum == 'frozen':
    # Algorithm 2: a waiting element keeps its value and momentum trace.
    return optax_sbs.with_stochastic_batch_size(sgd, BUILD_KEY, **sbs_options(config))
  # SBS then SGD: the trace keeps moving the waiting elements.
  return optax.chain(optax_sbs.stochastic_batch_size(BUILD_KEY, **sbs_options(config)), sgd)


def _esgd(config: Config, lr: optax.Schedule, momentum: float):
  import optax_sbs  # pylint: disable=g-import-not-at-top

  return optax_sbs.baselines.entropy_sgd(
    lr,
    key=BUILD_KEY,
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


def _asgd(config: Config, lr: optax.Schedule, momentum: float):
  import optax_sbs  # pylint: disable=g-import-not-at-top

  del momentum  # Accelerated SGD has its own momentum-like iterate.
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
    Method('esgd', "Entropy-SGD (--esgd-*), the authors' outer step", _esgd, takes_value_fn=True),
    Method('asgd', 'Accelerated SGD (--asgd-kappa, --asgd-xi)', _asgd),
  )
}
