"""Benchmark: the Python-loop CharLoopModel, nn.RNN with tied weights (cuDNN on GPU), and the fused path.

The runner walks the cases of `fused_rnn.bench.cases.CASES` (recurrence: fused_recurrence against
nn.RNN with tied weights, forward and forward + backward; generation: characters per second of sampling;
model: CharLoopModel against FusedCharRNN, forward and a training step) in every precision.

Every fused point is checked once against its reference (outputs and gradients) before it is timed;
the max relative difference is recorded, and a point over the case's tolerance for the precision is
marked FAIL, left out of the speedups, and makes the exit status 1.

Precisions (CUDA): "tf32" (cuBLAS and cuDNN allowed TF32, float32 matmul precision "high", so the
fused kernels use TF32 too), "ieee" (TF32 off, precision "highest"), "bf16" (models and inputs in
bfloat16); on request "tf32x3" (as "ieee", with the fused kernels' FUSED_RNN_TF32X3=1 option).
On CPU: "ieee" only; the fused path runs the torch backend there unless TRITON_INTERPRET=1 is set
(Triton's interpreter). Each row records the backend that actually ran.

Writes <out>/<device>-<date>[-quick].json (every row, the grid, device and versions), .md (one table
per case and the geometric means) and, when matplotlib is installed, .png (speedup bars).

    fused-rnn bench [--quick] [--out DIR] [--device auto|cpu|cuda] [--precision tf32,ieee,bf16[,tf32x3]]
                    [--B 32,64] [--T 64] [--H 128] [--no-plot]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import DataError, OneLineParser
from ..files import atomic_save, atomic_write, ensure_dir
from ..launch import TF32X3_ENV
from .case import DEFAULT_PRECISIONS, NFAC, PRECISIONS, TOLERANCE, VOCAB, Case, Ctx, fmt_x, within, worst_error
from .cases import CASES

#: Default output folder, relative to the working directory (bench/results of a checkout's root).
DEFAULT_OUT = Path("bench") / "results"
#: The one line printed when the PNG is asked for but matplotlib is missing.
PLOT_SKIPPED = 'plot skipped: matplotlib is not installed (pip install "fused_rnn[plot]" for the .png)'

# --------------------------------------------------------------------------------------------- setup


def set_precision(mode: str) -> torch.dtype:
    """Apply the cuBLAS / cuDNN / matmul-precision settings for `mode`; returns the tensor dtype."""
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if mode == "tf32x3":
        os.environ[TF32X3_ENV] = "1"
    else:
        os.environ.pop(TF32X3_ENV, None)
    return torch.bfloat16 if mode == "bf16" else torch.float32


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_info(device: torch.device) -> dict[str, Any]:
    """Device name, library versions and the date, for the JSON and the markdown header."""
    cuda = device.type == "cuda"
    info = dict(
        date=dt.date.today().isoformat(),
        device=torch.cuda.get_device_name(device) if cuda else f"CPU {cpu_name()}",
        device_type=device.type,
        torch=torch.__version__,
        cuda=torch.version.cuda if cuda else None,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        python=platform.python_version(),
        triton_interpret=os.environ.get("TRITON_INTERPRET") == "1",
        cpu_threads=None if cuda else torch.get_num_threads(),
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


# --------------------------------------------------------------------------------------------- timing


def time_ms(fn: Callable[[], object], device: torch.device, quick: bool) -> float:
    """Median milliseconds of fn(): triton's do_bench on CUDA, else perf_counter after a warm-up."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()  # warm-up: allocator, first-call paths
    times: list[float] = []
    budget_ms = 30.0 if quick else 500.0
    min_reps, max_reps = (3, 5) if quick else (5, 50)
    while len(times) < min_reps or (sum(times) < budget_ms and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def floors(ctx: Ctx) -> dict[str, float]:
    """CUDA only: the matmul rate in this precision (TFLOP/s) and the latency of a tiny launch (µs)."""
    if ctx.device.type != "cuda":
        return {}
    import triton.testing

    n = 8192
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    mm_ms = triton.testing.do_bench(lambda: torch.mm(a, b), return_mode="median")
    x = torch.zeros(1, device=ctx.device)
    launch_ms = triton.testing.do_bench(lambda: x.add_(1), return_mode="median")
    return dict(matmul_tflops=2 * n**3 / mm_ms / 1e9, launch_us=launch_ms * 1e3, matmul_n=n)


def add_floor(r: dict, fl: Mapping[str, float]) -> None:
    """Per-step floor of a row with B and H: 2 B H^2 FLOPs at the measured matmul rate, and the launch latency."""
    if not fl:
        return
    r["flops_floor_us_per_step"] = 2 * r["B"] * r["H"] ** 2 / (fl["matmul_tflops"] * 1e12) * 1e6
    r["launch_floor_us"] = fl["launch_us"]
    r["floor_us_per_step"] = max(r["flops_floor_us_per_step"], r["launch_floor_us"])


# --------------------------------------------------------------------------------------------- runs


def run_point(case: Case, shape: dict[str, int], ctx: Ctx, fl: Mapping[str, float]) -> dict:
    """Check, then time, one point of a case; the speedups are None when the check failed."""
    state = case.setup(shape, ctx)
    r: dict = dict(shape)
    r.update(case.check(state, ctx))
    r["ok"] = within(r, case.tolerance[ctx.prec])
    r.update(case.run(state, ctx))
    for s in case.speedups:
        r[s.key] = r[s.ref] / r[s.fused] if r["ok"] else None
    if case.per_step_floor:
        add_floor(r, fl)
    return r


def log_point(case: Case, ctx: Ctx, r: dict, shape: Mapping[str, int]) -> None:
    """One line per point: the check, the case's own figures, the speedups and the floor."""
    where = " ".join(f"{k}={v:<4}" for k, v in shape.items())
    line = f"[{ctx.prec}] {case.name:<10} {where} "
    if "backend" in r:
        line += f"{r['backend']:<6} "
    line += f"max rel {worst_error(r):.1e}{'' if r['ok'] else ' FAIL'}"
    if case.log is not None:
        line += f" | {case.log(r)}"
    if case.speedups:
        line += " | " + ", ".join(f"{s.label} x{fmt_x(r[s.key])}" for s in case.speedups)
    if "floor_us_per_step" in r:
        line += f"; floor {r['floor_us_per_step']:.2f} µs/step"
    print(line, flush=True)


def geomean(values: Sequence[float | None]) -> float | None:
    """Geometric mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return statistics.geometric_mean(vals) if vals else None


class Progress:
    """n/N points done and an ETA from the mean time per point so far, for the log lines."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def tick(self) -> str:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        return f"[{self.done}/{self.total} ETA {_duration(left)}]"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def run_precision(
    cases: Sequence[Case],
    grid: Mapping[str, Sequence[int]],
    ctx: Ctx,
    block: dict | None = None,
    progress: Progress | None = None,
) -> dict:
    """Every point of every case in one precision, with the geometric means and the failure count.

    Rows go into `block` as they are measured, so an interrupt (KeyboardInterrupt, re-raised) leaves
    the points measured so far in it, summarised.
    """
    block = {} if block is None else block
    fl = floors(ctx)
    block.update(dtype=str(ctx.dtype).removeprefix("torch."), tolerance=TOLERANCE[ctx.prec], floors=fl)
    block["tolerances"] = {c.name: c.tolerance[ctx.prec] for c in cases}
    try:
        for case in cases:
            torch.manual_seed(0)  # each case's inputs do not depend on which cases ran before it
            block[case.name] = []
            for shape in case.points(grid):
                r = run_point(case, shape, ctx, fl)
                block[case.name].append(r)
                if progress is not None:
                    print(progress.tick(), end=" ")
                log_point(case, ctx, r, shape)
    finally:
        summarise(cases, block)
    return block


