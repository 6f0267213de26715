"""One prepared GPU run: every check and measurement a short GPU lease allows, in phases.

    bash bench/gpu_run.sh                  # on the GPU machine: installs the package offline, then this
    python bench/gpu_run.py [--out DIR] [--budget SECONDS] [--phases a,b,...]
    python bench/gpu_run.py --smoke --out DIR   # the same phases on the CPU (interpreter, tiny shapes)

Phases, in order, each in its own process under its own timeout (a hang or a crash loses that
phase's unfinished point, never what came before it):

  a env          nvidia-smi, versions, clocks, Triton's identity (version, libtriton/source hash, ptxas);
                 restores the carried prebuilt cache (.triton-cache/sm90.tar.xz, `--build-cache`) into the
                 run's TRITON_CACHE_DIR when it was built by this very Triton
  b warmup       compiles every kernel specialisation the later phases launch, in a process pool over
                 the cores (T is not specialised, so T = 2 builds what T = 1024 runs); with the carried
                 cache restored, these are cache hits, and the record says how many kernels it compiled
  c correctness  every specialisation the timing phase times, plus ragged lengths and reverse, against
                 float64 at the suite's tolerances with NaN-poisoned outputs; persistent mode twice,
                 bitwise equal
  d timing       FusedRNN against nn.RNN (cuDNN) with the same weights, forward and forward + backward,
                 do_bench medians with p20 / p80, every kernel mode side by side, cuDNN's algorithm per
                 point, then the per-step floors (bench/floors.py)
  e gated        FusedLSTM / FusedGRU against nn.LSTM / nn.GRU: per point a check against float64 and the
                 timing, cuDNN's algorithm, "no kernel: <reason>" where the kernels refuse a point, issue 23's
                 targets (bench/gpu_gated.py, which says what it adds to the budget)
  f flashrnn     FlashRNN's Elman ("cuda_fused") at the same points, where it can be had (see there)
  g tests        the CUDA-only tests, then as much of the suite as the budget leaves

Before a GPU session, on any machine (no GPU, no torch in the compiling Python):

    python bench/gpu_run.py --build-cache --cache-python /path/to/python3.12   # triton 3.6.0 installed there

records the warm-up's launches under the interpreter and compiles them for sm_90 into the prebuilt cache
(bench/triton_cache.py); pass `.triton-cache` in the device call's carry.

Every record is appended to DIR/points.jsonl as it is made; after each phase the parent rewrites
DIR/results.json and DIR/results.md (atomically), and at the end DIR/results.png. The run writes
at most 7 files, all at the top level of DIR: log.txt, points.jsonl, results.json, results.md,
results.png, pytest.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:  # the phase modules and their shared helpers, however this file was loaded
    sys.path.insert(0, str(BENCH))

import gpu_gated  # noqa: E402
from gpu_common import (  # noqa: E402
    Point,
    append,
    bench_ms,
    cudnn_algorithm,
    device,
    dtype_of,
    kernel_mode,
    log,
    persistent_probe,
    precision_mode,
    read_records,
    rel_err,
    timed_fns,
    tolerance,
)

FILES = ("log.txt", "points.jsonl", "results.json", "results.md", "results.png", "pytest.txt")
PHASES = ("env", "warmup", "correctness", "timing", "gated", "flashrnn", "tests")
#: seconds per phase on the card (the parent also stops every phase at the overall budget, 420 s; the tests
#: phase, last, gets what is left: the gated phase's 35-50 s (bench/gpu_gated.py) come out of its share)
TIMEOUTS = {"env": 30, "warmup": 110, "correctness": 80, "timing": 170, "gated": 60, "flashrnn": 75, "tests": 300}
SMOKE_TIMEOUTS = {"env": 30, "warmup": 90, "correctness": 100, "timing": 90, "gated": 60, "flashrnn": 20,
                  "tests": 60}  # fmt: skip
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: the mode each dtype's tolerance row and matmul settings come from
FLASHRNN_JIT_SECONDS = 60


# --------------------------------------------------------------------------- the grid


def timing_grid(smoke: bool) -> list[Point]:
    """The timing phase's points (the issue's grid on a card; a tiny one in the interpreter)."""
    if smoke:  # one single-program and one split size, a B = 1 class, a second T (the same kernels)
        return [Point(16, 4, 32, "fp32"), Point(16, 4, 32, "bf16"), Point(16, 2, 160, "bf16"),
                Point(1, 2, 160, "bf16"), Point(16, 3, 160, "bf16")]  # fmt: skip
    pts = [Point(16, 1024, H, p) for H in (128, 256, 768, 1024) for p in PRECISIONS]
    pts += [Point(16, 1024, 2048, p) for p in ("bf16", "fp16")]
    pts += [Point(B, 1024, 768, "bf16") for B in (1, 4, 64, 256)]
    pts += [Point(16, T, 768, "bf16") for T in (64, 256, 2048)]
    return pts


def generation_grid(smoke: bool) -> list[Point]:
    """`FusedCharRNN.generate` points (V = 65): B streams of T characters at hidden size H."""
    if smoke:
        return [Point(B, 8, 32, "fp32") for B in (1, 4)]
    return [Point(B, 1024, 128, p) for p in ("fp32", "tf32") for B in (1, 64)]


def kernel_modes(H: int, cuda: bool) -> dict[str, str | None]:
    """Each kernel mode of a hidden size and why it cannot run here (None: it runs).

    single: one program per 16 rows (H <= 128). step: the split kernels, one launch per step.
    persistent: the split kernels in one cooperative launch with a grid barrier. graph: the step
    mode captured in a CUDA graph.
    """
    from fused_rnn.dispatch import SINGLE_MAX_H

    if H <= SINGLE_MAX_H:
        return {"single": None}
    return {
        "step": None,
        "persistent": None if cuda else "CUDA only: a spin barrier deadlocks the interpreter",
        "graph": None if cuda else "CUDA only",
    }


def timed_specs(smoke: bool, cuda: bool) -> set[tuple]:
    """(B, H, prec, mode) of every kernel launch the timing phase makes."""
    specs = {p.spec + (m,) for p in timing_grid(smoke) for m, why in kernel_modes(p.H, cuda).items() if why is None}
    return specs | {p.spec + ("generate",) for p in generation_grid(smoke)}


def extra_checks(smoke: bool) -> list[tuple[Point, str]]:
    """Ragged lengths and reverse (a bidirectional FusedRNN on a PackedSequence), per mode."""
    pts = [Point(17, 4, 100, "fp32"), Point(17, 3, 160, "bf16")] if smoke else [
        Point(17, 64, 100, "fp32"), Point(16, 64, 768, "bf16"), Point(33, 64, 1024, "tf32"), Point(16, 64, 2048, "fp16")
    ]  # fmt: skip
    return [(p, "packed_bidirectional") for p in pts]


def checked_specs(smoke: bool, cuda: bool) -> set[tuple]:
    """(B, H, prec, mode) the correctness phase checks: every timed one (the extras come on top)."""
    kinds = ("single", "step", "persistent", "graph", "generate")
    return {p.spec + (m,) for p, m in correctness_items(smoke, cuda) if m in kinds}


def correctness_items(smoke: bool, cuda: bool) -> list[tuple[Point, str]]:
    """What the correctness phase runs, in order: one short-T point per timed specialisation and mode,
    then the extras."""
    seen: dict[tuple, tuple[Point, str]] = {}
    for p in timing_grid(smoke):
        for m, why in kernel_modes(p.H, cuda).items():
            if why is None:
                seen.setdefault(p.spec + (m,), (Point(p.B, min(p.T, 64), p.H, p.prec), m))
    for p in generation_grid(smoke):
        seen.setdefault(p.spec + ("generate",), (Point(p.B, min(p.T, 64), p.H, p.prec), "generate"))
    return list(seen.values()) + extra_checks(smoke)


# --------------------------------------------------------------------------- records and files


def _atomic_write(path: Path, data: bytes | str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- phase a: environment


def _run_text(cmd: list[str], timeout: float = 15) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"


def triton_identity() -> dict:
    """Triton's identity as its cache keys hold it (bench/triton_cache.py)."""
    return _triton_cache().identity()


