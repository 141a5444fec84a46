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

from studies import lm as _lm

EXAMPLE = 'lm'
ANALYSIS = 'scale_confirmation'
CACHE = 'lm_medium_{scale}'
OUTPUT = 'lm_medium_{scale}'
TITLE = 'SBS lam = 0 around AdamW on a larger, scanned transformer, scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = 'tiny_shakespeare'  # TFDS


def _model(*fields):
  """The lm study's model fields, blocks stacked and scanned."""
  return dict(_lm._model(*fields), scan_layers=True)  # pylint: disable=protected-access


SCALES = {
  # 2 CPU cores: 6k to 15k tokens/s by machine, a run of 2000 steps in 5 to 12 minutes.
  'cpu': dict(
    config=_model(4, 4, 128, 64, 32, 2000, 100, 200, 8),
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
    config=_model(2, 4, 16, 16, 8, 20, 2, 10, 2),
    learning_rates=(3e-3, 1e-2),
    sweep_trials=2,
    sweep_seed=0,
    trials=2,
    seed=100,
  ),
}

# name -> (the example's method, its options, what the results call it).
CELLS = {
  'adamw': ('adamw', {}, 'adamw'),
  'sbs_lam0': ('sbs', {'alpha': 0.1, 'lam': 0.0}, 'sbs'),
  'sbs_p05': ('sbs', {'sbs_probability': 0.5}, 'sbs'),
  'lr_dropout': ('lr_dropout', {'probability': 0.5}, 'lr_dropout'),
  'dropout': ('adamw', {'dropout': 0.1}, 'dropout'),
}
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
