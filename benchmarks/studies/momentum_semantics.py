"""SBS under momentum: Algorithm 2 (the wrapper, "frozen") against SBS chained before SGD.

The paper's setting at batch 32 (momentum 0.3) and Table 4's batch-128 cells
(momentum 0.9), each in both semantics, against SGD, and frozen - chain
paired by trial. The cells, scales and cache of ``paper_tables``.
"""

BASE = 'paper_tables'
OUTPUT = 'momentum_semantics_{scale}'
TABLES = ('m',)
TITLE = 'SBS under momentum: Algorithm 2 ("frozen") vs SBS chained before SGD, scale "{scale}"'
