"""bench/gpu_run.py: the one prepared GPU run, rehearsed on the CPU so that a bug fails here, not on the card.

Also the launch path it measures: step mode's direct launches and the once-per-config fit check.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import load_bench

import fused_rnn.launch as launch

ROOT = Path(__file__).resolve().parents[1]


gpu_run = load_bench("gpu_run")
gated = gpu_run.gpu_gated  # the LSTM / GRU phase (bench/gpu_gated.py), as gpu_run imports it
Point = gpu_run.Point


@pytest.mark.skipif(torch.cuda.is_available(), reason="the rehearsal is for CPU machines; the card runs the real one")
def test_smoke_run_writes_every_phase(tmp_path):
    """Every phase runs in the interpreter through the shell entry point; at most 7 files, all top-level."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "OUT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_run.sh"), str(out), "--smoke"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert set(files) <= set(gpu_run.FILES) and len(files) <= 7, files
    assert all((out / f).is_file() for f in files)
    assert {"log.txt", "points.jsonl", "results.json", "results.md", "results.png", "pytest.txt"} == set(files)
    recs = gpu_run.read_records(out)
    runs = {r["name"]: r["status"] for r in recs if r["phase"] == "run"}
    assert runs == dict.fromkeys(gpu_run.PHASES, "ok"), runs
    env_rec = next(r for r in recs if r["phase"] == "env")
    assert env_rec["smoke"] and env_rec["triton_identity"]["triton"]
    checks = [r for r in recs if r["phase"] == "correctness"]
    assert checks and all(r["ok"] for r in checks), [r for r in checks if not r["ok"]]
    # every check was held to a tolerance and measured every gradient, h0 included
    rnn_checks = [r for r in checks if r["mode"] != "generate"]
    assert all({"output", "h_n", "d input", "d h0"} <= set(r["errors"]) for r in rnn_checks)
    gen_checks = [r for r in checks if r["mode"] == "generate"]
    assert len(gen_checks) == len(gpu_run.generation_grid(True))
    assert all(r["gen_logp_max_rel_vs_float64"] <= 1e-4 for r in gen_checks)
    gen = [r for r in recs if r["phase"] == "generation"]
    assert len(gen) == len(gpu_run.generation_grid(True)) and all(r["one_launch_chars_per_s"] > 0 for r in gen)
    timed = [r for r in recs if r["phase"] == "timing" and "fwdbwd" in r]
    assert len({tuple(r["point"].values()) for r in timed}) == len(gpu_run.timing_grid(True))
    for r in timed:
        assert r["fwd"]["ms"] > 0 and r["fwdbwd"]["baseline_ms"] > 0 and r["cudnn_algorithm"]["forward"]
    skipped = {r["mode"]: r["skipped"] for r in recs if r["phase"] == "timing" and "skipped" in r}
    assert set(skipped) == {"persistent", "graph"}  # CUDA only, and said so
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["correctness"]["failed"] == []
    md = (out / "results.md").read_text()
    assert "| B | T | H | prec | mode |" in md and "SMOKE" in md
    _check_smoke_gated(recs, res, md)


