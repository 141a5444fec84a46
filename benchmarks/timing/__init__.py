"""The timing tables of ``benchmarks/update_speed.py``: one module per
measurement (``optimizer_only``, ``growth``, ``training``, ``breakdown``,
``leaves``), each yielding its section's lines, over one measuring module
(``measure``), the parameter trees (``trees``) and the optimizers timed
(``family``)."""
