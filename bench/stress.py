"""Stress the fused kernels over random shapes: no hang, no error beyond rounding, no moving result.

Each iteration draws (B, T, H, mode), runs `fused_recurrence` forward and backward twice on
the same inputs and checks
  * the outputs and every gradient against a float64 reference (the suite's tolerance table),
  * that the two runs are bitwise equal (a result that moves between runs is a race).
On CUDA, `--barrier` sets FUSED_RNN_GRID_BARRIER=1 so the split sizes run the persistent
kernels with the grid barrier. Run it under `timeout`: a hang is a failure too.

    timeout 600 python bench/stress.py --iters 2000 --barrier        # on a GPU
    TRITON_INTERPRET=1 python bench/stress.py --iters 5 --max-h 64   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import TOL, make_inputs, reference_grads, rel_err  # noqa: E402

from fused_rnn import fused_recurrence  # noqa: E402
from fused_rnn.dispatch import SPLIT_MAX_H  # noqa: E402
from fused_rnn.launch import TF32X3_ENV  # noqa: E402

#: mode -> (dtype, float32 matmul precision, the tf32x3 option, tolerance row of the suite's TOL)
MODES = {
    "fp32": (torch.float32, "highest", False, "fp32"),
    "tf32": (torch.float32, "high", False, "tf32"),
    "tf32x3": (torch.float32, "highest", True, "fp32"),
    "bf16": (torch.bfloat16, "highest", False, torch.bfloat16),
    "fp16": (torch.float16, "highest", False, torch.float16),
}


def draw(rng: random.Random, max_h: int, max_b: int, max_t: int, modes: list[str]) -> tuple:
    mode = rng.choice(modes)
    h_cap = min(max_h, SPLIT_MAX_H[MODES[mode][0]])
    H = rng.choice([rng.randint(1, h_cap), 1 << rng.randint(4, h_cap.bit_length() - 1)])
    B = rng.choice([1, rng.randint(1, max_b)])
    T = rng.randint(1, max_t)
    return B, T, H, mode


def one(B: int, T: int, H: int, mode: str, device: torch.device) -> str | None:
    """None when the point passes, else what failed."""
    dtype, matmul, tf32x3, tol_row = MODES[mode]
    torch.set_float32_matmul_precision(matmul)
    os.environ[TF32X3_ENV] = "1" if tf32x3 else "0"
    xs = make_inputs(T, B, H, dtype, device)
    dhs = torch.randn(T, B, H, device=device, dtype=dtype)
    dhn = torch.randn(B, H, device=device, dtype=dtype)
    runs = []
    for _ in range(2):
        ys = [x.clone().requires_grad_() for x in xs]
        hs, hn = fused_recurrence(*ys, backend="triton")
        ((hs * dhs).sum() + (hn * dhn).sum()).backward()
        runs.append([hs.detach(), hn.detach()] + [y.grad for y in ys])
    for name, a, b in zip(("hs", "hn", "d inp", "dW", "db", "dh0"), *runs, strict=True):
        if not torch.equal(a, b):
            return f"{name} differs between two runs on the same inputs (a race?)"
    if B * H == 1 and dtype != torch.float32:
        return None  # one half-precision element: no norm to average rounding over (see the tests)
    ref_hs, ref_hn, ref_grads = reference_grads(xs, dhs, dhn)
    tol = TOL[tol_row]
    # a gradient with few elements (H = 1: dW and db are cancelling sums) is held to the largest gradient's norm
    scale = max(r.norm().item() for r in ref_grads)
    for name, got, ref, kind in [("hs", runs[0][0], ref_hs, "fwd"), ("hn", runs[0][1], ref_hn, "fwd")] + [
        (n, g, r, "bwd") for n, g, r in zip(("d inp", "dW", "db", "dh0"), runs[0][2:], ref_grads, strict=True)
    ]:
        err = rel_err(got, ref)
        if kind == "bwd" and ref.numel() < 16:
            err = min(err, (got.double().cpu() - ref).norm().item() / max(scale, 1e-30))
        if not err <= tol[kind]:
            return f"{name}: relative error {err:.2e} over {tol[kind]:.0e}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=540.0, help="stop drawing new shapes after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-h", type=int, default=2048)
    p.add_argument("--max-b", type=int, default=256)
    p.add_argument("--max-t", type=int, default=300)
    p.add_argument("--dtypes", default="fp32,tf32,bf16,fp16", help=f"modes among {','.join(MODES)}")
    p.add_argument("--barrier", action="store_true", help="persistent split kernels with the grid barrier (CUDA)")
    args = p.parse_args(argv)
    modes = args.dtypes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        p.error(f"--dtypes: {bad} not among {list(MODES)}")
    if args.barrier:
        os.environ["FUSED_RNN_GRID_BARRIER"] = "1"
    saved = torch.get_float32_matmul_precision(), os.environ.get(TF32X3_ENV)
    try:
        return _run(args, modes)
    finally:  # one() sets both per mode
        torch.set_float32_matmul_precision(saved[0])
        os.environ.pop(TF32X3_ENV, None)
        if saved[1] is not None:
            os.environ[TF32X3_ENV] = saved[1]


def _run(args: argparse.Namespace, modes: list[str]) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    t0, failures, done = time.perf_counter(), 0, 0
    for i in range(args.iters):
        if time.perf_counter() - t0 > args.seconds:
            break
        B, T, H, mode = draw(rng, args.max_h, args.max_b, args.max_t, modes)
        problem = one(B, T, H, mode, device)
        done += 1
        if problem:
            failures += 1
            print(f"FAIL {i}: B={B} T={T} H={H} {mode}: {problem}", flush=True)
    print(f"{done} shapes, {failures} failures, {time.perf_counter() - t0:.1f} s on {device}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
