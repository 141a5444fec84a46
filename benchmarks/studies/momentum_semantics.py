"""SBS under momentum: Algorithm 2 (the wrapper, "frozen") against SBS chained before SGD.

The paper's setting at batch 32 (momentum 0.3) and Table 4's batch-128 cells
(momentum 0.9), each in both semantics, against SGD, and frozen - chain
paired by trial. Shares the cache of ``paper_tables``.
"""

from studies import paper_tables as _tables

EXAMPLE = 'cifar'
ANALYSIS = 'cifar_tables'
CACHE = _tables.CACHE
OUTPUT = 'momentum_semantics_{scale}'
TITLE = _tables.TITLE
DEFAULT_SCALE = _tables.DEFAULT_SCALE
DATASET = _tables.DATASET
SCALES = _tables.SCALES
TABLES = ('m',)
TITLES = _tables.TITLES
MOMENTUM = _tables.MOMENTUM
DATA_NOTES = _tables.DATA_NOTES
cells = _tables.cells
