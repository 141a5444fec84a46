"""Default configuration: the main job, SGD vs SBS on the embedded CIFAR-10 sample."""

import dataclasses
import os

EMBEDDED_SAMPLE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  'data',
  'cifar10_sample.npz',
)

# The paper's batch size -> momentum pairing (§5.1, Table 2).
PAPER_MOMENTUM = {16: 0.0, 32: 0.3, 64: 0.6, 128: 0.9}


@dataclasses.dataclass
class Config:
  """Everything that defines a run. Saved as config.json in the workdir."""

  # Data.
  dataset: str = EMBEDDED_SAMPLE  # TFDS name or path to a .npz
  data_dir: str | None = None  # TFDS data_dir
  download: bool = True  # let TFDS download and prepare
  train_fraction: float = 1.0  # the paper's 1/2, 1/4, 1/8
  augment: bool = True  # random crop (pad 4) + flip where valid
  # Model.
  model: str = 'small_cnn'
  # Optimisation.
  optimizers: tuple[str, ...] = ('sgd', 'sbs')
  epochs: int = 12
  batch_size: int = 32
  learning_rate: float = 0.1  # sigmoid schedule from here ...
  end_learning_rate: float = 0.001  # ... to here
  momentum: float | None = None  # None: the paper's pairing by batch size
  weight_decay: float = 0.0
  # SBS.
  alpha: float = 0.1
  lam: float = -4.0
  probability: float | None = None
  scale_by_count: bool = False
  magnitude: str = 'cma'
  group: str = 'type'  # 'type' (conv/dense/bias/norm) or 'single'
  count_dtype: str = 'int32'
  # Under momentum: 'frozen' (Algorithm 2: an element that is not released
  # keeps its value and its momentum trace; optax_sbs.sbs) or 'chain' (SBS
  # then SGD: the trace keeps moving waiting elements; a different method).
  sbs_momentum: str = 'frozen'
  # Baselines of the paper's comparison (§5.4).
  dropout_rate: float = 0.5  # 'dropout': before the classifier
  depth_dropout: float = 0.5  # 'adrop': linear in depth, this at the top
  esgd_inner_steps: int = 5  # 'esgd': Langevin steps per step
  esgd_inner_learning_rate: float = 0.1
  esgd_gamma: float = 0.03
  esgd_noise: float = 1e-4
  asgd_kappa: float = 1000.0  # 'asgd': Kidambi et al.'s defaults
  asgd_xi: float = 10.0
  # Protocol.
  trials: int = 3
  seed: int = 0
  eval_batch_size: int = 500
  workdir: str = 'results/default'


def get_config() -> Config:
  return Config()