def summarise(cases: Sequence[Case], block: dict) -> None:
    """The geometric means, the fused backends and the failure count of the rows in a block."""
    present = [c for c in cases if c.name in block]
    for case in present:
        for s in case.speedups:
            if s.geomean:
                block[f"geomean_{s.name}"] = geomean([r[s.key] for r in block[case.name]])
    rows = [r for c in present for r in block[c.name]]
    block["fused_backends"] = sorted({r["backend"] for r in rows if "backend" in r})
    block["failed_points"] = sum(not r["ok"] for r in rows)


def check_registry(cases: Sequence[Case]) -> None:
    """Case names and geomean keys must be unique: they are keys of the same JSON block."""
    names = [c.name for c in cases]
    keys = [s.name for c in cases for s in c.speedups if s.geomean]
    for what, items in (("case name", names), ("geomean speedup", keys)):
        dup = sorted({x for x in items if items.count(x) > 1})
        if dup:
            raise ValueError(f"bench cases: duplicate {what}(s) {dup}")


def build_grid(cases: Sequence[Case], quick: bool, overrides: Mapping[str, list[int] | None]) -> dict[str, list[int]]:
    """The cases' axes merged (full or quick), then the axes given on the command line replaced."""
    grid: dict[str, list[int]] = {}
    for case in cases:
        for axis, values in (case.quick if quick else case.full).items():
            values = list(values)
            if grid.setdefault(axis, values) != values:
                raise ValueError(f"bench case {case.name}: grid axis {axis} = {values}, another case has {grid[axis]}")
    for axis, values in overrides.items():
        if values and axis in grid:
            grid[axis] = list(values)
    return grid


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a device is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available")
    return torch.device(name)