def _triton_cache():
    sys.path.insert(0, str(BENCH))
    import triton_cache

    return triton_cache


def phase_env(out: Path, smoke: bool) -> None:
    import torch

    import fused_rnn

    rec: dict = {"phase": "env", "smoke": smoke, "python": sys.version.split()[0], "torch": torch.__version__}
    rec["fused_rnn"] = fused_rnn.__version__
    rec["git"] = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    rec["cuda"] = torch.cuda.is_available()
    rec["cpu_count"] = os.cpu_count()
    rec["triton_identity"] = triton_identity()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.update(device=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count)
        rec["cudnn"] = torch.backends.cudnn.version()
        rec["nvidia_smi"] = _run_text(["nvidia-smi"])
        rec["clocks"] = _run_text(["nvidia-smi", "-q", "-d", "CLOCK"])
    else:
        rec.update(device=f"cpu ({platform.processor() or platform.machine()})", interpreted=True)
    carried = os.environ.get(CARRIED_ENV)
    if carried:  # restore the prebuilt cache (part 2) into this run's Triton cache, if built by this Triton
        try:
            rec["carried_cache"] = _triton_cache().restore(Path(carried), Path(os.environ["TRITON_CACHE_DIR"]),
                                                           rec["triton_identity"])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bad file must not cost the env record; the pool compiles
            rec["carried_cache"] = {"restored": False, "why": f"restore failed: {type(exc).__name__}: {exc}"}
    else:
        rec["carried_cache"] = {"restored": False, "why": "none carried: the warm-up compiles in a process pool"}
    log(f"env: carried Triton cache: {rec['carried_cache']}")
    append(out, rec)
    log(f"env: {rec['device']}, torch {rec['torch']}, triton {rec['triton_identity']['triton']}")


# --------------------------------------------------------------------------- shared set-up


def modules(H: int, prec: str, dev, *, layers: int = 1, bidirectional: bool = False):
    """A FusedRNN (backend triton) and an nn.RNN with the same weights, in the point's dtype."""
    import torch

    from fused_rnn import FusedRNN

    fused = FusedRNN(H, H, layers, bidirectional=bidirectional, backend="triton", device=dev, dtype=dtype_of(prec))
    ref = torch.nn.RNN(H, H, layers, bidirectional=bidirectional, device=dev, dtype=dtype_of(prec))
    ref.load_state_dict(fused.state_dict())
    return fused, ref


# --------------------------------------------------------------------------- phase b: warm-up


def exercise(p: Point, mode: str, dev) -> None:
    """Run one (point, mode) at T = 2 as the later phases run it: forward and backward through FusedRNN, or for
    generation `generate` with and without log-probabilities and the per-step loop. T is not specialised, so
    this launches every kernel specialisation the point's longer runs launch (what the warm-up compiles and
    bench/triton_cache.py records)."""
    import torch

    if mode in gpu_gated.CELLS:  # an LSTM / GRU point
        gpu_gated.exercise(p, mode, dev)
        return
    with precision_mode(p.prec), kernel_mode("step" if mode == "graph" else mode):
        if mode == "generate":
            from fused_rnn.bench.cases.generation import _per_step_loop

            _case, s, _ctx = _generation_case(Point(p.B, 2, p.H, p.prec), dev, smoke=False)
            with torch.no_grad():
                s.fused.generate(s.prime, s.n, seed=0, return_logp=True)
                s.fused.generate(s.prime, s.n, seed=0)
                _per_step_loop(s.fused, s.prime, s.n)
            return
        bidir = mode == "packed_bidirectional"
        fused, _ = modules(p.H, p.prec, dev, bidirectional=bidir)
        dt = dtype_of(p.prec)
        x = torch.randn(2, p.B, p.H, device=dev, dtype=dt, requires_grad=True)
        h0 = torch.randn(2 if bidir else 1, p.B, p.H, device=dev, dtype=dt, requires_grad=True)
        if bidir:
            lengths = torch.tensor([2] + [1] * (p.B - 1))
            x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        # as the correctness phase: a given h0, gradients into the output and h_n
        out, hn = fused(x, h0)
        out = out.data if bidir else out
        torch.autograd.backward([out, hn], [torch.randn_like(out), torch.randn_like(hn)])
        if not bidir:  # as the timing phase: no h0, a gradient into the output only (HAS_DHN off)
            out, _ = fused(x)
            out.backward(torch.randn_like(out))


def floor_items() -> list[tuple[Point, str]]:
    """The shapes bench/floors.py launches rnn_scan at (float32 at "high" is TF32), as warm-up items."""
    return [(Point(32, 2, 128, "tf32"), "single")] + [
        (Point(32, 2, 512, prec), mode) for prec in ("tf32", "bf16") for mode in ("step", "persistent")
    ]


def warmup_items(smoke: bool, cuda: bool) -> list[tuple[Point, str]]:
    """What the warm-up runs (and the cache builder records): every correctness item, the LSTM / GRU points,
    then the floors' shapes."""
    return correctness_items(smoke, cuda) + gpu_gated.warmup_items(smoke) + ([] if smoke else floor_items())