def _check_smoke_gated(recs, res, md):
    """The LSTM / GRU phase: every point of its grid recorded; the ones the kernels take checked against float64
    and timed against nn; the ones they refuse (float64 here) recorded with triton_reason's words; the table rows
    and issue 23's targets in results.md and results.json."""
    from fused_rnn.gated_ops import triton_reason

    recs = [r for r in recs if r["phase"] == "gated"]
    planned = gated.grid(True)
    assert {(r["cell"], Point(**r["point"])) for r in recs} == set(planned)
    refused = 0
    for cell, p in planned:
        rs = [r for r in recs if r["cell"] == cell and Point(**r["point"]) == p]
        assert all(r["cudnn_algorithm"]["forward"] and r["precision"] and r["device"] for r in rs), rs
        with gpu_run.precision_mode(p.prec):
            reason = triton_reason(p.B, p.H, gpu_run.dtype_of(p.prec), torch.device("cpu"))
        if reason is not None:
            refused += 1
            assert [r["skipped"] for r in rs] == [f"no kernel: {reason}"]
            assert rs[0]["nn"]["fwd"]["ms"] > 0 and rs[0]["nn"]["fwdbwd"]["ms"] > 0  # nn timed, not dropped
            assert f"| {cell} | {p.B} | {p.T} | {p.H} | {p.prec} | - |" in md and f"no kernel: {reason}" in md
            continue
        by_mode = {r["mode"]: r for r in rs}
        assert set(by_mode) == set(gated.MODES) and "CUDA only" in by_mode["persistent"]["skipped"]
        r = by_mode["default"]
        names = {"output", "h_n", "d input", "d h0"} | ({"c_n", "d c0"} if cell == "lstm" else set())
        assert r["check"]["ok"] and names <= set(r["check"]["errors"]), r["check"]
        assert r["check"]["tolerance"] == gpu_run.tolerance(p.prec)
        assert r["fwd"]["ms"] > 0 and r["fwdbwd"]["baseline_ms"] > 0 and r["fwdbwd"]["speedup"] > 0
        assert r["fwd"]["p20"] <= r["fwd"]["ms"] <= r["fwd"]["p80"]
        assert f"| {cell} | {p.B} | {p.T} | {p.H} | {p.prec} | default |" in md
    assert refused, "the rehearsal must cover a point the kernels refuse"
    summ = res["summary"]["gated"]
    assert summ["failed"] == [] and summ["checked"] == summ["passed"] == len(planned) - refused
    assert summ["points"] == len(planned) and len(summ["no_kernel"]) == refused
    step, ratio = summ["targets"]
    assert (step["target"], step["status"]) == (gated.TARGET_TEXT, "not run")  # not in the smoke grid
    assert ratio["target"] == gated.RATIO_TEXT and ratio["status"] == "not met"  # a point without a kernel
    assert "## LSTM / GRU" in md and "## Targets (issue 23)" in md
    assert f"- {gated.TARGET_TEXT}: **not run**" in md and f"- {gated.RATIO_TEXT}: **not met**" in md


@pytest.mark.parametrize("smoke", [True, False])
@pytest.mark.parametrize("cuda", [True, False])
def test_every_timed_specialisation_is_checked(smoke, cuda):
    """The correctness phase covers each (B, H, precision, kernel mode) the timing phase launches."""
    timed = gpu_run.timed_specs(smoke, cuda)
    checked = gpu_run.checked_specs(smoke, cuda)
    assert timed and timed <= checked, timed - checked
    kinds = {"single", "step", "persistent", "graph", "generate"}
    extras = {m for _, m in gpu_run.correctness_items(smoke, cuda)} - kinds
    assert extras == {"packed_bidirectional"}  # ragged lengths and reverse, on top


def test_gated_grid_is_the_issue_grid():
    """B 16, T 1024: both cells at every precision over the single-program range, and at the issue's target
    H = 768 in bf16 (first: the time guard drops the tail) and fp16."""
    pts = gated.grid(False)
    assert pts[0] == gated.TARGET and {c for c, _ in pts[:2]} == {"lstm", "gru"}
    assert len(set(pts)) == len(pts) and {(p.B, p.T) for _, p in pts} == {(16, 1024)}
    for cell in ("lstm", "gru"):
        have = {(p.H, p.prec) for c, p in pts if c == cell}
        assert {(H, prec) for H in (32, 64) for prec in gpu_run.PRECISIONS} <= have
        assert {(768, "bf16"), (768, "fp16")} <= have


@pytest.mark.parametrize("smoke", [True, False])
def test_every_gated_point_is_warmed(smoke):
    """The warm-up (and so the carried cache's recording) runs every LSTM / GRU specialisation the phase launches."""
    warmed = {(m, p.spec) for p, m in gpu_run.warmup_items(smoke, cuda=True) if m in gated.CELLS}
    assert warmed == {(c, p.spec) for c, p in gated.grid(smoke)}
    assert {p.T for p, m in gpu_run.warmup_items(smoke, cuda=True) if m in gated.CELLS} == {2}


@pytest.mark.skipif(not launch.INTERPRETED, reason="recording runs under Triton's interpreter (CPU)")
def test_a_gated_warmup_item_launches_the_gated_kernels():
    """What the warm-up and the carried cache's recorder run for an LSTM / GRU point: the gated kernels, forward
    and backward (through gpu_run.exercise, as the pool and `--build-cache` call it)."""
    tc = gpu_run._triton_cache()

    def work():
        for p, cell in gated.warmup_items(True)[:2]:
            gpu_run.exercise(p, cell, torch.device("cpu"))
            yield

    kernels = {r["kernel"] for r in tc.record(work)}
    assert len(kernels) >= 2 and all(k.startswith("gated_") for k in kernels), kernels
    assert any("fwd" in k for k in kernels) and any("bwd" in k for k in kernels), kernels


