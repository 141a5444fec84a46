"""Does SBS's lead around AdamW hold on a second corpus?

lm_medium's model, recipe and protocol (a sweep of the peak rate on 2 paired
seeds, then 5 fresh paired seeds, each method at its own best rate) on the
King James Bible instead of Tiny Shakespeare: Debian's bible-kjv 4.38, the
verses without their references, written by ``benchmarks/kjv_corpus.py``
(4,137,850 characters, 63 distinct). The lm example splits it as it splits any
text file: training sees Genesis to Acts 21, validation and test the end of
Acts, the epistles and Revelation, a shift of genre from narrative, law,
poetry and prophecy to letters. The same steps, batch and context as
lm_medium: about 1.1 passes over this training split against about 4 over
Tiny Shakespeare's. AdamW and SBS lam = 0 are swept; the confirmation adds SBS
at a fixed p = 0.5 (random delays alone) at SBS's rate.

Stated before the runs, the rule the report applies to SBS lam = 0 - AdamW on
the fresh seeds (lm_medium's: -0.021): *held* when the 95% interval lies
entirely below 0 and the difference is at least half of lm_medium's; *shrank*
when the interval lies below 0 with a smaller difference, or reaches 0 with
at least half; *vanished* when the difference is 0 or above, or the interval
reaches 0 with less than half; *reversed* when the interval lies entirely
above 0.
"""

from studies import lm_medium as _medium

EXAMPLE = 'lm'
ANALYSIS = 'scale_confirmation'
CACHE = 'lm_corpus_{scale}'
OUTPUT = 'lm_corpus_{scale}'
TITLE = 'SBS lam = 0 around AdamW on a second corpus (the King James Bible), scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = 'kjv.txt'  # written by benchmarks/kjv_corpus.py
DATA_NOTE = (
  'the first 90% / next 5% / last 5% of the characters: Genesis to Acts 21:40 / to Colossians'
  ' 1:11 / to Revelation 22:21, so validation and test are mostly letters where training is mostly'
  " narrative, law, poetry and prophecy; Debian's bible-kjv 4.38 without verse references,"
  ' written by `python benchmarks/kjv_corpus.py --out PATH/kjv.txt`'
)

SCALES = {
  'cpu': dict(
    _medium.SCALES['cpu'],
    # lm_medium's best rates (AdamW 0.004, SBS 0.006) and their neighbours first.
    sweep_start=(1, 5),
    data={'name': 'kjv.txt', 'sha256': 'b5c4940bcfeee072'},
  ),
  'smoke': _medium.SCALES['smoke'],
}

CELLS = _medium.CELLS
SWEEP = ('adamw', 'sbs_lam0')
CONFIRM = {'adamw': 'adamw', 'sbs_lam0': 'sbs_lam0', 'sbs_p05': 'sbs_lam0'}
# Each confirmation cell paired against AdamW, and these also against another cell.
PAIRS = {'sbs_p05': 'sbs_lam0'}
# The difference the verdict is about, and lm_medium's value of it.
HEADLINE = ('sbs_lam0', 'adamw')
REFERENCE = _medium.HEADLINE_VALUE
