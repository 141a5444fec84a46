"""The studies: one module each, declarative (cells, scales, notes as data).

``python benchmarks/run.py --list`` names them; the harness
(``benchmarks/harness``) runs and renders them.
"""