def _warm_one(item: tuple) -> tuple[str, float, str | None]:
    """Run one (point, mode) forward and backward at T = 2 so its kernels are compiled into the cache."""
    p, mode = Point(*item[0]), item[1]
    t0 = time.perf_counter()
    try:
        import torch

        dev = device()
        exercise(p, mode, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return f"{p}/{mode}", time.perf_counter() - t0, None
    except Exception as exc:  # noqa: BLE001 - reported per item
        return f"{p}/{mode}", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


def phase_warmup(out: Path, smoke: bool) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    cuda = torch.cuda.is_available()
    items = [(tuple(asdict(p).values()), m) for p, m in warmup_items(smoke, cuda)]
    if smoke:  # the interpreter compiles nothing: rehearse the pool on the first few
        items = items[:3]
    from triton import knobs

    cache_dir = knobs.cache.dir  # TRITON_CACHE_DIR (the carried cache went there), else ~/.triton/cache
    tc = _triton_cache()
    before = (tc.kernel_dirs(Path(cache_dir)), tc.launchers(Path(cache_dir))) if cache_dir else None
    workers = max(1, min(len(items), (os.cpu_count() or 2) if cuda else 2, 16))
    t0 = time.perf_counter()
    errors = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for name, _secs, err in pool.map(_warm_one, items):
            if err:
                errors.append(f"{name}: {err}")
                log(f"warmup: {name} failed: {err}")
    wall = time.perf_counter() - t0
    rec = {"phase": "warmup", "items": len(items), "workers": workers, "seconds": round(wall, 1), "errors": errors,
           "interpreted": not cuda}  # fmt: skip
    if before is not None:  # kernels and C launchers in the cache before (the carried ones), and those built now
        rec.update(
            kernels_cached_before=before[0],
            kernels_compiled=tc.kernel_dirs(Path(cache_dir)) - before[0],
            launchers_cached_before=before[1],
            launchers_built=tc.launchers(Path(cache_dir)) - before[1],
        )
    append(out, rec)
    log(f"warmup: {len(items)} items on {workers} processes in {wall:.1f} s, {len(errors)} errors" + (
        f"; built {rec['kernels_compiled']} kernels and {rec['launchers_built']} launchers, {before[0]} and "
        f"{before[1]} were in the cache" if before is not None else ""))  # fmt: skip


# --------------------------------------------------------------------------- phase c: correctness


def _generation_case(p: Point, dev, smoke: bool):
    """The benchmark's generation case (fused_rnn/bench/cases/generation.py), its state for p, and its Ctx."""
    from fused_rnn.bench.case import Ctx
    from fused_rnn.bench.cases import generation

    ctx = Ctx(dev, p.prec, dtype_of(p.prec), smoke, lambda fn: bench_ms(fn, smoke)[0])
    return generation, generation.setup(dict(B=p.B, T=p.T, H=p.H), ctx), ctx


def check_generation(p: Point, dev) -> dict:
    """generate's log-probabilities (return_logp) against the float64 model, teacher-forced on the drawn tokens,
    with NaN-poisoned outputs: 1e-4 in float32 (issue 19), the suite's forward tolerance in tf32."""
    import fused_rnn.launch as launch

    launch.POISON = True
    try:
        with precision_mode(p.prec):
            case, state, ctx = _generation_case(p, dev, smoke=False)
            rec = case.check(state, ctx)
    finally:
        launch.POISON = False
    tol = 1e-4 if p.prec == "fp32" else tolerance(p.prec)["fwd"]
    err = rec["gen_logp_max_rel_vs_float64"]
    ok = err <= tol  # NaN (an unwritten element) fails
    return dict(rec, tolerance=tol, ok=ok, failed=[] if ok else [f"generate logp {err:.2e} over {tol:.0e}"])


def check_point(p: Point, mode: str, dev) -> dict:
    """FusedRNN (so rnn_scan and its kernels) against nn.RNN in float64, forward and every gradient."""
    import torch

    import fused_rnn.launch as launch

    bidir = mode == "packed_bidirectional"
    dtype = dtype_of(p.prec)
    fused, _ = modules(p.H, p.prec, dev, bidirectional=bidir)
    ref = torch.nn.RNN(p.H, p.H, bidirectional=bidir, device=dev, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in fused.state_dict().items()})
    D = 2 if bidir else 1
    x = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    h0 = (torch.randn(D, p.B, p.H, device=dev) * 0.5).to(dtype)
    gout = torch.randn(p.T, p.B, D * p.H, device=dev).to(dtype)
    ghn = torch.randn(D, p.B, p.H, device=dev).to(dtype)
    lengths = torch.randint(1, p.T + 1, (p.B,)) if bidir else None
    if lengths is not None:
        lengths[0] = p.T

    def run(module, xx, hh, graph: bool = False):
        xx = xx.detach().clone().requires_grad_()
        hh = hh.detach().clone().requires_grad_()
        inp = xx
        if lengths is not None:
            inp = torch.nn.utils.rnn.pack_padded_sequence(xx, lengths, enforce_sorted=False)
        if graph:
            module = torch.cuda.make_graphed_callables(module, (inp, hh))
        o, hn = module(inp, hh)
        if lengths is not None:
            o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, total_length=p.T)
        torch.autograd.backward([o, hn], [gout.to(o.dtype), ghn.to(hn.dtype)])
        grads = [xx.grad, hh.grad] + [w.grad for w in module.parameters()] if not graph else [xx.grad, hh.grad]
        return [o, hn] + grads

    names = ["output", "h_n", "d input", "d h0"] + [n for n, _ in fused.named_parameters()]
    launch.POISON = True
    try:
        with precision_mode(p.prec), kernel_mode("step" if mode == "graph" else mode), persistent_probe() as ran:
            got = run(fused, x, h0)
            if mode == "persistent":
                for w in fused.parameters():
                    w.grad = None
                again = run(fused, x, h0)
                repeat = all(torch.equal(a, b) for a, b in zip(got, again, strict=True))
            if mode == "graph":
                graphed = run(fused, x, h0, graph=True)
    finally:
        launch.POISON = False
    want = run(ref, x.double(), h0.double())
    tol = tolerance(p.prec)
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want, strict=True)}
    rec = {"errors": {k: float(f"{v:.3e}") for k, v in errs.items()}}
    bad = [n for n, e in errs.items() if not e <= tol["fwd" if n in ("output", "h_n") else "bwd"]]
    if mode == "persistent":
        rec["persistent_ran"] = bool(ran) and all(ran)  # else the grid is not co-resident: step mode ran
        rec["bitwise_repeat"] = repeat
        if not repeat:
            bad.append("persistent run not bitwise repeatable")
    if mode == "graph":  # the replay held to the same tolerance (cuBLAS may pick another GEMM under capture)
        gerr = {n: rel_err(g, w) for n, g, w in zip(names[:4], graphed, want[:4], strict=True)}
        rec["graph_errors"] = {k: float(f"{v:.3e}") for k, v in gerr.items()}
        rec["graph_bitwise_equal_to_eager"] = all(torch.equal(a, b) for a, b in zip(graphed, got[:4], strict=True))
        bad += [f"graph {n}" for n, e in gerr.items() if not e <= tol["fwd" if n in ("output", "h_n") else "bwd"]]
    rec.update(ok=not bad, failed=bad, tolerance=tol)
    return rec


