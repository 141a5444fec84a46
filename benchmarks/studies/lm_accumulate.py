"""Is SBS's lead a bigger-batch effect? AdamW on the mean of 2 batches, by rate.

AdamW and AdamW with 2 accumulated batches per step at the three largest
rates of the sweep, on the confirmation seeds (the cache of ``lm_confirm``).
"""

from studies import lm as _lm
from studies import lm_confirm as _confirm

BASE = 'lm_confirm'
OUTPUT = 'lm_{scale}_accumulate'
TITLE = 'AdamW on the mean of 2 batches vs AdamW, by rate, scale "{scale}"'
SCALES = {
  name: dict(scale, learning_rates=_lm.SCALES[name]['learning_rates'][1:])
  for name, scale in _confirm.SCALES.items()
}
RUN = ('adamw', 'adamw_accumulate2')
PAIRS: dict[str, str] = {}  # lm_confirm's pairs name cells this study does not run
