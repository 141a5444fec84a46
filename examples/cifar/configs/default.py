"""Default configuration: the main job, SGD vs SBS on the embedded CIFAR-10 sample.

Every field's docstring is its ``--help`` text, and ``Literal`` types are its
choices: ``main.py`` generates the command line from this dataclass with
``tyro``.
"""

import dataclasses
import os
from typing import Literal

EMBEDDED_SAMPLE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  'data',
  'cifar10_sample.npz',
)

# The paper's batch size -> momentum pairing (§5.1, Table 2).
PAPER_MOMENTUM = {16: 0.0, 32: 0.3, 64: 0.6, 128: 0.9}


class ConfigError(ValueError):
  """A configuration that cannot run, with a message saying why."""


# The networks of ``models.MODELS`` (a test keeps the two in step).
ModelName = Literal['small_cnn', 'wide_cnn', 'vgg11', 'resnet18', 'resnet50']


@dataclasses.dataclass
class Config:
  """Everything that defines a run. Saved as config.json in the workdir."""

  # Data.
  dataset: str = EMBEDDED_SAMPLE
  """TFDS name (cifar10, svhn_cropped, stl10) or a path to a .npz file."""
  data_dir: str | None = None
  """TFDS data_dir."""
  download: bool = True
  """Let TFDS download and prepare the dataset."""
  train_fraction: float = 1.0
  """Class-balanced fraction of the training set (the paper's 1/2, 1/4, 1/8)."""
  augment: bool = True
  """Random crop (pad 4) and horizontal flip where the dataset allows it."""

  # Model.
  model: ModelName = 'small_cnn'
  """The network."""

  # Optimisation.
  methods: tuple[str, ...] = ('sgd', 'sbs')
  """Methods to compare (names of ``methods.METHODS``)."""
  epochs: int = 12
  """Epochs per run."""
  batch_size: int = 32
  """Global batch size, split over devices and processes."""
  learning_rate: float = 0.1
  """Start of the paper's sigmoid learning-rate schedule."""
  end_learning_rate: float = 0.001
  """End of the sigmoid schedule."""
  momentum: float | None = None
  """SGD momentum; None: the paper's pairing 16:0, 32:0.3, 64:0.6, 128:0.9."""
  weight_decay: float = 0.0
  """Coupled L2 decay, added to the gradient every method sees."""

  # SBS.
  alpha: float = 0.1
  """Slope of the in-layer term of SBS's probability (eq. 18)."""
  lam: float = -4.0
  """Slope of the across-layer term of SBS's probability (eq. 20)."""
  global_normalization: Literal['std', 'mean'] = 'std'
  """How SBS compares a layer's mean magnitude with its group's: 'std' (eq. 19, standardised) or 'mean' (relative to the group's mean)."""
  probability: float | None = None
  """A fixed SBS update probability instead of the adaptive one."""
  scale_by_count: bool = False
  """Multiply a released SBS update by its count (SGD's step per sample)."""
  magnitude: Literal['cma', 'gradient'] = 'cma'
  """What SBS's probability measures: the accumulated or the current gradient."""
  group: Literal['type', 'single'] = 'type'
  """SBS's layer groups: by type (conv/dense/bias/norm) or one group."""
  count_dtype: Literal['int32', 'int16', 'uint16', 'uint8'] = 'int32'
  """Integer dtype of SBS's per-element counts (smaller saves memory)."""
  sbs_momentum: Literal['frozen', 'chain'] = 'frozen'
  """SBS under momentum: 'frozen' (Algorithm 2: a waiting element keeps its value and momentum trace) or 'chain' (SBS then SGD: the trace keeps moving waiting elements; a different method)."""

  # Baselines of the paper's comparison (§5.4).
  dropout_rate: float = 0.5
  """'dropout': the rate of the dropout before the classifier."""
  depth_dropout: float = 0.5
  """'adrop': the top rate; rates grow linearly in depth (stochastic depth in ResNets)."""
  esgd_inner_steps: int = 5
  """'esgd': Langevin steps per step."""
  esgd_inner_learning_rate: float = 0.1
  """'esgd': learning rate of the Langevin steps."""
  esgd_gamma: float = 0.03
  """'esgd': coupling of the local entropy."""
  esgd_noise: float = 1e-4
  """'esgd': scale of the Langevin noise."""
  asgd_kappa: float = 1000.0
  """'asgd': Kidambi et al.'s long-step parameter."""
  asgd_xi: float = 10.0
  """'asgd': Kidambi et al.'s statistical advantage parameter."""

  # Protocol.
  trials: int = 3
  """Paired trials: trial t uses seed + t for every method."""
  seed: int = 0
  """Seed of trial 0 (init, data subset and order, augmentation, the tx's key)."""
  eval_batch_size: int = 500
  """Batch size of evaluation."""
  workdir: str = 'results/default'
  """Folder of the results files and checkpoints."""