def test_gated_points_follow_triton_reason(tmp_path, monkeypatch):
    """Whether a point runs is triton_reason's call and nothing else: refused, a point the kernels take is
    recorded as "no kernel: <reason>" with nn timed, its cuDNN algorithm and its precision, and no check."""
    import fused_rnn.gated_ops as gated_ops

    asked = []

    def refuse(B, H, dtype, device):
        asked.append((B, H, dtype))
        return f"refused by the test at H = {H}"

    monkeypatch.setattr(gated_ops, "triton_reason", refuse)
    pts = [("lstm", Point(16, 2, 16, "fp32")), ("gru", Point(16, 2, 32, "bf16"))]
    gated.phase(tmp_path, True, time.time() + 120, points=pts)
    recs = gpu_run.read_records(tmp_path)
    assert asked == [(16, 16, torch.float32), (16, 32, torch.bfloat16)]
    assert [r["skipped"] for r in recs] == ["no kernel: refused by the test at H = 16", "no kernel: refused by the "
                                            "test at H = 32"]  # fmt: skip
    for r, (cell, p) in zip(recs, pts, strict=True):
        assert r["cell"] == cell and r["point"] == asdict(p) and "check" not in r and r["nn"]["fwdbwd"]["ms"] > 0
        assert r["cudnn_algorithm"] == {
            "forward": gpu_run.cudnn_algorithm(16, 2, p.H, p.prec, True, cell=cell),
            "backward": gpu_run.cudnn_algorithm(16, 2, p.H, p.prec, False, cell=cell),
        }
        assert r["precision"] == gated.PRECISION_TEXT[p.prec] and r["baseline"] == f"nn.{cell.upper()} (CPU)"
    summ = gated.summary(recs)
    assert summ["no_kernel"] == ["LSTM B 16 T 2 H 16 fp32", "GRU B 16 T 2 H 32 bf16"] and summ["checked"] == 0
    assert summ["targets"][1]["status"] == "not run"  # nothing timed


def test_gated_time_guard_records_the_rest(tmp_path, monkeypatch):
    """Out of time, the remaining points are recorded with the reason instead of being run (or lost to the kill)."""
    ran = []

    def fake_point(cell, p, *args):
        ran.append((cell, p))
        time.sleep(0.8)
        return [{"phase": "gated", "cell": cell, "point": asdict(p), "mode": "-", "skipped": "fake"}]

    monkeypatch.setattr(gated, "run_point", fake_point)
    monkeypatch.setattr(gated, "FIRST_ESTIMATE", {True: 0.0, False: 0.0})
    monkeypatch.setattr(gated, "MARGIN", 0.5)
    pts = gated.grid(True)
    gated.phase(tmp_path, True, time.time() + 1.0, points=pts)  # room for the first point only
    recs = gpu_run.read_records(tmp_path)
    assert ran == pts[:1]
    assert [(r["cell"], Point(**r["point"])) for r in recs] == pts
    assert all(r["skipped"].startswith("out of time: ") for r in recs[1:]), recs
    summ = gated.summary(recs, pts)
    assert len(summ["not_run"]) == len(pts) and summ["targets"][1]["status"] == "not run"
    far = tmp_path / "far"  # the same points with time to spare: all of them run
    far.mkdir()
    ran.clear()
    gated.phase(far, True, time.time() + 60, points=pts[:2])
    assert ran == pts[:2] and all(r["skipped"] == "fake" for r in gpu_run.read_records(far))


def _gated_rec(cell, p, mode, fwd_us, fwdbwd_us, speedup, ok=True):
    """A timed LSTM / GRU record as run_point writes it, with the figures a test needs."""
    figs = {}
    for kind, us in (("fwd", fwd_us), ("fwdbwd", fwdbwd_us)):
        ms = us * p.T / 1e3
        figs[kind] = {"ms": ms, "p20": ms, "p80": ms, "us_per_step": us, "baseline_ms": ms * speedup,
                      "baseline_us_per_step": us * speedup, "speedup": speedup}  # fmt: skip
    chk = {"ok": ok, "failed": [] if ok else ["h_n"], "errors": {"h_n": 0.1 if not ok else 1e-6},
           "tolerance": {"fwd": 1e-2, "bwd": 1e-2}}  # fmt: skip
    return {"phase": "gated", "cell": cell, "point": asdict(p), "mode": mode, "check": chk, **figs,
            "cudnn_algorithm": {"forward": "STANDARD", "backward": "STANDARD"}}  # fmt: skip


