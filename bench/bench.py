"""Benchmark: the Python-loop CharLoopModel, nn.RNN with tied weights (cuDNN on GPU), and the fused path.

Per grid point (B, T, H), at matched precision:
  * recurrence: `nn.RNN(H, H)` with weight_ih = weight_hh = W_h, bias_ih = 0, bias_hh = b_h and
    h0 = 0 (exactly tanh(W (h + x) + b)), fed inp = relu(l_in(e(c))) (T, B, H), against
    `fused_recurrence(inp, W_h, b_h)` on the same inp: forward, and forward + backward;
  * model: CharLoopModel against FusedCharRNN (same weights): the many-to-one forward `model(*cs)`,
    and one training step (forward, NLL loss, backward).
Plus B = 1 generation: the forward of the recurrence, per step, fused against nn.RNN.

Every fused point is checked once against nn.RNN (outputs and gradients; the fused model against
CharLoopModel) before it is timed; the max relative difference is recorded, and a point over the
precision's tolerance is marked FAIL, left out of the speedups, and makes the exit status 1.

Precisions (CUDA): "tf32" (cuBLAS and cuDNN allowed TF32, float32 matmul precision "high", so the
fused kernels use TF32 too), "ieee" (TF32 off, precision "highest"), "bf16" (models and inputs in
bfloat16). On CPU: "ieee" only; the fused path runs the torch backend there unless TRITON_INTERPRET=1
is set (Triton's interpreter). Each row records the backend that actually ran.

    python bench/bench.py [--quick] [--out DIR] [--device auto|cpu|cuda] [--precision tf32,ieee,bf16]
                          [--B 32,64] [--T 64] [--H 128] [--no-plot]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fused_rnn import CharLoopModel, FusedCharRNN, fused_recurrence
from fused_rnn.ops import resolve_backend

VOCAB, NFAC = 65, 42
FULL = dict(B=[32, 64, 128, 256], T=[64, 256], H=[128, 256, 512], gen_T=[1, 64], gen_H=[256, 512, 1024])
QUICK = dict(B=[8, 32], T=[16], H=[32, 64], gen_T=[1, 16], gen_H=[64])
PRECISIONS = ("tf32", "ieee", "bf16")
#: Max relative difference (max |fused - ref| / max |ref|) over which a point is wrong, not just rounded.
TOLERANCE = {"ieee": 1e-4, "tf32": 3e-2, "bf16": 1e-1}


@dataclass(frozen=True)
class Ctx:
    """Where and how one block of points runs."""

    device: torch.device
    prec: str
    dtype: torch.dtype
    quick: bool


# --------------------------------------------------------------------------------------------- setup


def set_precision(mode: str) -> torch.dtype:
    """Apply the cuBLAS / cuDNN / matmul-precision settings for `mode`; returns the tensor dtype."""
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return torch.bfloat16 if mode == "bf16" else torch.float32


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_info(device: torch.device) -> dict:
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


def time_ms(fn: Callable[[], object], ctx: Ctx) -> float:
    """Median milliseconds of fn(): triton's do_bench on CUDA, else perf_counter after a warm-up."""
    if ctx.device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()  # warm-up: allocator, first-call paths
    times: list[float] = []
    budget_ms = 30.0 if ctx.quick else 500.0
    min_reps, max_reps = (3, 5) if ctx.quick else (5, 50)
    while len(times) < min_reps or (sum(times) < budget_ms and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def floors(ctx: Ctx) -> dict:
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


def add_floor(r: dict, fl: dict) -> None:
    """Per-step floor: 2 B H^2 FLOPs at the measured matmul rate, and the launch latency."""
    if not fl:
        return
    r["flops_floor_us_per_step"] = 2 * r["B"] * r["H"] ** 2 / (fl["matmul_tflops"] * 1e12) * 1e6
    r["launch_floor_us"] = fl["launch_us"]
    r["floor_us_per_step"] = max(r["flops_floor_us_per_step"], r["launch_floor_us"])


# --------------------------------------------------------------------------------------------- checks


def max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|, in float64."""
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def tied_rnn(w: torch.Tensor, b: torch.Tensor) -> torch.nn.RNN:
    """nn.RNN computing exactly h_t = tanh(W (h_{t-1} + x_t) + b)."""
    H = w.shape[0]
    rnn = torch.nn.RNN(H, H, nonlinearity="tanh").to(w.device, w.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w)
        rnn.weight_hh_l0.copy_(w)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.copy_(b)
    return rnn


def check_recurrence(inp, w, b, rnn, h0, backward: bool) -> dict:
    """Max rel diff of fused_recurrence against nn.RNN: hs, and with `backward` d(inp), dW, db."""
    x1, x2 = inp.clone().requires_grad_(backward), inp.clone().requires_grad_(backward)
    w1, b1 = w.clone().requires_grad_(backward), b.clone().requires_grad_(backward)
    hs1, hs2 = fused_recurrence(x1, w1, b1)[0], rnn(x2, h0)[0]
    out = dict(max_rel_vs_nn_rnn=max_rel(hs1, hs2))
    if backward:
        g = torch.randn_like(hs1)
        dx1, dw1, db1 = torch.autograd.grad(hs1, (x1, w1, b1), g)
        params = (x2, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0)
        dx2, dwi, dwh, db2 = torch.autograd.grad(hs2, params, g)
        out["grad_max_rel_vs_nn_rnn"] = max(max_rel(dx1, dx2), max_rel(dw1, dwi + dwh), max_rel(db1, db2))
    return out


def point_ok(r: dict, prec: str) -> bool:
    errs = [v for k, v in r.items() if "max_rel" in k]
    return all(math.isfinite(e) and e <= TOLERANCE[prec] for e in errs)


def backend_of(inp: torch.Tensor) -> tuple[str, str | None]:
    """The backend fused_recurrence's "auto" runs for inp, and the fallback warning if any."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = resolve_backend(inp, "auto")[0]
    return name, (str(caught[0].message) if caught else None)


# --------------------------------------------------------------------------------------------- points


def recurrence_inputs(B: int, T: int, H: int, ctx: Ctx):
    """inp = relu(l_in(e(tokens))) (T, B, H), W_h, b_h, the tied nn.RNN and h0 = 0."""
    model = CharLoopModel(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    tokens = torch.randint(0, VOCAB, (T, B), device=ctx.device)
    with torch.no_grad():
        inp = F.relu(model.l_in(model.e(tokens)))
    w, b = model.l_hidden.weight.detach(), model.l_hidden.bias.detach()
    h0 = torch.zeros(1, B, H, device=ctx.device, dtype=ctx.dtype)
    return inp, w, b, tied_rnn(w, b), h0


def time_recurrence(inp, w, b, rnn, h0, ctx: Ctx, backward: bool) -> dict:
    r = {}
    with torch.no_grad():
        r["nn_rnn_fwd_ms"] = time_ms(lambda: rnn(inp, h0), ctx)
        r["fused_fwd_ms"] = time_ms(lambda: fused_recurrence(inp, w, b), ctx)
    if backward:
        x = inp.clone().requires_grad_()
        wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
        g = torch.randn_like(inp)
        r["nn_rnn_fwdbwd_ms"] = time_ms(lambda: rnn(x, h0)[0].backward(g), ctx)
        r["fused_fwdbwd_ms"] = time_ms(lambda: fused_recurrence(x, wg, bg)[0].backward(g), ctx)
    return r


def recurrence_point(B: int, T: int, H: int, ctx: Ctx, backward: bool = True) -> dict:
    """Check, then time, nn.RNN against fused_recurrence on the same inp."""
    inp, w, b, rnn, h0 = recurrence_inputs(B, T, H, ctx)
    backend, note = backend_of(inp)
    r = dict(B=B, T=T, H=H, backend=backend, **check_recurrence(inp, w, b, rnn, h0, backward))
    if note:
        r["backend_note"] = note
    r["ok"] = point_ok(r, ctx.prec)
    r.update(time_recurrence(inp, w, b, rnn, h0, ctx, backward))
    r["fused_fwd_ms_per_step"] = r["fused_fwd_ms"] / T
    r["fused_fwd_us_per_step"] = 1e3 * r["fused_fwd_ms"] / T
    r["nn_rnn_fwd_us_per_step"] = 1e3 * r["nn_rnn_fwd_ms"] / T
    for kind in ("fwd", "fwdbwd") if backward else ("fwd",):
        r[f"speedup_{kind}_vs_nn_rnn"] = r[f"nn_rnn_{kind}_ms"] / r[f"fused_{kind}_ms"] if r["ok"] else None
    return r


def model_point(B: int, T: int, H: int, ctx: Ctx) -> dict:
    """CharLoopModel against FusedCharRNN (same weights): forward, and a training step (NLL + backward)."""
    ref = CharLoopModel(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    fused = FusedCharRNN(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    fused.load_state_dict(ref.state_dict())
    cs = torch.randint(0, VOCAB, (T, B), device=ctx.device).unbind(0)
    target = torch.randint(0, VOCAB, (B,), device=ctx.device)
    with torch.no_grad():
        out_ref, out_fused = ref(*cs), fused(*cs)
    r = dict(B=B, T=T, H=H, model_max_rel_vs_reference=max_rel(out_fused, out_ref))
    r["ok"] = point_ok(r, ctx.prec)

    def train_step(m):
        return lambda: F.nll_loss(m(*cs).float(), target).backward()

    with torch.no_grad():
        r["reference_fwd_ms"] = time_ms(lambda: ref(*cs), ctx)
        r["fused_model_fwd_ms"] = time_ms(lambda: fused(*cs), ctx)
    r["reference_train_ms"] = time_ms(train_step(ref), ctx)
    r["fused_train_ms"] = time_ms(train_step(fused), ctx)
    good = r["ok"]
    r["speedup_fwd_vs_reference"] = r["reference_fwd_ms"] / r["fused_model_fwd_ms"] if good else None
    r["speedup_train_vs_reference"] = r["reference_train_ms"] / r["fused_train_ms"] if good else None
    return r


# --------------------------------------------------------------------------------------------- runs


def log_point(ctx: Ctx, r: dict, m: dict | None = None) -> None:
    """One line per point: check, per-step time of the fused recurrence, speedups."""
    err = max(v for k, v in r.items() if "max_rel" in k)
    line = (
        f"[{ctx.prec}] B={r['B']:<4} T={r['T']:<4} H={r['H']:<5} {r['backend']:<6} "
        f"max rel {err:.1e}{'' if r['ok'] else ' FAIL'} | fused fwd {r['fused_fwd_ms']:.3f} ms "
        f"= {r['fused_fwd_ms_per_step']:.4f} ms/step ({r['fused_fwd_us_per_step']:.2f} µs/step), "
        f"x{fmt_x(r['speedup_fwd_vs_nn_rnn'])} vs nn.RNN"
    )
    if "speedup_fwdbwd_vs_nn_rnn" in r:
        line += f"; fwd+bwd x{fmt_x(r['speedup_fwdbwd_vs_nn_rnn'])}"
    if "floor_us_per_step" in r:
        line += f"; floor {r['floor_us_per_step']:.2f} µs/step"
    if m is not None:
        line += f" | train step x{fmt_x(m['speedup_train_vs_reference'])} vs CharLoopModel"
    print(line, flush=True)


def geomean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.geometric_mean(vals) if vals else None


def run_precision(grid: dict, ctx: Ctx) -> dict:
    """All points of the grid, plus generation, in one precision."""
    fl = floors(ctx)
    block = dict(dtype=str(ctx.dtype).removeprefix("torch."), tolerance=TOLERANCE[ctx.prec], floors=fl)
    block.update(recurrence=[], model=[], generation=[])
    for H in grid["H"]:
        for T in grid["T"]:
            for B in grid["B"]:
                r = recurrence_point(B, T, H, ctx)
                add_floor(r, fl)
                m = model_point(B, T, H, ctx)
                block["recurrence"].append(r)
                block["model"].append(m)
                log_point(ctx, r, m)
    for H in grid["gen_H"]:
        for T in grid["gen_T"]:
            r = recurrence_point(1, T, H, ctx, backward=False)
            add_floor(r, fl)
            block["generation"].append(r)
            log_point(ctx, r)
    block["geomean_fwd_vs_nn_rnn"] = geomean([r["speedup_fwd_vs_nn_rnn"] for r in block["recurrence"]])
    block["geomean_fwdbwd_vs_nn_rnn"] = geomean([r["speedup_fwdbwd_vs_nn_rnn"] for r in block["recurrence"]])
    block["geomean_train_vs_reference"] = geomean([m["speedup_train_vs_reference"] for m in block["model"]])
    block["fused_backends"] = sorted({r["backend"] for r in block["recurrence"] + block["generation"]})
    block["failed_points"] = sum(not r["ok"] for key in ("recurrence", "model", "generation") for r in block[key])
    return block


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is available")
    return torch.device(name)


def build_grid(args: argparse.Namespace) -> dict:
    grid = {k: list(v) for k, v in (QUICK if args.quick else FULL).items()}
    for k in ("B", "T", "H"):
        if getattr(args, k):
            grid[k] = [int(v) for v in getattr(args, k).split(",")]
    return grid


def precisions(arg: str | None, device: torch.device) -> list[str]:
    allowed = list(PRECISIONS) if device.type == "cuda" else ["ieee"]
    if not arg:
        return allowed
    chosen = [p.strip() for p in arg.split(",") if p.strip()]
    bad = [p for p in chosen if p not in allowed]
    if bad:
        raise SystemExit(f"error: --precision: {bad} not among {allowed} on {device.type}")
    return chosen


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; restores the global precision settings afterwards."""
    device = resolve_device(args.device)
    grid, precs = build_grid(args), precisions(args.precision, device)
    if device.type == "cpu":
        # one thread: with the default pool the first calls of each shape stall ~130 ms each
        # on small (2-core) machines, which swamps sub-millisecond timings
        torch.set_num_threads(1)
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    res = dict(info=device_info(device), grid=grid, precision_list=precs, precisions={})
    try:
        for prec in precs:
            torch.manual_seed(0)
            ctx = Ctx(device, prec, set_precision(prec), args.quick)
            res["precisions"][prec] = run_precision(grid, ctx)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
    return res


# --------------------------------------------------------------------------------------------- report


def fmt_x(v: float | None) -> str:
    if v is None:
        return "FAIL"
    return f"{v:.2f}" if v >= 0.095 else f"{v:.1e}"


def fmt_floor(r: dict) -> str:
    if "floor_us_per_step" not in r:
        return "—"
    return f"{r['flops_floor_us_per_step']:.3f} / {r['launch_floor_us']:.2f}"


def md_header(res: dict) -> list[str]:
    i = res["info"]
    threads = f", {i['cpu_threads']} CPU thread(s)" if i.get("cpu_threads") else ""
    if i.get("triton_interpret"):
        threads += ", TRITON_INTERPRET=1 (fused kernels in Triton's CPU interpreter)"
    return [
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


def md_recurrence(block: dict) -> list[str]:
    lines = [
        "",
        "### Recurrence: nn.RNN (tied weights) vs fused_recurrence",
        "",
        "| B | T | H | backend | rel err | nn.RNN fwd | fused fwd | x fwd | nn.RNN fwd+bwd | fused fwd+bwd "
        "| x fwd+bwd | fused µs/step | floor/step µs (flops / launch) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in block["recurrence"]:
        err = max(r["max_rel_vs_nn_rnn"], r.get("grad_max_rel_vs_nn_rnn", 0.0))
        lines.append(
            f"| {r['B']} | {r['T']} | {r['H']} | {r['backend']} | {err:.1e} "
            f"| {r['nn_rnn_fwd_ms']:.3f} | {r['fused_fwd_ms']:.3f} | {fmt_x(r['speedup_fwd_vs_nn_rnn'])} "
            f"| {r['nn_rnn_fwdbwd_ms']:.3f} | {r['fused_fwdbwd_ms']:.3f} | {fmt_x(r['speedup_fwdbwd_vs_nn_rnn'])} "
            f"| {r['fused_fwd_us_per_step']:.2f} | {fmt_floor(r)} |"
        )
    return lines


def md_generation(block: dict) -> list[str]:
    lines = [
        "",
        "### Generation (B = 1, forward): per step",
        "",
        "| T | H | backend | rel err | nn.RNN µs/step | fused µs/step | x | floor/step µs (flops / launch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in block["generation"]:
        lines.append(
            f"| {r['T']} | {r['H']} | {r['backend']} | {r['max_rel_vs_nn_rnn']:.1e} "
            f"| {r['nn_rnn_fwd_us_per_step']:.2f} | {r['fused_fwd_us_per_step']:.2f} "
            f"| {fmt_x(r['speedup_fwd_vs_nn_rnn'])} | {fmt_floor(r)} |"
        )
    return lines


def md_model(block: dict) -> list[str]:
    lines = [
        "",
        "### Model: CharLoopModel vs FusedCharRNN (forward; training step = forward + NLL + backward)",
        "",
        "| B | T | H | rel err | reference fwd | fused fwd | x fwd | reference train | fused train | x train |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in block["model"]:
        lines.append(
            f"| {m['B']} | {m['T']} | {m['H']} | {m['model_max_rel_vs_reference']:.1e} "
            f"| {m['reference_fwd_ms']:.3f} | {m['fused_model_fwd_ms']:.3f} | {fmt_x(m['speedup_fwd_vs_reference'])} "
            f"| {m['reference_train_ms']:.3f} | {m['fused_train_ms']:.3f} | {fmt_x(m['speedup_train_vs_reference'])} |"
        )
    return lines


def md_summary(block: dict) -> list[str]:
    def g(v: float | None) -> str:
        return "n/a" if v is None else f"{fmt_x(v)}x"

    fl = block["floors"]
    lines = [
        "",
        f"Geometric mean speedup over nn.RNN: forward {g(block['geomean_fwd_vs_nn_rnn'])}, "
        f"forward+backward {g(block['geomean_fwdbwd_vs_nn_rnn'])}; "
        f"training step over CharLoopModel: {g(block['geomean_train_vs_reference'])}. "
        f"Failed checks: {block['failed_points']}.",
    ]
    if fl:
        lines += [
            "",
            f"Measured: {fl['matmul_n']}² matmul {fl['matmul_tflops']:.1f} TFLOP/s, launch {fl['launch_us']:.2f} µs.",
        ]
    return lines


def markdown(res: dict) -> str:
    lines = md_header(res)
    for prec, block in res["precisions"].items():
        backends = ", ".join(block["fused_backends"])
        lines += ["", f"## {prec} ({block['dtype']}, tolerance {block['tolerance']:g}; fused backend: {backends})"]
        lines += md_recurrence(block) + md_generation(block) + md_model(block) + md_summary(block)
    return "\n".join(lines) + "\n"


def plot_panel(ax, rows: list[dict], key: str, title: str) -> None:
    """Bars of rows[key] grouped by H; one bar per (T, B) inside a group."""
    import matplotlib.pyplot as plt

    hs = sorted({r["H"] for r in rows})
    combos = sorted({(r["T"], r["B"]) for r in rows})
    bs = sorted({b for _, b in combos})
    colors = {b: plt.cm.viridis(i / max(1, len(bs) - 1) * 0.85) for i, b in enumerate(bs)}
    hatches = {t: h for t, h in zip(sorted({t for t, _ in combos}), ["", "//", "..", "xx"], strict=False)}
    width = 0.8 / len(combos)
    by_key = {(r["H"], r["T"], r["B"]): r for r in rows}
    for j, (T, B) in enumerate(combos):
        for i, H in enumerate(hs):
            r = by_key.get((H, T, B))
            if r is None:
                continue
            x = i - 0.4 + (j + 0.5) * width
            v = r.get(key)
            label = f"T={T} B={B}" if i == 0 else None
            ax.bar(
                x, v or math.nan, width, color=colors[B], hatch=hatches.get(T, ""), edgecolor="k", lw=0.3, label=label
            )
            if v is None:
                ax.text(x, 1.0, "FAIL", rotation=90, ha="center", va="bottom", fontsize=6, color="red")
    vals = [r[key] for r in rows if r.get(key)] + [1.0]  # log scale when the bars and the 1x line are far apart
    if max(vals) / min(vals) > 20:
        ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(hs)), [f"H={h}" for h in hs])
    ax.set_ylabel("speedup over nn.RNN (x)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def plot(res: dict, path: Path) -> None:
    """One column per precision: forward, forward+backward and generation speedups over nn.RNN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precs = list(res["precisions"])
    fig, axes = plt.subplots(3, len(precs), figsize=(7 * len(precs), 11), squeeze=False)
    for col, prec in enumerate(precs):
        block = res["precisions"][prec]
        plot_panel(axes[0][col], block["recurrence"], "speedup_fwd_vs_nn_rnn", f"{prec}: recurrence forward")
        plot_panel(axes[1][col], block["recurrence"], "speedup_fwdbwd_vs_nn_rnn", f"{prec}: recurrence fwd+bwd")
        plot_panel(axes[2][col], block["generation"], "speedup_fwd_vs_nn_rnn", f"{prec}: generation (B=1) forward")
    i = res["info"]
    fig.suptitle(f"fused_recurrence vs nn.RNN: {i['device']}, torch {i['torch']}, {i['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def write_outputs(res: dict, out: Path, quick: bool, with_plot: bool) -> tuple[Path, str]:
    """Write <device>-<date>[-quick].json / .md / .png; returns the stem and the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{slug(res['info']['device'])}-{res['info']['date']}{'-quick' if quick else ''}"
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    Path(f"{stem}.md").write_text(md)
    if with_plot:
        plot(res, Path(f"{stem}.png"))
    return stem, md


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny grid that finishes within a minute on CPU")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", help="comma list among tf32, ieee, bf16 (default: all that apply)")
    p.add_argument("--B", help="comma list of batch sizes (overrides the grid)")
    p.add_argument("--T", help="comma list of sequence lengths (overrides the grid)")
    p.add_argument("--H", help="comma list of hidden sizes (overrides the grid)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write JSON / markdown / PNG, print the table; 1 if any fused point was wrong."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    res = run(args)
    res["info"]["wall_s"] = round(time.perf_counter() - t0, 2)
    stem, md = write_outputs(res, Path(args.out), args.quick, not args.no_plot)
    print(md)
    print(f"wrote {stem}.json, .md{'' if args.no_plot else ', .png'} in {res['info']['wall_s']} s", file=sys.stderr)
    failed = sum(block["failed_points"] for block in res["precisions"].values())
    if failed:
        print(f"error: {failed} point(s) failed the correctness check", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
