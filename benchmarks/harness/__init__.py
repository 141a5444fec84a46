"""The experiment harness: one runner for every study under ``benchmarks/studies``.

A study declares its cells, scales, notes and figures as data; the harness
owns the trial cache (:mod:`harness.store`), the grid (:mod:`harness.runner`),
the statistics (:mod:`harness.stats`), the analyses that turn cached runs into
tables (:mod:`harness.analyses`), the results writers (:mod:`harness.report`)
and the plots (:mod:`harness.plots`). ``python benchmarks/run.py`` is its
command line.
"""