def test_gated_targets_met_not_met_not_run():
    """Issue 23's two targets, each met / not met / not run with its figure, from the records."""
    cell, tp = gated.TARGET
    other = ("gru", Point(16, 1024, 64, "fp16"))
    plan = [gated.TARGET, other]

    def targets(recs, planned=plan):
        return [(t["status"], t["figure"]) for t in gated.summary(recs, planned)["targets"]]

    fast = [_gated_rec(cell, tp, "default", 2.5, 6.0, 1.5), _gated_rec(cell, tp, "persistent", 1.9, 5.0, 2.0),
            _gated_rec(*other, "default", 3.0, 9.0, 1.2)]  # fmt: skip
    (step, sfig), (ratio, rfig) = targets(fast)
    assert (step, ratio) == ("met", "met")
    assert "forward 1.90 µs per step (persistent), forward+backward 5.00 (persistent)" in sfig
    assert "lowest 1.20× (GRU B 16 T 1024 H 64 fp16" in rfig
    slow = [_gated_rec(cell, tp, "default", 2.5, 6.0, 1.5), _gated_rec(*other, "default", 3.0, 9.0, 0.9)]
    (step, sfig), (ratio, rfig) = targets(slow)
    assert (step, ratio) == ("not met", "not met") and "forward 2.50" in sfig and "lowest 0.90×" in rfig
    bad = [_gated_rec(cell, tp, "default", 1.0, 1.0, 9.0, ok=False), _gated_rec(*other, "default", 3.0, 9.0, 1.2)]
    (step, sfig), (ratio, rfig) = targets(bad)  # a wrong answer meets nothing, however fast
    assert step == "not met" and "check failed" in sfig and ratio == "not met" and "1 of 2 check failed" in rfig
    refused = {"phase": "gated", "cell": cell, "point": asdict(tp), "mode": "-", "no_kernel": "too big",
               "skipped": "no kernel: too big", "nn": {k: {"us_per_step": 4.0} for k in ("fwd", "fwdbwd")}}  # fmt: skip
    (step, sfig), (ratio, rfig) = targets([refused, fast[2]])
    assert step == "not run" and sfig == "no kernel: too big; nn.LSTM 4.00 / 4.00 µs per step"
    assert ratio == "not met" and "1 of 2 no kernel" in rfig  # not at every point
    (step, sfig), (ratio, rfig) = targets([fast[2]])  # the target's point never recorded: the phase ran out
    assert step == "not run" and ratio == "not run" and "1 of 2 not run" in rfig
    assert targets([])[0][0] == targets([])[1][0] == "not run"
    md = "\n".join(gated.markdown(fast, gated.summary(fast, plan)))
    assert f"- {gated.TARGET_TEXT}: **met**: forward 1.90" in md and f"- {gated.RATIO_TEXT}: **met**: lowest" in md
    assert md.count("| lstm | 16 | 1024 | 768 | bf16 |") == 2 and "| 1.50 |" in md


def test_full_grid_is_the_issue_grid():
    pts = gpu_run.timing_grid(False)
    main = {(p.H, p.prec) for p in pts if p.B == 16 and p.T == 1024}
    assert {(H, prec) for H in (128, 256, 768, 1024) for prec in ("fp32", "tf32", "bf16", "fp16")} <= main
    assert {(2048, "bf16"), (2048, "fp16")} <= main
    assert {p.B for p in pts if p.H == 768 and p.prec == "bf16" and p.T == 1024} == {1, 4, 16, 64, 256}
    assert {p.T for p in pts if p.H == 768 and p.prec == "bf16" and p.B == 16} == {64, 256, 1024, 2048}
    modes = gpu_run.kernel_modes(768, cuda=True)
    assert set(modes) == {"step", "persistent", "graph"} and all(v is None for v in modes.values())


