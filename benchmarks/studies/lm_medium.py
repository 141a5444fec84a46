"""Does SBS's lead around AdamW hold on a larger, scanned transformer?

The lm example at 4 blocks of width 128 (about 0.8M parameters, blocks
stacked and run with ``nnx.scan``, so the txs get ``layer_axes``), trained
twice as long as the ``lm`` study's model. First a sweep of the peak rate for
AdamW and SBS lam = 0 (alpha 0.1) on 2 paired seeds; then, on 5 fresh paired
seeds, each at its own best rate, with a control at SBS's best rate (SBS at a
fixed p = 0.5: random delays alone) and AdamW with dropout in the model
(attention and residual dropout 0.1: a classic regulariser) at AdamW's best
rate. Learning-Rate Dropout, which tied AdamW on the small model
(``lm_confirm``), is timed by ``lm_speed.py`` but not trained here: its five
runs did not fit the study's CPU budget.
"""

from harness.cells import Cell
from harness.cells import by_name
from studies import lm as _lm

EXAMPLE = 'lm'
ANALYSIS = 'scale_confirmation'
CACHE = 'lm_medium_{scale}'
OUTPUT = 'lm_medium_{scale}'
TITLE = 'SBS lam = 0 around AdamW on a larger, scanned transformer, scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = 'tiny_shakespeare'  # TFDS


# The lm study's model fields, with more and wider blocks, stacked and scanned.
_LM_CPU = _lm.SCALES['cpu']['config']

SCALES = {
  # 2 CPU cores: 6k to 15k tokens/s by machine, a run of 2000 steps in 5 to 12 minutes.
  'cpu': dict(
    config=dict(
      _LM_CPU,
      num_layers=4,
      embed_dim=128,
      steps=2000,
      warmup_steps=100,
      eval_interval=200,
      scan_layers=True,
    ),
    # Steps of about 1.5x; each method starts at the middle four and goes
    # further out while its best rate is at an edge or the rates run do not
    # span half to twice it.
    learning_rates=(0.002, 0.003, 0.004, 0.006, 0.01, 0.015, 0.022, 0.033, 0.05),
    sweep_start=(3, 7),
    sweep_span=2.0,
    sweep_trials=2,
    sweep_seed=0,
    trials=5,
    seed=100,
    data=_lm.CPU_DATA,
  ),
  # Seconds: for the tests.
  'smoke': dict(
    config=dict(
      _lm.SCALES['smoke']['config'],
      num_layers=2,
      num_heads=4,
      scan_layers=True,
    ),
    learning_rates=(3e-3, 1e-2),
    sweep_trials=2,
    sweep_seed=0,
    trials=2,
    seed=100,
  ),
}

# The kind is what the results' JSON calls a cell's method.
CELLS = by_name(
  [
    _lm.CELLS['adamw'],
    _lm.CELLS['sbs_lam0'],
    _lm.CELLS['sbs_p05'],
    _lm.CELLS['lr_dropout'],
    Cell('dropout', 'adamw', {'dropout': 0.1}, kind='dropout'),
  ]
)
# The cells whose rate is swept, and the cells of the confirmation, each at
# the best rate of the swept cell named beside it.
SWEEP = ('adamw', 'sbs_lam0')
# In the order they train. ``lr_dropout`` stays in CELLS for lm_speed.py.
CONFIRM = {
  'adamw': 'adamw',
  'sbs_lam0': 'sbs_lam0',
  'dropout': 'adamw',
  'sbs_p05': 'sbs_lam0',
}
# Each confirmation cell paired against AdamW, and these also against another cell.
PAIRS = {'sbs_p05': 'sbs_lam0'}
# SBS lam = 0 - AdamW on the fresh seeds (the results file's value): the
# reference that the studies of the lead's breadth measure against.
HEADLINE_VALUE = -0.0207