def phase_correctness(out: Path, smoke: bool) -> None:
    import torch

    dev = device()
    items = correctness_items(smoke, dev.type == "cuda")
    n_bad = 0
    for i, (p, mode) in enumerate(items):
        t0 = time.perf_counter()
        try:
            rec = check_generation(p, dev) if mode == "generate" else check_point(p, mode, dev)
        except Exception as exc:  # noqa: BLE001 - a failure is a result
            rec = {"ok": False, "failed": [f"{type(exc).__name__}: {exc}"]}
        rec.update(phase="correctness", point=asdict(p), mode=mode, seconds=round(time.perf_counter() - t0, 2))
        append(out, rec)
        n_bad += not rec["ok"]
        log(f"correctness {i + 1}/{len(items)} {p} {mode}: {'ok' if rec['ok'] else 'FAIL ' + str(rec['failed'])}")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    log(f"correctness: {len(items) - n_bad} of {len(items)} passed")


# --------------------------------------------------------------------------- phase d: timing


def time_point(p: Point, dev, smoke: bool, cap: tuple[int, int], sms: int) -> list[dict]:
    import torch

    recs = []
    fused, ref = modules(p.H, p.prec, dev)
    dtype = dtype_of(p.prec)
    x = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    gout = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    flop = 2 * p.B * p.H * p.H * p.T  # one pass of the recurrence; forward + backward counts 3
    algo = dict(
        forward=cudnn_algorithm(p.B, p.T, p.H, p.prec, True, capability=cap, sm_count=sms),
        backward=cudnn_algorithm(p.B, p.T, p.H, p.prec, False, capability=cap, sm_count=sms),
    )
    with precision_mode(p.prec):
        base = {}
        fwd, fwdbwd = timed_fns(ref, x, gout, graph=False)
        base["fwd"], base["fwdbwd"] = bench_ms(fwd, smoke), bench_ms(fwdbwd, smoke)
        for mode, why in kernel_modes(p.H, dev.type == "cuda").items():
            rec = {"phase": "timing", "point": asdict(p), "mode": mode, "cudnn_algorithm": algo,
                   "baseline": "nn.RNN (cuDNN)" if dev.type == "cuda" else "nn.RNN (CPU)"}  # fmt: skip
            if why is not None:
                recs.append(dict(rec, skipped=why))
                continue
            try:
                with kernel_mode("step" if mode == "graph" else mode), persistent_probe() as ran:
                    fwd, fwdbwd = timed_fns(fused, x, gout, graph=mode == "graph")
                    fwd()
                    if mode == "persistent" and not all(ran):
                        recs.append(dict(rec, skipped="the grid is not co-resident on this card: step mode runs"))
                        continue
                    ours = {"fwd": bench_ms(fwd, smoke), "fwdbwd": bench_ms(fwdbwd, smoke)}
            except Exception as exc:  # noqa: BLE001 - a mode that cannot run is a result
                recs.append(dict(rec, skipped=f"{type(exc).__name__}: {exc}"))
                continue
            for kind, passes in (("fwd", 1), ("fwdbwd", 3)):
                ms, p20, p80 = ours[kind]
                bms = base[kind][0]
                rec[kind] = {
                    "ms": ms, "p20": p20, "p80": p80, "us_per_step": ms * 1e3 / p.T,
                    "tflops": passes * flop / (ms * 1e-3) / 1e12,
                    "baseline_ms": bms, "baseline_p20": base[kind][1], "baseline_p80": base[kind][2],
                    "baseline_us_per_step": bms * 1e3 / p.T, "speedup": bms / ms,
                }  # fmt: skip
            recs.append(rec)
    return recs


def phase_timing(out: Path, smoke: bool) -> None:
    import torch

    dev = device()
    cuda = dev.type == "cuda"
    cap, sms = (9, 0), 132  # the interpreter: sm_90's table, an H200's SMs
    if cuda:
        cap, sms = torch.cuda.get_device_capability(), torch.cuda.get_device_properties(0).multi_processor_count
    pts = timing_grid(smoke)
    for i, p in enumerate(pts):
        t0 = time.perf_counter()
        try:
            recs = time_point(p, dev, smoke, cap, sms)
        except Exception as exc:  # noqa: BLE001
            recs = [{"phase": "timing", "point": asdict(p), "error": f"{type(exc).__name__}: {exc}"}]
        for r in recs:
            append(out, r)
        best = [r["fwdbwd"]["speedup"] for r in recs if "fwdbwd" in r]
        log(f"timing {i + 1}/{len(pts)} {p}: fwd+bwd {max(best):.2f}x nn.RNN (best mode), "
            f"{time.perf_counter() - t0:.1f} s" if best else f"timing {i + 1}/{len(pts)} {p}: no mode ran")  # fmt: skip
        if cuda:
            torch.cuda.empty_cache()
    for p in generation_grid(smoke):
        rec = {"phase": "generation", "point": asdict(p)}
        try:
            with precision_mode(p.prec), torch.no_grad():
                case, state, ctx = _generation_case(p, dev, smoke)
                rec.update(case.run(state, ctx), path=case.choose_path(state.fused, p.B, "auto")[0])
        except Exception as exc:  # noqa: BLE001
            rec["error"] = f"{type(exc).__name__}: {exc}"
        append(out, rec)
        rate = {k: rec.get(f"{k}_chars_per_s", 0.0) for k in ("one_launch", "per_step_loop", "char_loop")}
        log(
            f"generation {p}: {rate['one_launch']:,.0f} chars/s ({rec.get('path')}), per-step loop "
            f"{rate['per_step_loop']:,.0f}, CharLoopModel {rate['char_loop']:,.0f}"
        )
    sys.path.insert(0, str(BENCH))
    import floors

    rec = {"phase": "floors"}
    try:
        rec.update(floors.measure(dev) if cuda else {"skipped": "CUDA only"})
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"{type(exc).__name__}: {exc}"
    rec["cpu_jit_binder_us"] = floors.binder_cost_us()
    append(out, rec)
    log(f"floors: {rec}")


