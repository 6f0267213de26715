"""The registry of benchmark cases: the runner runs, reports and plots `CASES` in this order.

A new case is one module defining a `fused_rnn.bench.case.Case` (its grid, setup, timed calls,
check and tolerance, markdown columns, speedups) and one entry here.
"""

from __future__ import annotations

from ..case import Case
from . import char_model, generation, nn_rnn, recurrence

CASES: list[Case] = [recurrence.CASE, generation.CASE, char_model.CASE, nn_rnn.CASE, nn_rnn.LSTM_CASE, nn_rnn.GRU_CASE]

__all__ = ["CASES"]
