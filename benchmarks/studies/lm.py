"""AdamW against update masks around it on a character-level transformer.

Runs the lm example (a small Flax NNX transformer on Tiny Shakespeare) for
AdamW, ``masked_updates(AdamW)`` (SkipUpdate: updates kept with probability
p, rescaled by 1/p), ``magma(AdamW)``, Learning-Rate Dropout
(``masked_updates`` per element, not rescaled) and SBS
(``with_stochastic_batch_size`` around AdamW, with the paper's settings and
without its global term, lam = 0). Every cell runs at every peak rate of a
small sweep on the same paired trials (trial t: same init, same training
windows, same optimizer key); each method is reported at its own best rate
against AdamW at its best rate.
"""

from harness.cells import Cell
from harness.cells import by_name

EXAMPLE = 'lm'
ANALYSIS = 'rate_sweep'
CACHE = 'lm_{scale}'
OUTPUT = 'lm_{scale}'
TITLE = 'AdamW vs update masks on a character-level transformer, scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = 'tiny_shakespeare'  # TFDS
# The local copy of the file TFDS's tiny_shakespeare downloads, which the
# CPU scale's cached runs used.
CPU_DATA = {'name': 'tinyshakespeare.txt', 'sha256': '86c4e6aa9db7c042'}


# One scale is a few lines of fields.
# fmt: off
SCALES = {
  # 2 CPU cores: one run of 1000 steps takes about a minute, compilation
  # included. The model (2 blocks, width 64, ~110k parameters) sees 2M
  # characters, 2 passes over the train split.
  'cpu': dict(
    config=dict(
      num_layers=2, num_heads=4, embed_dim=64, context_length=64, batch_size=32,
      steps=1000, warmup_steps=50, eval_interval=100, eval_batches=8,
    ),
    learning_rates=(3e-3, 1e-2, 3e-2, 1e-1), trials=3, seed=0, data=CPU_DATA,
  ),
  # Seconds: for the tests.
  'smoke': dict(
    config=dict(
      num_layers=1, num_heads=2, embed_dim=16, context_length=16, batch_size=8,
      steps=20, warmup_steps=2, eval_interval=10, eval_batches=2,
    ),
    learning_rates=(3e-3, 1e-2), trials=2, seed=0,
  ),
}
# fmt: on

# Every cell: its method and options (the paper's or the library's defaults),
# beside the rate. A cell is named by its method, or by method and reading.
CELLS = by_name(
  [
    Cell('adamw', 'adamw'),
    Cell('masked_updates', 'masked_updates', {'probability': 0.5, 'granularity': 'leaf'}),
    Cell('magma', 'magma', {'probability': 0.5, 'tau': 2.0, 'granularity': 'leaf'}),
    Cell('lr_dropout', 'lr_dropout', {'probability': 0.5}),
    Cell('sbs', 'sbs', {'alpha': 0.1, 'lam': -4.0}),
    # No global term (it froze the head above).
    Cell('sbs_lam0', 'sbs', {'alpha': 0.1, 'lam': 0.0}),
    # Controls for what SBS lam = 0 does (run on the confirmation seeds
    # only): random delays at a fixed p, and a deterministic average of 2
    # batches.
    Cell('sbs_p05', 'sbs', {'sbs_probability': 0.5}),
    Cell('adamw_accumulate2', 'adamw_accumulate', {'accumulate_steps': 2}),
  ]
)
# The main comparison (the rest are controls: lm_confirm, lm_accumulate).
RUN = ('adamw', 'masked_updates', 'magma', 'lr_dropout', 'sbs', 'sbs_lam0')