# --------------------------------------------------------------------------- phase e: LSTM / GRU

# bench/gpu_gated.py (`gpu_gated.phase`)


# --------------------------------------------------------------------------- phase f: FlashRNN


def _flashrnn_path() -> tuple[str | None, str]:
    """A sys.path entry holding flashrnn (and einops), or None and why not."""
    import importlib.util

    if importlib.util.find_spec("flashrnn") is not None:
        return "", "installed"
    wheels = sorted((ROOT / ".whl").glob("*.whl")) if (ROOT / ".whl").is_dir() else []
    if not any(w.name.startswith("flashrnn") for w in wheels):
        return None, ("not installed here and no wheel carried in .whl/ (flashrnn and einops wheels, "
                      "e.g. `pip download --no-deps -d .whl flashrnn einops`, then carry .whl)")  # fmt: skip
    target = Path(tempfile.mkdtemp(prefix="flashrnn-"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target)] + [str(w) for w in wheels], capture_output=True, text=True)  # fmt: skip
    if r.returncode:
        return None, f"pip could not install the carried wheels: {r.stderr.strip()[-300:]}"
    return str(target), "carried wheel"


def phase_flashrnn(out: Path, smoke: bool) -> None:
    import torch

    rec: dict = {"phase": "flashrnn"}
    if not torch.cuda.is_available():
        append(out, dict(rec, skipped="CUDA only (its kernels are CUDA C++ built at run time)"))
        log("flashrnn: CUDA only")
        return
    path, how = _flashrnn_path()
    if path is None:
        append(out, dict(rec, skipped=how))
        log(f"flashrnn: skipped: {how}")
        return
    # the JIT build runs in a child under its own limit: a slow nvcc must not eat the other phases
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH", "")])))
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, __file__, "--flashrnn-child", "--out", str(out)], env=env,
                           timeout=FLASHRNN_JIT_SECONDS + 60, capture_output=True, text=True)  # fmt: skip
        log(r.stdout[-2000:] + r.stderr[-2000:])
    except subprocess.TimeoutExpired:
        append(out, dict(rec, skipped=f"build and timing ran past {FLASHRNN_JIT_SECONDS + 60} s", source=how))
    log(f"flashrnn: {time.perf_counter() - t0:.0f} s ({how})")


