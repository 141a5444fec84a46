"""The LM study's lead on fresh seeds: SBS lam = 0 and its controls at one rate.

AdamW, SBS lam = 0, Learning-Rate Dropout, SBS at a fixed p = 0.5 (random
delays) and AdamW on the mean of 2 batches, at the rate the sweep chose, on 5
paired trials whose seeds the sweep never saw; the fixed p also paired with
SBS lam = 0 (what the adaptive terms add to random delays).
"""

from studies import lm as _lm

BASE = 'lm'
CACHE = 'lm_{scale}_confirm'
OUTPUT = 'lm_{scale}_confirm'
TITLE = 'AdamW vs update masks on a character-level transformer: fresh seeds, scale "{scale}"'
SCALES = {
  name: dict(scale, learning_rates=scale['learning_rates'][2:3], trials=5, seed=100)
  for name, scale in _lm.SCALES.items()
}
SCALES['smoke'] = dict(_lm.SCALES['smoke'], learning_rates=(1e-2,), seed=100)
RUN = ('adamw', 'lr_dropout', 'sbs_lam0', 'sbs_p05', 'adamw_accumulate2')
PAIRS = {'sbs_p05': 'sbs_lam0'}
