"""What bench/gpu_run.py and its phase modules share (bench/gpu_gated.py): the point, the records, cuDNN's
algorithm, matched precision, the tolerance and error measure of the checks, and the timer.

The lowest of the run's modules: it imports none of them, so each phase module imports it and gpu_run.py
imports both (no import circle); gpu_run.py stays the one entry point.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what each precision of a point means, on both sides of every comparison (`precision_mode`)
PRECISION_TEXT = {
    "fp32": "float32, IEEE: no TF32 in cuDNN, cuBLAS or the kernels' dots",
    "tf32": "float32, TF32 allowed in cuDNN, cuBLAS and the kernels' dots",
    "bf16": "bfloat16 tensors, float32 accumulation",
    "fp16": "float16 tensors, float32 accumulation",
    "fp64": "float64 tensors (no kernel takes them: the rehearsal's refused point)",
}


# --------------------------------------------------------------------------- the point


@dataclass(frozen=True)
class Point:
    """One timed shape: B rows, T steps, hidden size H, at precision `prec` (a key of PRECISION_TEXT)."""

    B: int
    T: int
    H: int
    prec: str

    @property
    def spec(self) -> tuple[int, int, str]:
        """What selects the kernels and their specialisation: T is not specialised (do_not_specialize)."""
        return (self.B, self.H, self.prec)


# --------------------------------------------------------------------------- records


def append(out: Path, record: dict) -> None:
    """One JSON line appended and flushed to disk at once, so a crash keeps it."""
    record = dict(record, t=round(time.time(), 3))
    with open(out / "points.jsonl", "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(out: Path) -> list[dict]:
    path = out / "points.jsonl"
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill is dropped, the rest kept
            recs.append(json.loads(line))
    return recs


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- cuDNN's choice


def cudnn_algorithm(
    B: int, T: int, H: int, dtype_name: str, forward: bool, *, input_size: int | None = None, layers: int = 1,
    bidirectional: bool = False, packed: bool = False, capability: tuple[int, int] = (9, 0), sm_count: int = 132,
    cell: str = "rnn", proj: bool = False,
) -> str:  # fmt: skip
    """The cuDNN RNN algorithm PyTorch picks (``get_algo`` in ATen's cudnn/RNN.cpp), for cell "rnn" (Elman),
    "lstm" or "gru":

    packed input or LSTM projections -> STANDARD; a GRU on sm_8x and later -> STANDARD; otherwise, non-double
    with H <= 384 forward / H <= 256 backward (Elman) or H <= 192 / H <= 128 (LSTM, GRU) ->
    PERSIST_STATIC_SMALL_H; fp16 Elman or LSTM with 1 layer, one direction, H <= 1024, H % 128 == 0,
    input % 128 == 0, B % 8 == 0, B <= 128, (B < 96 or H < 896), on sm_8x (not 8.6) and later with >= 98 SMs
    -> PERSIST_STATIC; else STANDARD. (T does not enter for sm_8x+.)
    """
    input_size = H if input_size is None else input_size
    if packed or proj or (cell == "gru" and capability[0] >= 8):
        return "STANDARD"
    small = (384, 256) if cell == "rnn" else (192, 128)
    if dtype_name != "fp64" and capability[0] >= 6 and H <= (small[0] if forward else small[1]):
        return "PERSIST_STATIC_SMALL_H"
    if dtype_name == "fp16" and cell in ("rnn", "lstm"):
        common = layers == 1 and H <= 1024 and not bidirectional and H % 128 == 0 and input_size % 128 == 0
        device = capability[0] >= 8 and sm_count >= 98 and capability[1] != 6
        device = device and B % 8 == 0 and B <= 128 and (B < 96 or H < 896)
        if common and device:
            return "PERSIST_STATIC"
    return "STANDARD"


# --------------------------------------------------------------------------- matched precision, kernel modes


@contextlib.contextmanager
def precision_mode(prec: str):
    """Matched precision on both sides: fp32 = IEEE everywhere (no TF32 in cuDNN or cuBLAS), tf32 = TF32
    allowed everywhere; bf16 / fp16 / fp64 leave float32 alone."""
    import torch

    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    tf32 = prec == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[1], saved[2]


@contextlib.contextmanager
def kernel_mode(mode: str):
    """The environment that makes FusedRNN run `mode` (persistent: the grid-barrier kernels)."""
    from fused_rnn.launch import GRID_BARRIER_ENV

    saved = os.environ.get(GRID_BARRIER_ENV)
    os.environ[GRID_BARRIER_ENV] = "1" if mode == "persistent" else "0"
    try:
        yield
    finally:
        os.environ.pop(GRID_BARRIER_ENV, None)
        if saved is not None:
            os.environ[GRID_BARRIER_ENV] = saved


@contextlib.contextmanager
def persistent_probe():
    """Yields a list that gets, per persistent attempt, whether the grid-barrier kernel ran (False: the grid
    is not co-resident on this card and step mode ran instead)."""
    import fused_rnn.launch as launch

    ran: list[bool] = []
    orig = launch._launch_persistent

    def probe(*args, **kwargs):
        ok = orig(*args, **kwargs)
        ran.append(ok)
        return ok

    launch._launch_persistent = probe
    try:
        yield ran
    finally:
        launch._launch_persistent = orig


def dtype_of(prec: str):
    import torch

    return {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
            "fp64": torch.float64}[prec]  # fmt: skip


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- checks


def tolerance(prec: str) -> dict:
    """The suite's tolerance row for a precision (tests/helpers.py TOL): max relative error against float64."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import TOL

    return TOL[dtype_of(prec) if prec in ("bf16", "fp16") else prec]


def rel_err(got, ref) -> float:
    """||got - ref|| / ||ref|| in float64; inf where got holds a NaN (an element the kernel did not write)."""
    import torch

    if torch.isnan(got).any():
        return math.inf  # an unwritten (NaN-poisoned) element
    got, ref = got.detach().double(), ref.detach().double()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-30))


# --------------------------------------------------------------------------- timing


def bench_ms(fn, smoke: bool) -> tuple[float, float, float]:
    """(median, p20, p80) in ms: triton.testing.do_bench on CUDA, the host clock in the interpreter."""
    import torch

    if torch.cuda.is_available():
        import triton.testing

        q = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        return float(q[0]), float(q[1]), float(q[2])
    fn()
    times = []
    for _ in range(2 if smoke else 10):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return q(0.5), q(0.2), q(0.8)


def timed_fns(module, x, gout, graph: bool):
    """forward and forward + backward closures of `module` on x (T, B, H) with output gradient gout."""
    import torch

    if graph:
        with torch.no_grad():
            module(x)  # built before capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                module(x)
        xg = x.detach().clone().requires_grad_()
        graphed = torch.cuda.make_graphed_callables(module, (xg,))

        def fwdbwd_g():
            o, _ = graphed(xg)
            o.backward(gout)

        return g.replay, fwdbwd_g

    def fwd():
        with torch.no_grad():
            module(x)

    xr = x.detach().clone().requires_grad_()

    def fwdbwd():
        o, _ = module(xr)
        o.backward(gout)

    return fwd, fwdbwd