@pytest.mark.parametrize(
    "args, forward, expected",
    [
        ((16, 1024, 384, "fp32"), True, "PERSIST_STATIC_SMALL_H"),
        ((16, 1024, 385, "bf16"), True, "STANDARD"),
        ((16, 1024, 256, "tf32"), False, "PERSIST_STATIC_SMALL_H"),
        ((16, 1024, 257, "fp32"), False, "STANDARD"),
        ((16, 1024, 768, "fp16"), True, "PERSIST_STATIC"),
        ((16, 1024, 1024, "fp16"), False, "PERSIST_STATIC"),
        ((16, 1024, 2048, "fp16"), True, "STANDARD"),  # H > 1024
        ((12, 1024, 768, "fp16"), True, "STANDARD"),  # B % 8
        ((256, 1024, 768, "fp16"), True, "STANDARD"),  # B > 128
        ((96, 1024, 896, "fp16"), True, "STANDARD"),  # B >= 96 and H >= 896
        ((96, 1024, 768, "fp16"), True, "PERSIST_STATIC"),
        ((16, 1024, 640, "fp16"), True, "PERSIST_STATIC"),
        ((16, 1024, 700, "fp16"), True, "STANDARD"),  # H % 128
        ((16, 1024, 768, "bf16"), True, "STANDARD"),  # persist static is fp16 only
    ],
)
def test_cudnn_algorithm_follows_get_algo(args, forward, expected):
    assert gpu_run.cudnn_algorithm(*args, forward) == expected


def test_cudnn_algorithm_for_lstm_and_gru():
    """LSTM / GRU: persistent only to H 192 forward, 128 backward; fp16 PERSIST_STATIC for LSTM alone; never a GRU
    on sm_8x+; never with projections or packed input."""
    algo = gpu_run.cudnn_algorithm
    assert algo(16, 64, 192, "fp32", True, cell="lstm") == "PERSIST_STATIC_SMALL_H"
    assert algo(16, 64, 256, "fp32", True, cell="lstm") == "STANDARD"
    assert algo(16, 64, 128, "fp32", False, cell="lstm") == "PERSIST_STATIC_SMALL_H"
    assert algo(16, 64, 192, "fp32", False, cell="lstm") == "STANDARD"
    assert algo(16, 64, 768, "fp16", True, cell="lstm") == "PERSIST_STATIC"
    assert algo(16, 64, 128, "fp32", True, cell="lstm", proj=True) == "STANDARD"
    assert algo(16, 64, 64, "fp32", True, cell="gru") == "STANDARD"
    assert algo(16, 64, 768, "fp16", True, cell="gru") == "STANDARD"
    assert algo(16, 64, 64, "fp32", True, cell="gru", capability=(7, 0)) == "PERSIST_STATIC_SMALL_H"
    assert algo(16, 64, 64, "fp32", True, cell="lstm", packed=True) == "STANDARD"


def test_cudnn_algorithm_packed_layers_and_cards():
    assert gpu_run.cudnn_algorithm(16, 64, 128, "fp32", True, packed=True) == "STANDARD"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, layers=2) == "STANDARD"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, bidirectional=True) == "STANDARD"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, input_size=100) == "STANDARD"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, capability=(8, 6), sm_count=84) == "STANDARD"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, capability=(8, 0), sm_count=108) == "PERSIST_STATIC"
    assert gpu_run.cudnn_algorithm(16, 64, 512, "fp16", True, capability=(8, 0), sm_count=56) == "STANDARD"


def test_report_keeps_records_cut_by_a_kill(tmp_path):
    """A line cut mid-write (a killed phase) is dropped; every record before it is kept."""
    gpu_run.append(tmp_path, {"phase": "correctness", "ok": True, "point": {}, "mode": "step"})
    with open(tmp_path / "points.jsonl", "a") as f:
        f.write('{"phase": "timing", "poi')
    res = gpu_run.report(tmp_path)
    assert res["summary"]["correctness"] == {"checked": 1, "passed": 1, "failed": []}
    assert (tmp_path / "results.md").exists()
    assert "## Targets (issue 23)" in (tmp_path / "results.md").read_text()  # not run, and said so
    assert [t["status"] for t in res["summary"]["gated"]["targets"]] == ["not run", "not run"]


def test_bad_options_are_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, word in ((["--phases", "env,nope"], "--phases"), (["--out", str(afile)], "--out")):
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_run.py"), *args], capture_output=True, text=True)
        assert r.returncode == 2 and word in r.stderr, r.stderr


# --------------------------------------------------------------------------- the launch path


class _FakeCompiled:
    packed_metadata = object()
    function = 1234

    def __init__(self):
        self.calls = []

    def run(self, *args):
        self.calls.append(args)


class _Param:
    def __init__(self, default):
        self.default = default


