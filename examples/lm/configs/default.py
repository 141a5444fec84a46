"""Default configuration: a small character-level transformer on Tiny Shakespeare.

Every field's docstring is its ``--help`` text, and ``Literal`` types are its
choices: ``main.py`` generates the command line from this dataclass with
``tyro``.
"""

import dataclasses
from typing import Literal

# The TFDS dataset whose splits a local text file reproduces.
TFDS_NAME = 'tiny_shakespeare'


class ConfigError(ValueError):
  """A configuration that cannot run, with a message saying why."""


@dataclasses.dataclass
class Config:
  """Everything that defines a run. Saved as config.json in the workdir."""

  # Data.
  dataset: str = TFDS_NAME
  """TFDS name (tiny_shakespeare) or a path to a UTF-8 .txt file, split 90/5/5 by characters exactly as TFDS's tiny_shakespeare builder splits its file (offline: a local copy of that file)."""
  data_dir: str | None = None
  """TFDS data_dir."""
  download: bool = True
  """Let TFDS download and prepare the dataset."""

  # Model.
  num_layers: int = 2
  """Transformer blocks."""
  num_heads: int = 4
  """Attention heads per block (must divide --embed-dim)."""
  embed_dim: int = 128
  """Width of the residual stream."""
  mlp_ratio: int = 4
  """Hidden width of each block's MLP, in multiples of --embed-dim."""
  context_length: int = 64
  """Characters per training window (the model's maximum context)."""
  tie_embeddings: bool = False
  """Use the token embedding as the output head."""
  scan_layers: bool = False
  """Stack the blocks' parameters along a leading layer axis (nnx.vmap) and run them with nnx.scan (one block compiled, not num_layers); the methods' transformations get layer_axes (optax_sbs.layers_under('layers')), so each slice is a layer to them, as each block of the unrolled model is."""
  dropout: float = 0.0
  """Dropout of the attention weights and of both residual branches of every block, in training only (GPT-2's attention and residual dropout); 0: none."""

  # Optimisation.
  methods: tuple[str, ...] = ('adamw', 'masked_updates', 'magma')
  """Methods to compare (names of ``methods.METHODS``), each on the same trials."""
  batch_size: int = 32
  """Windows per training step."""
  steps: int = 1000
  """Training steps per run."""
  learning_rate: float = 3e-3
  """Peak learning rate of AdamW (after warm-up; cosine decay after it)."""
  warmup_steps: int = 100
  """Linear warm-up from 0 to --learning-rate."""
  end_learning_rate_ratio: float = 0.1
  """The cosine decays to this fraction of --learning-rate at the last step."""
  weight_decay: float = 0.1
  """AdamW's decoupled weight decay, on matrices and embeddings (not on biases and norms)."""
  b1: float = 0.9
  """AdamW's first-moment decay."""
  b2: float = 0.99
  """AdamW's second-moment decay."""
  clip_norm: float = 1.0
  """Clip the gradient to this global norm before the method sees it (0: no clipping)."""

  # Method options.
  probability: float = 0.5
  """'masked_updates', 'lr_dropout', 'magma': the probability p of keeping an update."""
  granularity: Literal['leaf', 'element'] = 'leaf'
  """'masked_updates' and 'magma': one mask draw per parameter tensor ('leaf', Joo et al.'s blocks) or per element ('lr_dropout' is always per element)."""
  tau: float = 2.0
  """'magma': temperature of the momentum-gradient alignment score."""
  score_decay: float = 0.9
  """'magma': EMA decay of the alignment score."""
  momentum_decay: float = 0.9
  """'magma': EMA decay of the gradient momentum whose alignment is scored."""
  alpha: float = 0.1
  """'sbs': slope of the in-layer term of the update probability (eq. 18)."""
  lam: float = -4.0
  """'sbs': slope of the across-layer term of the update probability (eq. 20)."""
  sbs_probability: float | None = None
  """'sbs': a fixed update probability instead of the adaptive one."""
  accumulate_steps: int = 2
  """'adamw_accumulate': batches whose mean gradient each AdamW update uses (optax.MultiSteps)."""

  # Protocol.
  eval_interval: int = 100
  """Evaluate (and checkpoint) every this many steps, and after the last one."""
  eval_batches: int = 8
  """Validation batches per evaluation: fixed windows spread evenly over the split."""
  trials: int = 1
  """Paired trials: trial t uses seed + t for every method (init, batches, the tx's key)."""
  seed: int = 0
  """Seed of trial 0."""
  workdir: str = 'results/lm'
  """Folder of the results files and checkpoints."""