def precisions(arg: str | None, device: torch.device) -> list[str]:
    """The precisions asked for (comma list), by default those of DEFAULT_PRECISIONS that apply to the device."""
    allowed = list(PRECISIONS) if device.type == "cuda" else ["ieee"]
    if not arg:
        return [p for p in DEFAULT_PRECISIONS if p in allowed]
    chosen = [p.strip() for p in arg.split(",") if p.strip()]
    bad = [p for p in chosen if p not in allowed]
    if bad:
        raise DataError(f"--precision: {', '.join(bad)} not among {', '.join(allowed)} on {device.type}")
    return chosen


def point_bytes(shape: Mapping[str, int]) -> int:
    """An estimate of one point's float32 memory: the weights and their copies (H^2 each), the
    inputs, states and gradients of both sides (T B H each), with a margin for the reference models."""
    B = max(v for k, v in shape.items() if k.endswith("B"))
    T = max(v for k, v in shape.items() if k.endswith("T"))
    H = max(v for k, v in shape.items() if k.endswith("H"))
    return 4 * (8 * H * H + 16 * T * B * H + 2 * VOCAB * H)


def check_memory(cases: Sequence[Case], grid: Mapping[str, Sequence[int]], device: torch.device) -> None:
    """Refuse a grid whose largest point cannot fit, before anything is allocated, saying how much it needs."""
    from ..train import MEMORY_SHARE, _gib, available_memory

    free = available_memory(device)
    if free is None:
        return
    shapes = [shape for case in cases for shape in case.points(grid)]
    worst = max(shapes, key=point_bytes, default=None)
    if worst is not None and point_bytes(worst) > MEMORY_SHARE * free:
        where = " ".join(f"{k}={v}" for k, v in worst.items())
        raise DataError(
            f"--B/--T/--H: the point {where} needs about {_gib(point_bytes(worst))} of memory; "
            f"{device.type} has {_gib(free)} free. Use smaller sizes"
        )


def total_points(cases: Sequence[Case], grid: Mapping[str, Sequence[int]], precs: Sequence[str]) -> int:
    return len(precs) * sum(len(case.points(grid)) for case in cases)