class _FakeKernel:
    """Stands in for a JITFunction: records JIT launches and returns one compiled kernel."""

    arg_names = ["x", "i", "T", "BB", "FLAG"]
    params = [_Param(None), _Param(None), _Param(None), _Param(None), _Param(True)]

    def __init__(self):
        self.jit_calls = []
        self.compiled = _FakeCompiled()

    def __getitem__(self, grid):
        def launch_(*args, **kwargs):
            self.jit_calls.append((grid, args, kwargs))
            return self.compiled

        return launch_


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the direct path reads the current CUDA stream")
def test_step_launches_go_through_the_compiled_kernel_cuda():
    _check_direct_steps()


def test_step_launches_go_through_the_compiled_kernel(monkeypatch):
    """The first step goes through the JIT; every other step calls the compiled kernel with the JIT's argument
    order (constexprs and defaults included) and only the step changed."""

    class _Stream:
        cuda_stream = 77

    monkeypatch.setattr(launch.torch.cuda, "current_stream", lambda: _Stream())
    _check_direct_steps()


def _check_direct_steps():
    if launch.K is None:
        pytest.skip("triton is missing")
    saved = launch.INTERPRETED
    launch.INTERPRETED = False
    try:
        k = _FakeKernel()
        x = object()
        launch._launch_steps(k, (3, 5), (x, 99, 7), {"BB": 16, "num_warps": 4}, steps=4)
    finally:
        launch.INTERPRETED = saved
    assert k.jit_calls == [((3, 5), (x, 0, 7), {"BB": 16, "num_warps": 4})]
    steps = [c[-4] for c in k.compiled.calls]
    assert steps == [1, 2, 3]
    for c in k.compiled.calls:
        assert c[:3] == (3, 5, 1) and c[4] == 1234 and c[5] is _FakeCompiled.packed_metadata
        assert c[-5] is x and c[-3:] == (7, 16, True)  # T, the constexpr BB and FLAG's default


def test_step_launches_in_the_interpreter_use_the_jit_each_time():
    k = _FakeKernel()
    saved = launch.INTERPRETED
    launch.INTERPRETED = True
    try:
        launch._launch_steps(k, (1, 2), ("x", 0, 3), {}, steps=3)
    finally:
        launch.INTERPRETED = saved
    assert [c[1][1] for c in k.jit_calls] == [0, 1, 2] and k.compiled.calls == []


def test_step_arguments_are_not_specialised():
    """The direct launches rely on it: every step must run the very binary the first one compiled."""
    import inspect

    for kernel in (launch.K.split_recurrent_fwd_step_kernel, launch.K.split_recurrent_bwd_step_kernel):
        src = inspect.getsource(kernel.fn)
        assert 'do_not_specialize=["i", "T"]' in src, kernel
        assert "i" in kernel.arg_names


def test_persistent_fit_check_runs_once_per_config(monkeypatch):
    calls = []

    def blocks(kernel, args, kwargs, grid):
        calls.append(grid)
        return 2

    monkeypatch.setattr(launch, "_blocks_per_sm", blocks)
    monkeypatch.setattr(launch, "_BLOCKS_PER_SM", {})
    monkeypatch.setattr(launch, "device_key", lambda device: ((9, 0), 132))

    class _K:
        class fn:
            __name__ = "k"

    dev = torch.device("cuda", 0)
    kw = {"BB": 16, "num_warps": 8}
    assert all(launch._persistent_fits(_K, (), kw, (4, 48), dev) for _ in range(5))
    assert not launch._persistent_fits(_K, (), kw, (6, 48), dev)  # 288 programs > 2 * 132
    assert calls == [(4, 48)]
    launch._persistent_fits(_K, (), dict(kw, num_warps=4), (4, 48), dev)  # another config: asked again
    assert len(calls) == 2


def test_a_launch_hook_keeps_every_step_on_the_jit(monkeypatch):
    """A profiler's launch hook must see every launch: then no step skips the JIT."""
    import triton

    hook = triton.knobs.runtime.launch_enter_hook
    if not hasattr(hook, "add"):
        pytest.skip("this Triton has no hook chain")
    monkeypatch.setattr(launch, "INTERPRETED", False)
    seen = []
    hook.add(seen.append)
    try:
        k = _FakeKernel()
        launch._launch_steps(k, (1, 1), ("x", 0, 3), {}, steps=3)
    finally:
        hook.remove(seen.append)
    assert len(k.jit_calls) == 3 and k.compiled.calls == []
