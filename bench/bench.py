"""Benchmark: the Python-loop CharLoopModel, nn.RNN with tied weights (cuDNN on GPU), and the fused path.

Two comparisons per grid point, at matched precision:
  * recurrence: `nn.RNN(H, H)` with weight_ih = weight_hh = W_h, bias_ih = 0, bias_hh = b_h, fed
    inp = relu(l_in(e(c))) (T, B, H), against `fused_recurrence` on the same inp: forward, and
    forward + backward;
  * model: one training step (forward, NLL, backward) of CharLoopModel against FusedCharRNN.
Plus B = 1 generation: the forward of the recurrence per step.

Precisions (CUDA): "tf32" (cuDNN and cuBLAS allowed TF32, torch float32 matmul precision "high",
so the fused kernels use TF32 too), "ieee" (all TF32 off, precision "highest"), "bf16". On CPU:
"ieee" only. Every fused point is checked against nn.RNN before it is timed.

    python bench/bench.py [--quick] [--out DIR] [--precision tf32,ieee,bf16] [--B ..] [--T ..] [--H ..]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fused_rnn import CharLoopModel, FusedCharRNN, fused_recurrence
from fused_rnn.ops import resolve_backend

VOCAB, NFAC = 65, 42
FULL = dict(B=[32, 64, 128, 256], T=[64, 256], H=[128, 256, 512], gen_T=[1, 64], gen_H=[256, 512, 1024])
QUICK = dict(B=[8, 32], T=[16], H=[32, 64], gen_T=[1, 16], gen_H=[64])


def set_precision(mode: str) -> torch.dtype:
    """Apply the matmul / cuDNN settings for `mode`; returns the tensor dtype."""
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return torch.bfloat16 if mode == "bf16" else torch.float32


def timer(fn, device: torch.device, quick: bool) -> float:
    """Median milliseconds of fn(): do_bench on CUDA, else perf_counter over at least 5 calls."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(2):  # warm-up: allocator, thread pools, first-call paths
        fn()
    times: list[float] = []
    budget = 0.05 if quick else 0.5
    while len(times) < 5 or (sum(times) < budget * 1e3 and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def recurrence_point(B: int, T: int, H: int, dtype, device, quick: bool, backward: bool = True) -> dict:
    model = CharLoopModel(VOCAB, NFAC, H).to(device, dtype)
    tokens = torch.randint(0, VOCAB, (T, B), device=device)
    with torch.no_grad():
        inp = F.relu(model.l_in(model.e(tokens)))  # (T, B, H)
    w, b = model.l_hidden.weight.detach(), model.l_hidden.bias.detach()
    rnn = tied_rnn(w, b)
    h0 = torch.zeros(1, B, H, device=device, dtype=dtype)
    backend = resolve_backend(inp, "auto")[0]
    with torch.no_grad():
        check = rel(fused_recurrence(inp, w, b)[0], rnn(inp, h0)[0])
    r = dict(B=B, T=T, H=H, backend=backend, max_rel_vs_nn_rnn=check)
    with torch.no_grad():
        r["nn_rnn_fwd_ms"] = timer(lambda: rnn(inp, h0), device, quick)
        r["fused_fwd_ms"] = timer(lambda: fused_recurrence(inp, w, b), device, quick)
    if backward:
        x = inp.clone().requires_grad_()
        wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
        grad = torch.randn_like(inp)

        def fused_step():
            fused_recurrence(x, wg, bg)[0].backward(grad)

        def rnn_step():
            rnn(x, h0)[0].backward(grad)

        r["nn_rnn_fwdbwd_ms"] = timer(rnn_step, device, quick)
        r["fused_fwdbwd_ms"] = timer(fused_step, device, quick)
        r["speedup_fwdbwd"] = r["nn_rnn_fwdbwd_ms"] / r["fused_fwdbwd_ms"]
    r["speedup_fwd"] = r["nn_rnn_fwd_ms"] / r["fused_fwd_ms"]
    r["fused_fwd_us_per_step"] = 1e3 * r["fused_fwd_ms"] / T
    r["nn_rnn_fwd_us_per_step"] = 1e3 * r["nn_rnn_fwd_ms"] / T
    return r


def model_point(B: int, T: int, H: int, dtype, device, quick: bool) -> dict:
    ref = CharLoopModel(VOCAB, NFAC, H).to(device, dtype)
    fused = FusedCharRNN(VOCAB, NFAC, H).to(device, dtype)
    fused.load_state_dict(ref.state_dict())
    cs = torch.randint(0, VOCAB, (T, B), device=device).unbind(0)
    target = torch.randint(0, VOCAB, (B,), device=device)

    def step(m):
        return lambda: F.nll_loss(m(*cs).float(), target).backward()

    r = dict(B=B, T=T, H=H)
    r["reference_train_ms"] = timer(step(ref), device, quick)
    r["fused_train_ms"] = timer(step(fused), device, quick)
    r["speedup_train_vs_reference"] = r["reference_train_ms"] / r["fused_train_ms"]
    return r


def floors(dtype, device) -> dict:
    """Measured ceilings for the per-step floor: matmul rate in this precision and an empty launch."""
    if device.type != "cuda":
        return {}
    import triton.testing

    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
    x = torch.zeros(1, device=device)
    launch = triton.testing.do_bench(lambda: x.add_(1), return_mode="median")
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return dict(matmul_tflops=2 * n**3 / ms / 1e9, launch_us=launch * 1e3, copy_gbps=2 * src.numel() / copy / 1e6)


def add_floor(r: dict, fl: dict, dtype) -> None:
    if not fl:
        return
    flops_us = 2 * r["B"] * r["H"] ** 2 / (fl["matmul_tflops"] * 1e12) * 1e6
    bytes_us = 3 * r["B"] * r["H"] * torch.finfo(dtype).bits / 8 / (fl["copy_gbps"] * 1e9) * 1e6
    r["floor_us_per_step"] = max(flops_us, bytes_us)
    r["launch_us"] = fl["launch_us"]


def device_info(device: torch.device) -> dict:
    info = dict(
        date=dt.date.today().isoformat(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__,
        cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None,
        python=platform.python_version(),
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def markdown(res: dict) -> str:
    i = res["info"]
    lines = [
        f"# fused_rnn benchmark: {i['device']}, {i['date']}",
        "",
        f"torch {i['torch']}, triton {i['triton']}, cuDNN {i['cudnn']}, python {i['python']}. "
        "Times are medians in ms; speedup = nn.RNN / fused (recurrence) or CharLoopModel / FusedCharRNN (model).",
    ]
    for prec, block in res["precisions"].items():
        lines += ["", f"## {prec}", "", "### Recurrence (nn.RNN with tied weights vs fused_recurrence)", ""]
        lines += [
            "| B | T | H | backend | rel err | nn.RNN fwd | fused fwd | x | nn.RNN fwd+bwd | fused fwd+bwd | x "
            "| fused µs/step | floor µs/step |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in block["recurrence"]:
            floor = f"{r['floor_us_per_step']:.3f}" if "floor_us_per_step" in r else "—"
            lines.append(
                f"| {r['B']} | {r['T']} | {r['H']} | {r['backend']} | {r['max_rel_vs_nn_rnn']:.1e} "
                f"| {r['nn_rnn_fwd_ms']:.3f} | {r['fused_fwd_ms']:.3f} | {r['speedup_fwd']:.2f} "
                f"| {r['nn_rnn_fwdbwd_ms']:.3f} | {r['fused_fwdbwd_ms']:.3f} | {r['speedup_fwdbwd']:.2f} "
                f"| {r['fused_fwd_us_per_step']:.2f} | {floor} |"
            )
        lines += ["", "### Generation (B = 1, forward)", "", "| T | H | nn.RNN µs/step | fused µs/step | x |"]
        lines += ["|---|---|---|---|---|"]
        for r in block["generation"]:
            lines.append(
                f"| {r['T']} | {r['H']} | {r['nn_rnn_fwd_us_per_step']:.2f} | {r['fused_fwd_us_per_step']:.2f} "
                f"| {r['speedup_fwd']:.2f} |"
            )
        lines += ["", "### Training step (CharLoopModel vs FusedCharRNN)", "", "| B | T | H | reference | fused | x |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in block["model"]:
            lines.append(
                f"| {r['B']} | {r['T']} | {r['H']} | {r['reference_train_ms']:.3f} | {r['fused_train_ms']:.3f} "
                f"| {r['speedup_train_vs_reference']:.2f} |"
            )
        if block["recurrence"]:
            lines += ["", f"Geometric mean fwd+bwd speedup over nn.RNN: {block['geomean_fwdbwd']:.2f}x"]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precs = list(res["precisions"])
    fig, axes = plt.subplots(1, len(precs), figsize=(6 * len(precs), 4), squeeze=False)
    for ax, prec in zip(axes[0], precs, strict=True):
        rows = res["precisions"][prec]["recurrence"]
        labels = [f"B{r['B']}\nT{r['T']}\nH{r['H']}" for r in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["speedup_fwd"] for r in rows], 0.4, label="forward")
        ax.bar([x + 0.2 for x in xs], [r["speedup_fwdbwd"] for r in rows], 0.4, label="forward+backward")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(list(xs), labels, fontsize=6)
        ax.set_ylabel("speedup over nn.RNN (x)")
        ax.set_title(f"{res['info']['device']} — {prec}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    grid = dict(QUICK if args.quick else FULL)
    for k in ("B", "T", "H"):
        if getattr(args, k):
            grid[k] = [int(v) for v in getattr(args, k).split(",")]
    precs = (
        args.precision.split(",")
        if args.precision
        else (["tf32", "ieee", "bf16"] if device.type == "cuda" else ["ieee"])
    )
    torch.manual_seed(0)
    if device.type == "cpu":
        # one thread: with the default pool the first calls of each shape stall ~130 ms each
        # on these 2-core machines (torch 2.13), which swamps sub-millisecond timings
        torch.set_num_threads(1)
    res = dict(info=device_info(device), grid=grid, precisions={})
    for prec in precs:
        dtype = set_precision(prec)
        fl = floors(dtype, device)
        block = dict(floors=fl, recurrence=[], generation=[], model=[])
        for H in grid["H"]:
            for T in grid["T"]:
                for B in grid["B"]:
                    r = recurrence_point(B, T, H, dtype, device, args.quick)
                    add_floor(r, fl, dtype)
                    block["recurrence"].append(r)
                    block["model"].append(model_point(B, T, H, dtype, device, args.quick))
                    print(f"[{prec}] B={B} T={T} H={H}: fwd+bwd x{r['speedup_fwdbwd']:.2f}", file=sys.stderr)
        for H in grid["gen_H"]:
            for T in grid["gen_T"]:
                block["generation"].append(recurrence_point(1, T, H, dtype, device, args.quick, backward=False))
        sp = [r["speedup_fwdbwd"] for r in block["recurrence"]]
        block["geomean_fwdbwd"] = statistics.geometric_mean(sp) if sp else None
        res["precisions"][prec] = block
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny grid that finishes within a minute on CPU")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", help="comma list among tf32, ieee, bf16 (default: all that apply)")
    p.add_argument("--B", help="comma list of batch sizes")
    p.add_argument("--T", help="comma list of sequence lengths")
    p.add_argument("--H", help="comma list of hidden sizes")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        res = run(args)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", res["info"]["device"]).strip("-").lower() or "cpu"
    stem = out / f"{slug}-{res['info']['date']}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    stem.with_suffix(".md").write_text(md)
    if not args.no_plot:
        plot(res, stem.with_suffix(".png"))
    print(md)
    print(f"wrote {stem}.json, .md{'' if args.no_plot else ', .png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