def run(args: argparse.Namespace, cases: Sequence[Case] = CASES) -> dict:
    """The whole benchmark; restores the global precision settings and the CPU thread count afterwards.

    On KeyboardInterrupt (Ctrl-C, SIGTERM) it stops and returns what it measured, with
    res["interrupted"] saying where.
    """
    check_registry(cases)
    device = resolve_device(args.device)
    grid = build_grid(cases, args.quick, dict(B=args.B, T=args.T, H=args.H))
    precs = precisions(args.precision, device)
    check_memory(cases, grid, device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # one thread: with the default pool the first calls of each shape stall ~130 ms each
        # on small (2-core) machines, which swamps sub-millisecond timings
        torch.set_num_threads(1)
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        os.environ.get(TF32X3_ENV),
    )
    res: dict = dict(info=device_info(device), grid=grid, precision_list=precs, precisions={})
    res["cases"] = [c.name for c in cases]
    timer = functools.partial(time_ms, device=device, quick=args.quick)
    progress = Progress(total_points(cases, grid, precs))
    try:
        for prec in precs:
            ctx = Ctx(device, prec, set_precision(prec), args.quick, timer)
            block = res["precisions"][prec] = {}
            run_precision(cases, grid, ctx, block, progress)
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if type(exc).__name__ == "Terminated" else "SIGINT"
        done = sum(len(b.get(c.name, [])) for b in res["precisions"].values() for c in cases)
        res["interrupted"] = f"{name} after {done} of {progress.total} points"
        res["precisions"] = {p: b for p, b in res["precisions"].items() if any(c.name in b for c in cases)}
        res["precision_list"] = list(res["precisions"])
        res["exit_code"] = 143 if name == "SIGTERM" else 130
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
        os.environ.pop(TF32X3_ENV, None)
        if saved[3] is not None:
            os.environ[TF32X3_ENV] = saved[3]
        torch.set_num_threads(threads)
    return res


# --------------------------------------------------------------------------------------------- report


def md_header(res: dict) -> list[str]:
    """Device, versions, precisions and how to read the tables."""
    i = res["info"]
    threads = f", {i['cpu_threads']} CPU thread(s)" if i.get("cpu_threads") else ""
    if i.get("triton_interpret"):
        threads += ", TRITON_INTERPRET=1 (fused kernels in Triton's CPU interpreter)"
    lines = [
        f"# fused_rnn benchmark: {i['device']}, {i['date']}",
        "",
        f"- device: {i['device']}{threads}",
        f"- torch {i['torch']}, triton {i['triton']}, CUDA {i['cuda']}, cuDNN {i['cudnn']}, python {i['python']}",
        f"- precision(s): {', '.join(res['precision_list'])}; vocab {VOCAB}, n_fac {NFAC}; date {i['date']}",
        "- times: medians in ms; x = speedup of the fused path = other time / fused time (> 1: fused faster)",
        "- rel err: max |fused - ref| / max |ref| against nn.RNN (outputs and gradients) or CharLoopModel;",
        "  FAIL: over the precision's tolerance, left out of the speedups",
        "- floor/step (GPU): 2·B·H² FLOPs at the measured matmul rate / launch latency, in µs",
    ]
    if res.get("interrupted"):
        lines.append(f"- **interrupted** ({res['interrupted']}): the tables hold the points measured before it")
    return lines


def md_case(case: Case, block: dict) -> list[str]:
    """The case's table: one row per point, its own columns."""
    title = case.title
    tol = block.get("tolerances", {}).get(case.name, block["tolerance"])
    if tol != block["tolerance"]:
        title += f" (tolerance {tol:g})"
    lines = ["", f"### {title}", ""]
    lines.append("| " + " | ".join(c.header for c in case.columns) + " |")
    lines.append("|" + "---|" * len(case.columns))
    for r in block[case.name]:
        lines.append("| " + " | ".join(c.cell(r) for c in case.columns) + " |")
    return lines


def md_summary(cases: Sequence[Case], block: dict) -> list[str]:
    """The geometric-mean line (the speedups the cases mark for it), the failures, the GPU floors."""

    def g(v: float | None) -> str:
        return "n/a" if v is None else f"{fmt_x(v)}x"

    means = [f"{s.label} {g(block[f'geomean_{s.name}'])}" for c in cases for s in c.speedups if s.geomean]
    fl = block["floors"]
    lines = [
        "",
        f"Geometric mean speedup: {', '.join(means) or 'none'}. Failed checks: {block['failed_points']}.",
    ]
    if fl:
        lines += [
            "",
            f"Measured: {fl['matmul_n']}² matmul {fl['matmul_tflops']:.1f} TFLOP/s, launch {fl['launch_us']:.2f} µs.",
        ]
    return lines


