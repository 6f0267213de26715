"""The benchmark, shipped with the package: `fused-rnn bench` or `python bench/bench.py` in a checkout.

* `fused_rnn.bench.runner`: options, timing, device and versions, precisions, JSON / markdown / PNG;
* `fused_rnn.bench.case`: what a case is (`Case`, `Ctx`, `Column`, `Speedup`) and shared check helpers;
* `fused_rnn.bench.cases`: one module per case and the registry `CASES` the runner walks.
"""
