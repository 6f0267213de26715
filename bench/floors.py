"""On a GPU: the per-step floors the kernels are measured against (issue 11, step 2).

    python bench/floors.py [--out floors.json]

Every figure is a median over repeated runs (CUDA events through `triton.testing.do_bench`, or
the host clock where the host is what is measured):

  empty launch          a no-op Triton kernel and a one-element torch add, GPU time per launch
  host launch cost      host time to issue one split step-kernel launch with these kernels' real
                        arguments, and one whole `rnn_scan` call (T = 1), no sync in between
  one step per mode     forward time per step (T = 65 minus T = 1, over 64) of the single-program
                        kernel (H = 128), the split step kernels and the persistent split kernel
                        (H = 512, B = 32; persistent only where the grid is co-resident)
  CUDA graph replay     the split step-mode forward at T = 64 captured in a CUDA graph, per step
  grid barrier alone    a persistent kernel that only meets at `grid_barrier` (one counter per batch
                        block, as the split kernels), per barrier, on the split grid of H = 512, B = 32

Prints a table and writes the JSON. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import triton
import triton.language as tl
import triton.testing
from fused_rnn.kernels.utils import grid_barrier

from fused_rnn import launch, rnn_scan
from fused_rnn.dispatch import select_config
from fused_rnn.launch import GRID_BARRIER_ENV


@triton.jit
def _noop_kernel(x):
    pass


@triton.jit(do_not_specialize=["T"])
def _barrier_kernel(count, T):
    """T phases of nothing but the split kernels' barrier: one counter per batch block (program_id 0)."""
    n_prog = tl.num_programs(1)
    for i in range(T):
        grid_barrier(count + tl.program_id(0), (i + 1) * n_prog)


def _bench_ms(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def _host_us(fn, n: int = 2000) -> float:
    """Host time per call of fn (no synchronisation between calls), in µs."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return host


def _inputs(T: int, B: int, H: int, dtype: torch.dtype, device: torch.device):
    u = torch.randn(T, B, H, device=device, dtype=dtype)
    w = (torch.randn(H, H, device=device) / H**0.5).to(dtype)
    h0 = torch.randn(B, H, device=device, dtype=dtype)
    return u, w, h0


def _per_step_us(B: int, H: int, dtype: torch.dtype, device: torch.device, barrier: bool) -> float:
    """Forward time per step from T = 65 and T = 1 (the difference leaves the fixed costs out)."""
    os.environ[GRID_BARRIER_ENV] = "1" if barrier else "0"
    try:
        times = {}
        for T in (1, 65):
            u, w, h0 = _inputs(T, B, H, dtype, device)
            times[T] = _bench_ms(lambda u=u, w=w, h0=h0: rnn_scan(u, w, h0, backend="triton"))
        return (times[65] - times[1]) / 64 * 1e3
    finally:
        os.environ.pop(GRID_BARRIER_ENV, None)


def binder_cost_us(n: int = 2000) -> float | None:
    """Host time of the JIT's per-call work before a launch (binding and specialising the split step
    kernel's real arguments, then its cache-key lookup), measured on the CPU for an sm_90 target: the
    work step mode's direct launches skip. None where this Triton has no such binder."""
    try:
        from triton.backends import backends
        from triton.backends.compiler import GPUTarget
        from triton.runtime.jit import JITFunction, compute_cache_key, create_function_from_signature

        step = launch.K.split_recurrent_fwd_step_kernel
        if not isinstance(step, JITFunction):  # the interpreter's stand-in: build the compiled-mode function
            step = JITFunction(step.fn, do_not_specialize=["i", "T"])
        target = GPUTarget("cuda", 90, 32)
        backend = backends["nvidia"].compiler(target)
        binder = create_function_from_signature(step.signature, step.params, backend)
    except Exception:  # noqa: BLE001 - another Triton: nothing to measure
        return None
    T, B, H = 8, 32, 512
    u, w, h0 = (torch.empty(T, B, H), torch.empty(H, H), torch.empty(B, H))
    meta = dict(BB=16, BK=512, BN=16, SK=8, DOT_PRECISION="tf32", RELU=False, REVERSE=False, HAS_LENGTHS=False)
    cache: dict = {}

    def one() -> None:
        bound, spec, options = binder(u, w, h0, h0, u, h0, 0, T, B, H, **meta, num_warps=8)
        compute_cache_key(cache, spec, options)

    for _ in range(100):
        one()
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - t0) / n * 1e6