def markdown(res: dict, cases: Sequence[Case] = CASES) -> str:
    """The whole report: header, then per precision one table per case and the summary."""
    lines = md_header(res)
    for prec, block in res["precisions"].items():
        present = [c for c in cases if c.name in block]
        backends = ", ".join(block["fused_backends"])
        lines += ["", f"## {prec} ({block['dtype']}, tolerance {block['tolerance']:g}; fused backend: {backends})"]
        for case in present:
            lines += md_case(case, block)
        lines += md_summary(present, block)
    return "\n".join(lines) + "\n"


def plot_panel(ax: Any, rows: list[dict], key: str, title: str, shape_keys: Sequence[str] = ("B", "T", "H")) -> None:
    """Bars of rows[key] grouped by H; one bar per combination of the point's other shape keys inside a group.

    The y axis always holds 1.0 (the dashed "as fast" line), on a log scale when the bars span more than 20x.
    """
    import matplotlib.pyplot as plt

    others = [k for k in shape_keys if k != "H"]
    hs = sorted({r["H"] for r in rows})
    combos = sorted({tuple(r.get(k, 0) for k in others) for r in rows})
    colors = {c: plt.cm.viridis(i / max(1, len(combos) - 1) * 0.85) for i, c in enumerate(combos)}
    width = 0.8 / max(1, len(combos))
    by_key = {(r["H"], tuple(r.get(k, 0) for k in others)): r for r in rows}
    for j, combo in enumerate(combos):
        for i, H in enumerate(hs):
            r = by_key.get((H, combo))
            if r is None:
                continue
            x = i - 0.4 + (j + 0.5) * width
            v = r.get(key)
            label = " ".join(f"{k}={c}" for k, c in zip(others, combo, strict=True)) if i == 0 else None
            ax.bar(x, v or math.nan, width, color=colors[combo], edgecolor="k", lw=0.3, label=label)
            if v is None:
                ax.text(x, 1.0, "FAIL", rotation=90, ha="center", va="bottom", fontsize=6, color="red")
    vals = [r[key] for r in rows if r.get(key)] + [1.0]
    lo, hi = min(vals), max(vals)
    if hi / lo > 20:  # log scale when the bars and the 1x line are far apart
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        ax.set_ylim(0, hi * 1.15)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(hs)), [f"H={h}" for h in hs])
    ax.set_ylabel("speedup of the fused path (x)")
    ax.set_title(title, fontsize=9)
    if len(combos) <= 24:
        ax.legend(fontsize=6, ncol=2)


def panels(cases: Sequence[Case], block: Mapping) -> list[tuple[Case, str, str]]:
    """(case, speedup key, title) of every measured case: its own `plots`, else each of its speedups."""
    out = []
    for c in cases:
        if not block.get(c.name):
            continue
        out += [(c, key, title) for key, title in c.plots] or [(c, s.key, s.label) for s in c.speedups]
    return out


def torch_path_note(res: dict) -> str | None:
    """A note for the figure when the fused side ran the PyTorch path on some points."""
    rows = [r for b in res["precisions"].values() for v in b.values() if isinstance(v, list) for r in v]
    rows = [r for r in rows if isinstance(r, dict) and "backend" in r]
    torch_rows = sum(r["backend"] == "torch" for r in rows)
    if not torch_rows:
        return None
    return (
        f"note: the fused side ran the PyTorch path (torch backend) on {torch_rows} of {len(rows)} points: "
        "those bars compare PyTorch with PyTorch, not the Triton kernels"
    )


