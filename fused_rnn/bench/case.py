"""What a benchmark case is, and the helpers the cases share.

A case (one module under `fused_rnn.bench.cases`, listed in `CASES`) describes one comparison of
the fused path against a reference. For every point of its grid the runner does

    state = case.setup(shape, ctx)          # shape: e.g. {"B": 32, "T": 64, "H": 128}
    row = {**shape, **case.check(state, ctx)}
    row["ok"] = every "*max_rel*" value of the row <= case.tolerance[ctx.prec]
    row.update(case.run(state, ctx))        # "*_ms" timings (and figures derived from them)
    row["speedup_<s.name>"] = row[s.ref] / row[s.fused] for s in case.speedups (None when not ok)

and stores the rows under `precisions[prec][case.name]` in the JSON, one markdown table per case
(`case.columns`), and the case's bar panels (`case.plots`) in the PNG. Adding a case is one module
and one entry in `CASES`; the runner does not change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fused_rnn.ops import resolve_backend

#: Vocabulary size and embedding width (n_fac) of the char models the cases build their inputs from.
VOCAB, NFAC = 65, 42
#: Precisions the runner knows; CPU runs "ieee" only. "tf32x3" (the IEEE baselines against the fused
#: kernels with FUSED_RNN_TF32X3=1) runs when asked for (`--precision tf32x3`), not by default.
PRECISIONS = ("tf32", "ieee", "bf16", "tf32x3")
DEFAULT_PRECISIONS = ("tf32", "ieee", "bf16")
#: Default max relative difference (max |fused - ref| / max |ref|) per precision over which a point
#: is wrong, not just rounded. A case may give its own table.
TOLERANCE: Mapping[str, float] = {"ieee": 1e-4, "tf32": 3e-2, "bf16": 1e-1, "tf32x3": 1e-4}


@dataclass(frozen=True)
class Ctx:
    """Where and how one block of points runs; `time_ms(fn)` is the runner's timer (median ms)."""

    device: torch.device
    prec: str
    dtype: torch.dtype
    quick: bool
    timer: Callable[[Callable[[], object]], float] = field(repr=False)

    def time_ms(self, fn: Callable[[], object]) -> float:
        """Median milliseconds of one call of fn()."""
        return self.timer(fn)


@dataclass(frozen=True)
class Column:
    """One markdown column: its header, and the cell text of a row."""

    header: str
    cell: Callable[[dict], str]


@dataclass(frozen=True)
class Speedup:
    """row["speedup_<name>"] = row[ref] / row[fused] (reference time over fused time; None when the point failed).

    `label` names it in the log, the summary and the plot; `geomean` adds its geometric mean over
    the case's points to the precision block as "geomean_<name>" and to the summary line.
    """

    name: str
    ref: str
    fused: str
    label: str
    geomean: bool = False

    @property
    def key(self) -> str:
        return f"speedup_{self.name}"


@dataclass(frozen=True)
class Case:
    """One comparison of the fused path against a reference.

    Attributes:
        name: key of its rows in each precision block of the JSON.
        title: heading of its markdown table.
        full, quick: its grid axes (axis name -> values), merged by the runner into the JSON's "grid";
            an axis name used by two cases must have the same values in both. --B / --T / --H
            override the axes named B, T and H.
        points: the merged grid -> the shapes of its points (dicts with at least B, T and H).
        setup: (shape, ctx) -> state: models, inputs and references of one point.
        check: (state, ctx) -> dict: "*max_rel*" differences to the reference (and e.g. "backend").
        run: (state, ctx) -> dict: "*_ms" median timings (and figures derived from them).
        columns: its markdown table.
        speedups: the ratios computed from the timings.
        tolerance: precision -> max relative difference of a correct point.
        per_step_floor: add the per-step floor (CUDA: 2 B H^2 FLOPs at the measured matmul rate,
            and the launch latency) to its rows.
        plots: (speedup key, panel title) bar panels in the PNG, one row of panels each.
        log: row -> extra text for the progress line of a point.
    """

    name: str
    title: str
    full: Mapping[str, Sequence[int]]
    quick: Mapping[str, Sequence[int]]
    points: Callable[[Mapping[str, Sequence[int]]], list[dict[str, int]]]
    setup: Callable[[dict[str, int], Ctx], Any]
    check: Callable[[Any, Ctx], dict]
    run: Callable[[Any, Ctx], dict]
    columns: tuple[Column, ...]
    speedups: tuple[Speedup, ...] = ()
    tolerance: Mapping[str, float] = field(default_factory=lambda: dict(TOLERANCE))
    per_step_floor: bool = False
    plots: tuple[tuple[str, str], ...] = ()
    log: Callable[[dict], str] | None = None


def product_points(grid: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """Every (B, T, H) of the grid's B, T and H axes; H outermost, B innermost."""
    return [dict(B=B, T=T, H=H) for H in grid["H"] for T in grid["T"] for B in grid["B"]]


# --------------------------------------------------------------------------------------------- checks


def max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| over all elements (same shapes), in float64."""
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def worst_error(row: dict) -> float:
    """The largest "*max_rel*" value of a row (nan when one is nan)."""
    errs = [v for k, v in row.items() if "max_rel" in k]
    return max(errs, key=lambda e: math.inf if math.isnan(e) else e) if errs else 0.0


def within(row: dict, tol: float) -> bool:
    """Every "*max_rel*" value of the row is finite and at most tol."""
    return all(math.isfinite(v) and v <= tol for k, v in row.items() if "max_rel" in k)


def backend_of(inp: torch.Tensor) -> tuple[str, str | None]:
    """The backend fused_recurrence's "auto" runs for inp (T, B, H), and the fallback warning if any."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = resolve_backend(inp, "auto")[0]
    return name, (str(caught[0].message) if caught else None)


# --------------------------------------------------------------------------------------------- formatting


def fmt_x(v: float | None) -> str:
    """A speedup: two decimals, scientific below 0.095, FAIL for None."""
    if v is None:
        return "FAIL"
    return f"{v:.2f}" if v >= 0.095 else f"{v:.1e}"


def fmt_floor(row: dict) -> str:
    """The per-step floor cell: FLOP floor / launch floor in µs, or a dash off CUDA."""
    if "floor_us_per_step" not in row:
        return "—"
    return f"{row['flops_floor_us_per_step']:.3f} / {row['launch_floor_us']:.2f}"


def column(header: str, key: str, fmt: str = ".3f") -> Column:
    """A column showing row[key] with a format spec."""
    return Column(header, lambda r: format(r[key], fmt))


#: The (B, T, H) columns every per-point table starts with.
SHAPE_COLUMNS = (column("B", "B", "d"), column("T", "T", "d"), column("H", "H", "d"))


def speedup_column(header: str, s: Speedup) -> Column:
    """A column showing a speedup (FAIL for a failed point)."""
    return Column(header, lambda r: fmt_x(r[s.key]))


FLOOR_COLUMN = Column("floor/step µs (flops / launch)", fmt_floor)
