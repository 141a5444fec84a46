"""The paper's global term, standardised (eq. 19) or relative to the group's mean.

Table 3's SGD cell and its two readings of the global term at lam = -4:
``global_normalization='std'`` (eq. 19) and ``'mean'`` ((mu - M) / M, which
freezes layers in small groups). Shares the cache of ``paper_tables``.
"""

from studies import paper_tables as _tables

EXAMPLE = 'cifar'
ANALYSIS = 'cifar_tables'
CACHE = _tables.CACHE
OUTPUT = 'global_normalization_{scale}'
TITLE = _tables.TITLE
DEFAULT_SCALE = _tables.DEFAULT_SCALE
DATASET = _tables.DATASET
SCALES = _tables.SCALES
TABLES = ('3',)
CELLS = '^SGD$|^global: alpha=0.1, lam=-4'
TITLES = _tables.TITLES
MOMENTUM = _tables.MOMENTUM
DATA_NOTES = _tables.DATA_NOTES
cells = _tables.cells