def flashrnn_child(out: Path) -> None:
    """In its own process: build FlashRNN's Elman cuda_fused kernel (at most FLASHRNN_JIT_SECONDS), then time it."""
    import threading

    import torch

    def too_slow():
        append(out, {"phase": "flashrnn", "skipped": f"its JIT build ran past {FLASHRNN_JIT_SECONDS} s"})
        os._exit(3)

    timer = threading.Timer(FLASHRNN_JIT_SECONDS, too_slow)
    timer.start()
    from flashrnn import flashrnn

    dev = torch.device("cuda")

    def call(p: Point, grad: bool):
        dtype = dtype_of(p.prec)
        wx = torch.randn(p.B, p.T, 1, 1, p.H, device=dev, dtype=dtype, requires_grad=grad)
        r = (torch.randn(1, 1, p.H, p.H, device=dev) / p.H**0.5).to(dtype).requires_grad_(grad)
        b = torch.zeros(1, 1, p.H, device=dev, dtype=dtype, requires_grad=grad)
        name = {"bf16": "bfloat16", "fp16": "float16"}.get(p.prec, "float32")
        return lambda: flashrnn(wx, r, b, function="elman", backend="cuda_fused", dtype=name)

    t0 = time.perf_counter()
    try:
        call(Point(16, 8, 768, "bf16"), False)()
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001
        timer.cancel()
        append(out, {"phase": "flashrnn", "skipped": f"build or first call failed: {type(exc).__name__}: {exc}"})
        return
    timer.cancel()
    append(out, {"phase": "flashrnn", "build_seconds": round(time.perf_counter() - t0, 1)})
    for p in timing_grid(False):
        rec = {"phase": "flashrnn", "point": asdict(p)}
        try:
            fwd = call(p, False)
            with torch.no_grad():
                ms, p20, p80 = bench_ms(fwd, False)
            rec["fwd"] = {"ms": ms, "p20": p20, "p80": p80, "us_per_step": ms * 1e3 / p.T}
            f = call(p, True)

            def fwdbwd(f=f):
                h, _ = f()
                h.float().sum().backward()

            ms, p20, p80 = bench_ms(fwdbwd, False)
            rec["fwdbwd"] = {"ms": ms, "p20": p20, "p80": p80, "us_per_step": ms * 1e3 / p.T}
        except Exception as exc:  # noqa: BLE001
            rec["skipped"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        append(out, rec)


# --------------------------------------------------------------------------- phase g: tests

#: the tests that only run on CUDA: the grid barrier, tf32x3, the compiled tanh bound, fp16 autocast, no host sync
CUDA_ONLY = "barrier or tf32x3 or tanh or autocast or sync or cuda"


def _pytest_cmd(extra: list[str], workers: int, timeout: int) -> list[str]:
    import importlib.util

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if importlib.util.find_spec("xdist") is not None and workers > 1:
        cmd += ["-n", str(workers)]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += ["--timeout", str(timeout)]
    return cmd + extra


def _summary(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip("= ") if lines else "no output"


def phase_tests(out: Path, smoke: bool, deadline: float) -> None:
    import torch

    cuda = torch.cuda.is_available()
    runs = [("cuda_only", ["tests", "-k", CUDA_ONLY, "--ignore=tests/test_compile_gate.py"], 8)]
    if not cuda:  # they skip on the CPU anyway: check the selection and the invocation, run nothing
        runs = [("cuda_only (collected only: CPU)", runs[0][1] + ["--collect-only"], 1)]
    if cuda:
        runs.append(("suite", ["tests", "-x", "--ignore=tests/test_compile_gate.py"], min(16, os.cpu_count() or 1)))
    for name, args, workers in runs:
        left = deadline - time.time() - 5
        if left < 20:
            append(out, {"phase": "tests", "run": name, "skipped": "no time left in the budget"})
            continue
        cmd = _pytest_cmd(args, workers, 120)
        t0 = time.perf_counter()
        with open(out / "pytest.txt", "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            try:
                r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=left, text=True)
                rc = r.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        text = (out / "pytest.txt").read_text()
        summary = _summary(text)
        append(out, {"phase": "tests", "run": name, "rc": rc, "summary": summary,
                      "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        log(f"tests {name}: rc {rc}, {summary}")
    if not cuda:
        append(out, {"phase": "tests", "run": "suite", "skipped": "CPU: CI runs the suite itself"})


# --------------------------------------------------------------------------- the report


def report(out: Path, make_plot: bool = False) -> dict:
    """results.json (every record, grouped) and results.md (the tables) from points.jsonl; results.png on request."""
    recs = read_records(out)
    res: dict = {"phases": {}}
    for r in recs:
        res["phases"].setdefault(r.get("phase", "?"), []).append(r)
    timing = [r for r in res["phases"].get("timing", []) if "fwdbwd" in r]
    best: dict[tuple, dict] = {}
    for r in timing:
        key = tuple(r["point"].values())
        if key not in best or r["fwdbwd"]["ms"] < best[key]["fwdbwd"]["ms"]:
            best[key] = r
    sp = [r["fwdbwd"]["speedup"] for r in best.values()]
    res["summary"] = {
        "points_timed": len(best),
        "geomean_fwdbwd_speedup_best_mode": math.exp(sum(map(math.log, sp)) / len(sp)) if sp else None,
        "min_fwdbwd_speedup_best_mode": min(sp) if sp else None,
        "correctness": _correctness_summary(res["phases"].get("correctness", [])),
    }
    env = (res["phases"].get("env") or [None])[0]  # without it, the points recorded are the plan
    planned = gpu_gated.grid(bool(env.get("smoke"))) if env else None
    res["summary"]["gated"] = gpu_gated.summary(res["phases"].get("gated", []), planned)
    _atomic_write(out / "results.json", json.dumps(res, indent=1, default=str))
    _atomic_write(out / "results.md", _markdown(res, timing))
    if make_plot:
        _plot(out, timing)
    return res


def _correctness_summary(recs: list[dict]) -> dict:
    return {"checked": len(recs), "passed": sum(bool(r.get("ok")) for r in recs),
            "failed": [f"{r['point']} {r['mode']}: {r.get('failed')}" for r in recs if not r.get("ok")]}  # fmt: skip


def _markdown(res: dict, timing: list[dict]) -> str:
    env = (res["phases"].get("env") or [{}])[0]
    lines = [f"# GPU run: {env.get('device', '?')}", ""]
    lines.append(f"torch {env.get('torch')}, triton {env.get('triton_identity', {}).get('triton')}, "
                 f"cuDNN {env.get('cudnn', '-')}, fused_rnn {env.get('git', '?')}" + (" (SMOKE: CPU interpreter, "
                 "tiny shapes; the figures say nothing about the kernels)" if env.get("smoke") else ""))  # fmt: skip
    s = res["summary"]
    c = s["correctness"]
    lines += ["", f"Correctness: {c['passed']} of {c['checked']} checks passed." + (
        " Failed: " + "; ".join(c["failed"]) if c["failed"] else "")]  # fmt: skip
    if s["geomean_fwdbwd_speedup_best_mode"]:
        lines.append(f"Forward + backward against nn.RNN, best mode per point: geometric mean "
                     f"{s['geomean_fwdbwd_speedup_best_mode']:.2f}x, lowest {s['min_fwdbwd_speedup_best_mode']:.2f}x "
                     f"over {s['points_timed']} points.")  # fmt: skip
    lines += ["", "Speedup = nn.RNN time / ours (same weights, same dtype, matched TF32 setting); µs per step = "
              "median / T; TFLOP/s counts 2·B·H² per step per pass (forward 1 pass, forward + backward 3).", "",
              "| B | T | H | prec | mode | cuDNN fwd / bwd | fwd µs/step (p20–p80) | nn.RNN fwd | fwd × | "
              "fwd+bwd µs/step | nn.RNN fwd+bwd | fwd+bwd × | TFLOP/s fwd |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["phases"].get("timing", []):
        p = r.get("point", {})
        head = f"| {p.get('B')} | {p.get('T')} | {p.get('H')} | {p.get('prec')} | {r.get('mode', '-')} |"
        algo = r.get("cudnn_algorithm", {})
        algo_s = f" {algo.get('forward', '?')} / {algo.get('backward', '?')} |"
        if "fwd" not in r:
            lines.append(head + algo_s + f" {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        f, b = r["fwd"], r["fwdbwd"]
        lines.append(
            head + algo_s
            + f" {f['us_per_step']:.2f} ({f['p20'] * 1e3 / p['T']:.2f}–{f['p80'] * 1e3 / p['T']:.2f}) |"
            + f" {f['baseline_us_per_step']:.2f} | {f['speedup']:.2f} | {b['us_per_step']:.2f} |"
            + f" {b['baseline_us_per_step']:.2f} | {b['speedup']:.2f} | {f['tflops']:.2f} |"
        )  # fmt: skip
    lines += gpu_gated.markdown(res["phases"].get("gated", []), s["gated"])
    gen = res["phases"].get("generation", [])
    if gen:
        lines += ["", "## Generation (FusedCharRNN, V = 65): characters per second", "",
                  "| B | N | H | prec | path | generate | per-step loop | CharLoopModel | µs per char-step |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in gen:
            p = r["point"]
            if "one_launch_chars_per_s" not in r:
                lines.append(f"| {p['B']} | {p['T']} | {p['H']} | {p['prec']} | {r.get('error')} | | | | |")
                continue
            lines.append(
                f"| {p['B']} | {p['T']} | {p['H']} | {p['prec']} | {r['path']} | {r['one_launch_chars_per_s']:,.0f} |"
                f" {r['per_step_loop_chars_per_s']:,.0f} | {r['char_loop_chars_per_s']:,.0f} |"
                f" {r['one_launch_us_per_step']:.2f} |"
            )
    fl = (res["phases"].get("floors") or [{}])[-1]
    if fl:
        lines += ["", "## Floors", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in fl.items()
                  if k not in ("phase", "t")]  # fmt: skip
    fr = res["phases"].get("flashrnn", [])
    if fr:
        lines += ["", "## FlashRNN Elman (cuda_fused)", ""]
        for r in fr:
            if "point" in r and "fwd" in r:
                lines.append(f"- {r['point']}: fwd {r['fwd']['us_per_step']:.2f} µs/step, fwd+bwd "
                             f"{r['fwdbwd']['us_per_step']:.2f} µs/step")  # fmt: skip
            else:
                lines.append(f"- {r.get('point', '')} {r.get('skipped') or r.get('build_seconds')}")
    tests = res["phases"].get("tests", [])
    if tests:
        lines += ["", "## Tests", ""] + [f"- {r.get('run')}: {r.get('summary') or r.get('skipped')} "
                                         f"(rc {r.get('rc', '-')})" for r in tests]  # fmt: skip
    runs = res["phases"].get("run", [])
    if runs:
        lines += ["", "## Phases", ""] + [f"- {r['name']}: {r['status']} in {r['seconds']} s" for r in runs]
    return "\n".join(lines) + "\n"


def _plot(out: Path, timing: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not timing:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, kind in zip(axes, ("fwd", "fwdbwd"), strict=True):
        labels = [f"B{r['point']['B']} T{r['point']['T']} H{r['point']['H']} {r['point']['prec']} {r['mode']}"
                  for r in timing]  # fmt: skip
        vals = [r[kind]["speedup"] for r in timing]
        ax.barh(range(len(vals)), vals, color=["tab:green" if v >= 1 else "tab:red" for v in vals])
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        lo, hi = min(vals + [1.0]), max(vals + [1.0])
        ax.set_xlim(lo / 1.3, hi * 1.3)  # 1.0 stays inside the axis
        ax.set_yticks(range(len(vals)), labels, fontsize=6)
        ax.set_title(f"{'forward' if kind == 'fwd' else 'forward + backward'}: nn.RNN time / ours")
    fig.tight_layout()
    buf = out / ".results.png.tmp"
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    os.replace(buf, out / "results.png")


# --------------------------------------------------------------------------- the driver


def run_phase(name: str, out: Path, smoke: bool, deadline: float) -> int:
    if name == "env":
        phase_env(out, smoke)
    elif name == "warmup":
        phase_warmup(out, smoke)
    elif name == "correctness":
        phase_correctness(out, smoke)
    elif name == "timing":
        phase_timing(out, smoke)
    elif name == "gated":
        gpu_gated.phase(out, smoke, deadline)
    elif name == "flashrnn":
        phase_flashrnn(out, smoke)
    elif name == "tests":
        phase_tests(out, smoke, deadline)
    return 0


def drive(out: Path, smoke: bool, budget: float, phases: list[str], carried: Path | None = None) -> int:
    """Each phase in a child process under min(its timeout, what is left of the budget). `carried`: a prebuilt
    Triton cache that the env phase restores into a fresh TRITON_CACHE_DIR for every phase."""
    out.mkdir(parents=True, exist_ok=True)
    env = _child_env(smoke)
    if carried is not None:
        env.update({CARRIED_ENV: str(carried), "TRITON_CACHE_DIR": tempfile.mkdtemp(prefix="fused_rnn-triton-")})
    start = time.time()
    deadline = start + budget
    timeouts = SMOKE_TIMEOUTS if smoke else TIMEOUTS
    status = 0
    with open(out / "log.txt", "a") as logf:
        for name in phases:
            left = deadline - time.time()
            if left < 5:
                append(out, {"phase": "run", "name": name, "status": "skipped: budget spent", "seconds": 0})
                continue
            limit = min(timeouts[name], left)
            # the phase's own end (its kill), so that a phase with a time guard stops before it
            cmd = [sys.executable, __file__, "--phase", name, "--out", str(out), "--deadline", str(time.time() + limit)]
            cmd += ["--smoke"] if smoke else []
            t0 = time.time()
            log(f"== phase {name} (limit {limit:.0f} s)")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env=env)  # fmt: skip
            timer = _Killer(proc, limit)
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                logf.write(line)
                logf.flush()
            proc.wait()
            timer.cancel()
            st = "timeout" if timer.fired else ("ok" if proc.returncode == 0 else f"exit {proc.returncode}")
            status |= st != "ok"
            append(out, {"phase": "run", "name": name, "status": st, "seconds": round(time.time() - t0, 1)})
            report(out)
    report(out, make_plot=True)
    res = json.loads((out / "results.json").read_text())
    c, g = res["summary"]["correctness"], res["summary"]["gated"]
    status |= bool(c["failed"]) or bool(g["failed"])
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    log(f"gpu_run: {time.time() - start:.0f} s; correctness {c['passed']}/{c['checked']}, LSTM / GRU "
        f"{g['passed']}/{g['checked']}; files in {out}: {files}")  # fmt: skip
    if carried is not None:  # the run's own cache folder (the machine's default cache is left alone)
        shutil.rmtree(env["TRITON_CACHE_DIR"], ignore_errors=True)
    return status


def _child_env(smoke: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if smoke:
        env["TRITON_INTERPRET"] = "1"  # set before the child imports triton
    return env


class _Killer:
    """Kill a child's whole process group after `seconds` (pool workers and pytest included)."""

    def __init__(self, proc: subprocess.Popen, seconds: float) -> None:
        import threading

        self.fired = False
        self.proc = proc
        self.timer = threading.Timer(seconds, self._kill)
        self.timer.daemon = True
        self.timer.start()

    def _kill(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def cancel(self) -> None:
        self.timer.cancel()


# --------------------------------------------------------------------------- the prebuilt Triton cache (part 2)

#: the parent tells the env phase which carried cache to restore into TRITON_CACHE_DIR
CARRIED_ENV = "FUSED_RNN_CARRIED_CACHE"


def record_child(path: Path) -> None:
    """Under the interpreter: the launches of every warm-up item as a card runs them, into `path` (JSON)."""
    import torch

    tc = _triton_cache()
    items = warmup_items(False, cuda=True)
    dev = torch.device("cpu")

    def work():
        for p, mode in items:
            exercise(p, mode, dev)
            yield

    t0 = time.perf_counter()
    records = tc.record(work)
    _atomic_write(path, json.dumps({"items": len(items), "records": records}))
    log(f"build-cache: {len(items)} warm-up items launch {len(records)} distinct kernel specialisations "
        f"(recorded in {time.perf_counter() - t0:.0f} s)")  # fmt: skip


def _compile_chunk(job: tuple[list[dict], str | None]) -> dict:
    records, stub = job
    return _triton_cache().compile_records(records, stub=Path(stub) if stub else None)


def compile_child(records_file: Path, pack_file: Path, jobs: int) -> int:
    """Without torch or a GPU: compile the records for sm_90 into TRITON_CACHE_DIR over `jobs` processes, then
    pack that folder with this Triton's identity into `pack_file`."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from triton._C.libtriton import get_cache_invalidating_env_vars

    tc = _triton_cache()
    if env_vars := get_cache_invalidating_env_vars():  # they enter every key: the card would miss them all
        log(f"build-cache: error: unset {', '.join(sorted(env_vars))}: they enter Triton's cache keys")
        return 2
    recorded = json.loads(records_file.read_text())["records"]
    records = list({tc.jit_key(r): r for r in recorded}.values())  # one per key, so no two processes build it
    cache_dir = Path(os.environ["TRITON_CACHE_DIR"])
    jobs = max(1, min(jobs, len(records)))
    try:
        stub: str | None = str(tc._stub_libcuda(cache_dir.parent / "stub-libcuda"))
    except (OSError, subprocess.CalledProcessError) as exc:
        stub = None
        log(f"build-cache: no C launchers (the card builds them at first launch): {exc}")
    chunks = [(records[k::jobs], stub) for k in range(jobs)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        parts = list(pool.map(_compile_chunk, chunks))
    wall = time.perf_counter() - t0
    failed = [f for part in parts for f in part["failed"]]
    cpu_s = sum(part["seconds"] for part in parts)
    ident = tc.identity()
    built, hits = sum(p["built"] for p in parts), sum(p["hits"] for p in parts)
    log(f"build-cache: {len(recorded)} records, {len(records)} distinct JIT keys: {built} built, {hits} already "
        f"cached, {len(failed)} failed, {tc.launchers(cache_dir)} C launchers; "
        f"{wall:.0f} s on {jobs} processes ({cpu_s:.0f} process-s); Python {ident['python']}, "
        f"triton {ident['triton']}, ptxas {ident['ptxas']}")  # fmt: skip
    for f in failed:
        log(f"build-cache: failed: {f}")
    if failed:
        return 1
    extra = {"records": len(recorded), "jit_keys": len(records), "compile_seconds": round(wall, 1),
             "compile_process_seconds": round(cpu_s, 1)}  # fmt: skip
    try:
        meta = tc.pack(cache_dir, pack_file, ident, extra)
    except (ValueError, OSError) as exc:
        log(f"build-cache: error: {exc}")
        return 2
    log(f"build-cache: {meta['kernels']} kernels and {meta['launchers']} launchers, {meta['bytes'] / 2**20:.2f} MiB "
        f"in {pack_file}")  # fmt: skip
    if ident["python"].rsplit(".", 1)[0] != "3.12" or ident["triton"] != "3.6.0":
        log(
            "build-cache: note: the card runs Python 3.12 with triton 3.6.0; a cache built with another pair has "
            "another identity, and the run will not use it (--cache-python names a Python 3.12 with triton 3.6.0)"
        )
    return 0


def _package_site(tmp: Path) -> Path:
    """A folder for PYTHONPATH that maps the package as setuptools' package-dir does (fused_rnn.kernels =
    kernels/), for a Python that does not have it installed (what bench/gpu_run.sh falls back to)."""
    site = tmp / "site"
    (site / "fused_rnn").mkdir(parents=True)
    for f in (ROOT / "fused_rnn").iterdir():
        if f.name != "__pycache__":
            (site / "fused_rnn" / f.name).symlink_to(f)
    (site / "fused_rnn" / "kernels").symlink_to(ROOT / "kernels")
    return site


def build_cache(pack_file: Path, python: str, jobs: int) -> int:
    """Record the warm-up's launches here (interpreter), compile them for sm_90 with `python`, pack the cache."""
    with tempfile.TemporaryDirectory(prefix="fused_rnn-cache-") as tmp:
        tmp_p = Path(tmp)
        records = tmp_p / "records.json"
        env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
        r = subprocess.run([sys.executable, __file__, "--record-launches", str(records)], env=env)
        if r.returncode:
            log(f"build-cache: recording the launches failed (exit {r.returncode})")
            return 1
        build_dir = tmp_p / "triton-cache"
        build_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        path = os.pathsep.join([str(_package_site(tmp_p))] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(TRITON_CACHE_DIR=str(build_dir), PYTHONPATH=path, PYTHONUNBUFFERED="1")
        cmd = [python, __file__, "--compile-records", str(records), "--build-cache", str(pack_file)]
        r = subprocess.run(cmd + ["--jobs", str(jobs)], env=env)
        return 1 if r.returncode else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-run")
    ap.add_argument("--smoke", action="store_true", help="every phase on the CPU: interpreter, tiny shapes")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (420; smoke 280)")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--flashrnn-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--triton-cache", type=Path, default=None,
                    help="a prebuilt Triton cache to restore before the warm-up (default: .triton-cache/sm90.tar.xz "
                    "when it exists); with --build-cache, where to write it")  # fmt: skip
    ap.add_argument("--build-cache", nargs="?", const=True, default=None, metavar="FILE", type=Path,
                    help="no run: build the prebuilt sm_90 cache (FILE, else --triton-cache or its default) on this "
                    "machine, no GPU needed")  # fmt: skip
    ap.add_argument("--cache-python", default=sys.executable,
                    help="the Python that compiles the cache (it needs triton, not torch): one with Python 3.12 and "
                    "triton 3.6.0, as on the card")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes that compile the cache")
    ap.add_argument("--record-launches", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--compile-records", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs: expected a positive number of processes, got {args.jobs}")
    if args.record_launches:
        record_child(args.record_launches)
        return 0
    if args.compile_records:
        if not isinstance(args.build_cache, Path):
            ap.error("--compile-records: needs --build-cache FILE")
        return compile_child(args.compile_records, args.build_cache, args.jobs)
    if args.build_cache is not None:
        target = args.build_cache if isinstance(args.build_cache, Path) else args.triton_cache
        target = target or _triton_cache().DEFAULT_FILE
        if target.is_dir():
            ap.error(f"--build-cache: {target} is a folder; name the file to write (e.g. {target / 'sm90.tar.xz'})")
        if not shutil.which(args.cache_python) and not Path(args.cache_python).is_file():
            ap.error(f"--cache-python: {args.cache_python} not found")
        probe = [args.cache_python, "-c", "import triton; print(triton.__version__)"]
        try:
            found = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            ap.error(f"--cache-python: {args.cache_python} does not run: {exc}")
        if found.returncode:
            ap.error(f"--cache-python: {args.cache_python} cannot import triton (pip install triton==3.6.0 there)")
        return build_cache(target.resolve(), args.cache_python, args.jobs)
    if args.flashrnn_child:
        flashrnn_child(args.out)
        return 0
    if args.phase:
        return run_phase(args.phase, args.out, args.smoke, args.deadline or time.time() + 600)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if bad := [p for p in phases if p not in PHASES]:
        ap.error(f"--phases: unknown {bad}; choose from {','.join(PHASES)}")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out: {args.out} is a file, not a folder")
    budget = args.budget if args.budget is not None else (280.0 if args.smoke else 420.0)
    carried = args.triton_cache
    if carried is not None and not carried.is_file():
        ap.error(f"--triton-cache: {carried} is not a file")
    if carried is None and _triton_cache().DEFAULT_FILE.is_file() and not args.smoke:
        carried = _triton_cache().DEFAULT_FILE
    return drive(args.out, args.smoke, budget, phases, carried.resolve() if carried else None)


if __name__ == "__main__":
    raise SystemExit(main())
