"""Does SBS's lead hold against a better-tuned AdamW, and around it?

lm_medium's model, data and runs (it shares lm_medium's cache, so identical
runs are reused). lm_medium tuned AdamW in its rate alone (b2 0.99, weight
decay 0.1, cosine to 0.1x). Here AdamW at its rate 0.004, on the sweep's seeds
0..1, changes one setting at a time: b2 0.95 and 0.999, weight decay 0 and
0.3, and a cosine decay to 0 instead of to 0.1x (decaying to zero is the
change of schedule that recent comparisons of LLM optimizers find worth most:
Bergsma et al. 2025, *Straight to Zero*, arXiv:2502.15938); then the best
values of the two settings whose best changes score lowest, together. The
lowest mean final validation loss among these and AdamW as it is wins (the
analysis chooses it) and also runs at the rates 0.003 and 0.006; it runs on
the fresh seeds 100..104 at the best of its three rates, and SBS lam = 0 around
it at SBS's rate in lm_medium (0.006). The table pairs AdamW and SBS lam = 0
as lm_medium ran them, the tuned AdamW and SBS around the tuned AdamW; the
headline is SBS around the tuned AdamW - the tuned AdamW (a user wraps their
own tuned AdamW).

Stated before the runs, the rule the report applies to that difference
(lm_medium's SBS lam = 0 - AdamW: -0.021): *held* when the 95% interval lies
entirely below 0 and the difference is at least half of lm_medium's; *shrank*
when the interval lies below 0 with a smaller difference, or reaches 0 with
at least half; *vanished* when the difference is 0 or above, or the interval
reaches 0 with less than half; *reversed* when the interval lies entirely
above 0.
"""

from harness.cells import by_name
from studies import lm_medium as _medium

EXAMPLE = 'lm'
ANALYSIS = 'scale_confirmation'
CACHE = 'lm_medium_{scale}'
OUTPUT = 'lm_tuned_{scale}'
TITLE = 'SBS lam = 0 against and around a better-tuned AdamW, scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = _medium.DATASET
SCALES = _medium.SCALES

CELLS = by_name(
  [
    *_medium.CELLS.values(),
    _medium.CELLS['adamw'].with_options('adamw_tuned'),
    _medium.CELLS['sbs_lam0'].with_options('sbs_tuned'),
  ]
)
SWEEP = ()
# AdamW's variants, each at its rate in lm_medium on the sweep's seeds.
TUNE = {
  'cell': 'adamw',
  'rate': 0.004,
  'variants': {
    'b2 0.95': {'b2': 0.95},
    'b2 0.999': {'b2': 0.999},
    'weight decay 0': {'weight_decay': 0.0},
    'weight decay 0.3': {'weight_decay': 0.3},
    'decay to 0': {'end_learning_rate_ratio': 0.0},
  },
  'combine': 2,
  'rates': (0.003, 0.006),
}
# The cells that take the winning variant's settings.
TUNED = ('adamw_tuned', 'sbs_tuned')
# Fixed rates are lm_medium's best (AdamW 0.004, SBS lam = 0 0.006).
CONFIRM = {'adamw': 0.004, 'sbs_lam0': 0.006, 'adamw_tuned': 'tuned', 'sbs_tuned': 0.006}
PAIRS = {'sbs_tuned': 'adamw_tuned'}
HEADLINE = ('sbs_tuned', 'adamw_tuned')
REFERENCE = _medium.HEADLINE_VALUE
