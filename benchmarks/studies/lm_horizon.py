"""Does SBS's lead around AdamW hold in a run four times longer?

lm_medium's model and data, 8000 steps instead of 2000 (the same warm-up,
then cosine to the end): about 16 passes over Tiny Shakespeare's training
split. The peak rate of each method is swept on one seed from its
2000-step best rate and its two neighbours on the grid (AdamW 0.003, 0.004,
0.006; SBS lam = 0 0.004, 0.006, 0.01), one grid step further while the best
is at an edge; then AdamW and SBS lam = 0 run on 5 fresh paired seeds, each at
its own best rate. The headline is the paired difference at the end of the
8000-step run; the differences at steps 2000, 4000 and 6000 of the same runs
are mid-schedule (the rate has not decayed there) and shown apart. Each run's
best validation loss and the train/validation gap over steps are reported too.

Stated before the runs, the rule the report applies to SBS lam = 0 - AdamW at
step 8000 on the fresh seeds (lm_medium's at step 2000: -0.021): *held* when
the 95% interval lies entirely below 0 and the difference is at least half of
lm_medium's; *shrank* when the interval lies below 0 with a smaller
difference, or reaches 0 with at least half; *vanished* when the difference is
0 or above, or the interval reaches 0 with less than half; *reversed* when the
interval lies entirely above 0.
"""

from studies import lm_medium as _medium

EXAMPLE = 'lm'
ANALYSIS = 'scale_confirmation'
CACHE = 'lm_horizon_{scale}'
OUTPUT = 'lm_horizon_{scale}'
TITLE = 'SBS lam = 0 around AdamW in a run four times longer, scale "{scale}"'
DEFAULT_SCALE = 'cpu'
DATASET = _medium.DATASET

_CPU = _medium.SCALES['cpu']
_SMOKE = _medium.SCALES['smoke']
SCALES = {
  # 2 CPU cores: about 30 minutes a run, single-threaded.
  'cpu': dict(
    _CPU,
    config=dict(_CPU['config'], steps=8000),
    # lm_medium's best rates at 2000 steps (AdamW 0.004, SBS 0.006) and their
    # neighbours on the grid; one seed.
    sweep_start={'adamw': (1, 4), 'sbs_lam0': (2, 5)},
    sweep_span=None,
    sweep_trials=1,
  ),
  'smoke': dict(
    _SMOKE,
    config=dict(_SMOKE['config'], steps=40),
    sweep_start={'adamw': (0, 1), 'sbs_lam0': (1, 2)},
    sweep_trials=1,
  ),
}
# Steps of the confirmation runs at which the paired difference is also shown.
MID_STEPS = {'cpu': (2000, 4000, 6000), 'smoke': (10, 20, 30)}

CELLS = _medium.CELLS
SWEEP = ('adamw', 'sbs_lam0')
CONFIRM = {'adamw': 'adamw', 'sbs_lam0': 'sbs_lam0'}
HEADLINE = ('sbs_lam0', 'adamw')
REFERENCE = _medium.HEADLINE_VALUE
