"""The paper's global term, standardised (eq. 19) or relative to the group's mean.

Table 3's SGD cell and its two readings of the global term at lam = -4:
``global_normalization='std'`` (eq. 19) and ``'mean'`` ((mu - M) / M, which
freezes layers in small groups), and the two readings paired by trial. The
cells, scales and cache of ``paper_tables``.
"""

BASE = 'paper_tables'
OUTPUT = 'global_normalization_{scale}'
TABLES = ('3',)
TITLE = 'The global term standardised (eq. 19) or relative to its group\'s mean, scale "{scale}"'
CELL_PATTERN = '^SGD$|^global: alpha=0.1, lam=-4'
_STANDARDISED = 'global: alpha=0.1, lam=-4'
PAIRS = ((f'{_STANDARDISED}, relative (mu - M) / M', _STANDARDISED, 'relative - standardised'),)