def plot(res: dict, path: Path, cases: Sequence[Case] = CASES) -> None:
    """One column per precision, one row per panel: every measured case. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precs = list(res["precisions"])
    rows_of = panels(cases, res["precisions"][precs[0]]) if precs else []
    fig, axes = plt.subplots(
        max(1, len(rows_of)),
        max(1, len(precs)),
        figsize=(7 * max(1, len(precs)), 11 / 3 * max(1, len(rows_of))),
        squeeze=False,
    )
    for col, prec in enumerate(precs):
        block = res["precisions"][prec]
        for row, (case, key, title) in enumerate(rows_of):
            shape_keys = list(case.points(res["grid"])[0]) if case.points(res["grid"]) else ["B", "T", "H"]
            plot_panel(axes[row][col], block.get(case.name, []), key, f"{prec}: {title}", shape_keys)
    i = res["info"]
    title = f"fused path vs PyTorch: {i['device']}, torch {i['torch']}, {i['date']}"
    if res.get("interrupted"):
        title += f" (interrupted: {res['interrupted']})"
    fig.suptitle(title, fontsize=10)
    note = torch_path_note(res)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="#b03030", wrap=True)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1 - 0.1 / max(1, len(rows_of))))
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def slug(text: str) -> str:
    """A file-name-safe lower-case form of text."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def write_outputs(
    res: dict, out: Path, quick: bool, with_plot: bool, cases: Sequence[Case] = CASES
) -> tuple[Path, str, bool]:
    """Write <device>-<date>[-quick].json / .md / .png atomically (a temp file, then os.replace); returns the
    stem, the markdown and whether a PNG was written.

    Without matplotlib the PNG is skipped with one line on stderr (PLOT_SKIPPED).
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{slug(res['info']['device'])}-{res['info']['date']}{'-quick' if quick else ''}"
    atomic_write(f"{stem}.json", json.dumps(res, indent=1))
    md = markdown(res, cases)
    atomic_write(f"{stem}.md", md)
    if not with_plot or not res["precisions"]:
        return stem, md, False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(PLOT_SKIPPED, file=sys.stderr)
        return stem, md, False
    plot(res, Path(f"{stem}.png"), cases)
    return stem, md, True


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: the benchmark writes the points it has and exits 143."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def int_list(text: str) -> list[int]:
    """argparse type: a comma list of positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
    return values


def build_parser(
    prog: str | None = "fused-rnn bench", default_out: Path | str = DEFAULT_OUT
) -> argparse.ArgumentParser:
    """The benchmark's options; `prog` names it in the usage line."""
    p = OneLineParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        epilog=f"cases: {', '.join(c.name for c in CASES)}. Without matplotlib the .png is skipped "
        '(pip install "fused_rnn[plot]").',
    )
    p.add_argument("--quick", action="store_true", help="a tiny grid that finishes within a minute on CPU")
    where = "" if Path(default_out).is_absolute() else ", under the working directory"
    p.add_argument("--out", default=str(default_out), help=f"output folder (%(default)s{where})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", help="comma list among tf32, ieee, bf16 (default: all that apply)")
    p.add_argument("--B", type=int_list, help="comma list of batch sizes (overrides the grid)")
    p.add_argument("--T", type=int_list, help="comma list of sequence lengths (overrides the grid)")
    p.add_argument("--H", type=int_list, help="comma list of hidden sizes (overrides the grid)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = "fused-rnn bench",
    default_out: Path | str = DEFAULT_OUT,
    cases: Sequence[Case] | None = None,
) -> int:
    """Run the benchmark, write JSON / markdown / PNG, print the tables; 1 if any fused point was wrong.

    argv: the options (default sys.argv[1:]); prog: the name in the usage line; default_out: --out's
    default; cases: the cases to run (default the registry `CASES`).
    """
    cases = CASES if cases is None else cases
    args = build_parser(prog, default_out).parse_args(None if argv is None else list(argv))
    t0 = time.perf_counter()
    own_term = threading.current_thread() is threading.main_thread()
    own_term = own_term and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if own_term:  # run on its own (bench/bench.py): SIGTERM stops it as Ctrl-C does, writing what it has
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        ensure_dir(args.out, "--out")  # before anything runs: a file, a read-only folder
        res = run(args, cases)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if own_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    res["info"]["wall_s"] = round(time.perf_counter() - t0, 2)
    stem, md, png = write_outputs(res, Path(args.out), args.quick, not args.no_plot, cases)
    print(md)
    print(f"wrote {stem}.json, .md{', .png' if png else ''} in {res['info']['wall_s']} s", file=sys.stderr)
    if res.get("interrupted"):
        print(f"{res['interrupted']}: wrote the points measured so far", file=sys.stderr)
        return res["exit_code"]
    failed = sum(block["failed_points"] for block in res["precisions"].values())
    if failed:
        print(f"error: {failed} point(s) failed the correctness check", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m fused_rnn.bench.runner"))