def measure(device: torch.device) -> dict:
    torch.set_float32_matmul_precision("high")  # TF32 dots: the kernels' fastest float32 path
    out: dict = dict(device=torch.cuda.get_device_name(device), torch=torch.__version__, triton=triton.__version__)
    x = torch.zeros(1, device=device)
    out["empty_triton_launch_us"] = _bench_ms(lambda: _noop_kernel[(1,)](x)) * 1e3
    out["empty_torch_launch_us"] = _bench_ms(lambda: x.add_(1)) * 1e3

    # host cost of one step launch with the real arguments (split, H = 512, B = 32, float32)
    T, B, H = 8, 32, 512
    u, w, h0 = _inputs(T, B, H, torch.float32, device)
    cfg = select_config(B, H, torch.float32, "tf32", torch.cuda.get_device_capability(device))
    hs, hn = torch.empty_like(u), torch.empty_like(h0)
    wt = w.t().contiguous()
    grid = (triton.cdiv(B, cfg.block_b), triton.cdiv(H, cfg.block_n))
    meta = dict(BB=cfg.block_b, BK=cfg.block_h, BN=cfg.block_n, DOT_PRECISION=cfg.dot_precision)
    meta.update(RELU=False, REVERSE=False, HAS_LENGTHS=False, **cfg.launch_options(False, False))
    step = launch.K.split_recurrent_fwd_step_kernel

    def one_launch():
        step[grid](u, wt, h0, h0, hs, hn, 0, T, B, H, **meta)

    out["host_step_launch_us"] = _host_us(one_launch)  # through the JIT: binder, specialisation, cache lookup
    # the same launch through the compiled kernel, as step mode's loop now makes all but its first
    compiled = step[grid](u, wt, h0, h0, hs, hn, 0, T, B, H, **meta)
    names = step.arg_names
    values = dict(zip(names, (u, wt, h0, h0, hs, hn, 0, T, B, H), strict=False)) | meta
    bound = [values[n] if n in values else p.default for n, p in zip(names, step.params, strict=True)]
    stream = torch.cuda.current_stream().cuda_stream
    run, fn, packed = compiled.run, compiled.function, compiled.packed_metadata

    def direct_launch():
        run(grid[0], grid[1], 1, stream, fn, packed, None, None, None, *bound)

    out["host_step_launch_direct_us"] = _host_us(direct_launch)
    u1, w1, h01 = _inputs(1, B, H, torch.float32, device)
    out["host_rnn_scan_T1_us"] = _host_us(lambda: rnn_scan(u1, w1, h01, backend="triton"), n=500)

    # one step of each kernel mode (H = 128 runs the split kernels on 99 KiB cards: named by what ran)
    single = select_config(32, 128, torch.float32, "tf32", torch.cuda.get_device_capability(device))
    out[f"step_{single.mode}_H128_B32_us"] = _per_step_us(32, 128, torch.float32, device, barrier=False)
    out["step_split_step_mode_H512_B32_us"] = _per_step_us(B, H, torch.float32, device, barrier=False)
    out["step_split_persistent_H512_B32_us"] = _per_step_us(B, H, torch.float32, device, barrier=True)
    out["step_split_step_mode_H512_B32_bf16_us"] = _per_step_us(B, H, torch.bfloat16, device, barrier=False)
    out["step_split_persistent_H512_B32_bf16_us"] = _per_step_us(B, H, torch.bfloat16, device, barrier=True)

    # the step-mode forward captured in a CUDA graph
    T = 64
    ug, wg, h0g = _inputs(T, B, H, torch.float32, device)
    with torch.no_grad():
        rnn_scan(ug, wg, h0g, backend="triton")  # compile before capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            rnn_scan(ug, wg, h0g, backend="triton")
    out["graph_step_mode_H512_B32_per_step_us"] = _bench_ms(graph.replay) * 1e3 / T

    # the grid barrier alone, on the split grid of H = 512, B = 32 (co-resident: tiny kernel)
    count = torch.zeros(grid[0], dtype=torch.int32, device=device)
    n_bar = 256

    def barriers():
        count.zero_()
        _barrier_kernel[grid](count, n_bar, launch_cooperative_grid=True)

    total = _bench_ms(barriers)
    base = _bench_ms(lambda: count.zero_())
    out["grid_barrier_us"] = (total - base) * 1e3 / n_bar
    out["grid_barrier_programs"] = grid[0] * grid[1]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: floors needs a CUDA device", file=sys.stderr)
        return 2
    res = measure(torch.device("cuda"))
    for k, v in res.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
