"""Case "generation": B = 1, forward only, per step: `fused_recurrence` against the tied `nn.RNN`.

The same setup and check as the recurrence case (inp (T, 1, H), hs compared against nn.RNN),
without the backward; the figure of interest is the time per step at batch 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..case import FLOOR_COLUMN, Case, Column, Ctx, Speedup, column, speedup_column
from . import recurrence

#: Axes gen_T and gen_H (not overridden by --T / --H); B is always 1.
FULL: Mapping[str, Sequence[int]] = dict(gen_T=[1, 64], gen_H=[256, 512, 1024])
QUICK: Mapping[str, Sequence[int]] = dict(gen_T=[1, 16], gen_H=[64])


def points(grid: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """(B = 1, T, H) for every gen_H (outer) and gen_T (inner)."""
    return [dict(B=1, T=T, H=H) for H in grid["gen_H"] for T in grid["gen_T"]]


def setup(shape: dict[str, int], ctx: Ctx) -> Any:
    """The recurrence case's inputs (inp (T, 1, H), W_h (H, H), b_h (H,), tied nn.RNN, h0), forward only."""
    return recurrence.setup(shape, ctx, backward=False)


FWD = Speedup("fwd_vs_nn_rnn", "nn_rnn_fwd_ms", "fused_fwd_ms", "B=1 forward over nn.RNN")

CASE = Case(
    name="generation",
    title="Generation (B = 1, forward): per step",
    full=FULL,
    quick=QUICK,
    points=points,
    setup=setup,
    check=recurrence.check,
    run=recurrence.run,
    columns=(
        column("T", "T", "d"),
        column("H", "H", "d"),
        column("backend", "backend", "s"),
        Column("rel err", lambda r: f"{r['max_rel_vs_nn_rnn']:.1e}"),
        column("nn.RNN µs/step", "nn_rnn_fwd_us_per_step", ".2f"),
        column("fused µs/step", "fused_fwd_us_per_step", ".2f"),
        speedup_column("x", FWD),
        FLOOR_COLUMN,
    ),
    speedups=(FWD,),
    per_step_floor=True,
    plots=((FWD.key, "generation (B=1) forward"),),
    log=recurrence.log,
)
