"""Phase `gated` of bench/gpu_run.py (issue 23, part 4): FusedLSTM / FusedGRU (backend "triton") against
nn.LSTM / nn.GRU with the same weights, at matched precision. gpu_run.py is the entry point; this module holds
the phase, its grid, its warm-up items, its summary with the issue's targets, and its part of results.md.

Per point (cell, B, T, H, precision), in the grid's order (the issue's target first):

  - whether the kernels take it is `fused_rnn.gated_ops.triton_reason` under the point's precision, and
    nothing else (no H limit here: a kernel mode that raises the kernels' limit shows up as points that run);
    a point they refuse is recorded as "no kernel: <reason>", with nn's own times, never dropped;
  - per kernel mode ("default": the launch the library picks; "persistent": FUSED_RNN_GRID_BARRIER=1, the
    split kernels' grid barrier, CUDA only, where the point runs split), a check at T = min(T, 64) against
    float64 nn.LSTM / nn.GRU (output, h_n, c_n and every gradient, h0 / c0 included, NaN-poisoned outputs, the
    suite's tolerances; persistent twice, bitwise equal), then forward and forward + backward timed
    (gpu_common.bench_ms: do_bench medians with p20 / p80) against nn on the same inputs in the same process;
  - cuDNN's algorithm forward and backward (gpu_common.cudnn_algorithm with cell=).

A time guard: before each point, when what is left of the phase is under the longest point so far (the first
estimate before any) plus a margin, that point and the rest are recorded as "out of time", not run.

Card budget (B 16, T 1024; H100 / H200; estimated, no GPU has run it yet):
  - compile: none in this phase when the warm-up ran: its pool exercises every point here at T = 2 (T is not
    specialised), 20 items on top of the 71 Elman ones, a forward and a backward kernel each (and the
    grid-barrier pair where a point runs split), 40-60 kernels, about 10 s more of the warm-up's wall time
    over 16 processes, 0 with the carried cache (which records the same items);
  - this phase: process start with CUDA, cuBLAS and cuDNN 6-8 s; a single-program point (H 32, 64) about
    1.5 s (check 0.3 s, four do_bench calls of 0.2-0.4 s), a split point (H 768, two modes) about 2.5-3 s,
    a refused one 0.6 s (nn alone): 16 + 4 points, 35-50 s, under its 60 s limit (TIMEOUTS["gated"]);
  - taken from the run's last phase (tests, which gets what the budget leaves), so the 7 minutes hold.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from gpu_common import (
    PRECISION_TEXT,
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
    rel_err,
    timed_fns,
    tolerance,
)

CELLS = {"lstm": "LSTM", "gru": "GRU"}
#: the kernel modes timed per point: the library's default launch, then the grid-barrier one (CUDA only)
MODES = ("default", "persistent")
#: issue 23's per-step target: B 16, T 1024, H 768, bf16, LSTM; forward / forward + backward, µs per step
TARGET = ("lstm", Point(16, 1024, 768, "bf16"))
TARGET_US = {"fwd": 1.96, "fwdbwd": 5.07}
TARGET_TEXT = "B 16, T 1024, H 768, bf16: LSTM ≤ 1.96 µs per step forward and ≤ 5.07 forward+backward"
RATIO_TEXT = "≥ 1× nn.LSTM / nn.GRU at every point"
#: the time guard: seconds a point may take before one has been measured (card, interpreter), and a margin
FIRST_ESTIMATE = {False: 4.0, True: 10.0}
MARGIN = 3.0
CHECK_T = 64


def grid(smoke: bool) -> list[tuple[str, Point]]:
    """(cell, point) in the order they run: the target first, the single-program range, then the rest."""
    if smoke:  # tiny, in the interpreter; float64 is a point the kernels refuse (triton_reason says why)
        return [("lstm", Point(16, 3, 16, "fp32")), ("gru", Point(16, 3, 16, "fp32")),
                ("lstm", Point(16, 2, 32, "bf16")), ("gru", Point(16, 2, 16, "fp64"))]  # fmt: skip
    pts = [(cell, Point(16, 1024, 768, "bf16")) for cell in CELLS]
    pts += [(cell, Point(16, 1024, H, prec)) for prec in ("bf16", "fp16", "tf32", "fp32") for H in (64, 32)
            for cell in CELLS]  # fmt: skip
    pts += [(cell, Point(16, 1024, 768, "fp16")) for cell in CELLS]
    return pts


def warmup_items(smoke: bool) -> list[tuple[Point, str]]:
    """The warm-up's items for this phase: each (cell, B, H, precision) at T = 2, named by its cell;
    gpu_run.exercise hands them to `exercise`."""
    seen: dict[tuple, tuple[Point, str]] = {}
    for cell, p in grid(smoke):
        seen.setdefault((cell, p.spec), (Point(p.B, 2, p.H, p.prec), cell))
    return list(seen.values())


def _reason(p: Point, dev) -> str | None:
    """Whether the kernels take the point: triton_reason under the point's precision (it reads TF32's setting)."""
    from fused_rnn import gated_ops

    return gated_ops.triton_reason(p.B, p.H, dtype_of(p.prec), dev)


def _fused(cell: str, H: int, prec: str, dev):
    import fused_rnn

    cls = fused_rnn.FusedLSTM if cell == "lstm" else fused_rnn.FusedGRU
    return cls(H, H, backend="triton", device=dev, dtype=dtype_of(prec))


def _nn(cell: str, H: int, dev, dtype):
    import torch

    return getattr(torch.nn, CELLS[cell])(H, H, device=dev, dtype=dtype)


def exercise(p: Point, cell: str, dev) -> None:
    """A warm-up item, per mode where the launcher would try it (the grid barrier: on CUDA, and under
    bench/triton_cache.py's recorder): forward and backward at p.T as `check` runs them (h0 / c0 given, gradients
    into output and final states), then as the timing does (no state, a gradient into the output only).
    Nothing where the kernels refuse the point."""
    import torch

    import fused_rnn.launch as launch

    dt = dtype_of(p.prec)
    n_states = 2 if cell == "lstm" else 1
    with precision_mode(p.prec):
        if _reason(p, dev) is not None:
            return
        fused = _fused(cell, p.H, p.prec, dev)
        for mode in MODES:
            with kernel_mode(mode):
                if mode == "persistent" and not launch._persistent_wanted(dev):
                    continue
                x = torch.randn(p.T, p.B, p.H, device=dev, dtype=dt, requires_grad=True)
                states = [torch.randn(1, p.B, p.H, device=dev, dtype=dt, requires_grad=True) for _ in range(n_states)]
                out, hx = fused(x, tuple(states) if cell == "lstm" else states[0])
                finals = list(hx) if cell == "lstm" else [hx]
                torch.autograd.backward([out, *finals], [torch.randn_like(t) for t in (out, *finals)])
                out, _ = fused(x)
                out.backward(torch.randn_like(out))


# --------------------------------------------------------------------------- the check


def check(cell: str, p: Point, mode: str, dev) -> tuple[dict | None, list[bool]]:
    """The fused module against nn in float64 at p (NaN-poisoned outputs): the check's record, and per
    grid-barrier attempt whether it ran. Mode persistent where no grid-barrier kernel was tried (the point
    runs one program): (None, []), nothing compared."""
    import torch

    import fused_rnn.launch as launch

    lstm = cell == "lstm"
    dtype = dtype_of(p.prec)
    fused = _fused(cell, p.H, p.prec, dev)
    ref = _nn(cell, p.H, dev, torch.float64)
    ref.load_state_dict({k: v.double() for k, v in fused.state_dict().items()})
    x = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    states = [(torch.randn(1, p.B, p.H, device=dev) * 0.5).to(dtype) for _ in range(1 + lstm)]
    gout = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    gstates = [torch.randn(1, p.B, p.H, device=dev).to(dtype) for _ in range(1 + lstm)]

    def run(module, dt):
        for w in module.parameters():
            w.grad = None
        xx = x.to(dt, copy=True).requires_grad_()
        ss = [s.to(dt, copy=True).requires_grad_() for s in states]
        o, hx = module(xx, tuple(ss) if lstm else ss[0])
        finals = list(hx) if lstm else [hx]
        torch.autograd.backward([o, *finals], [g.to(dt) for g in (gout, *gstates)])
        return [o, *finals, xx.grad, *(s.grad for s in ss), *(w.grad for w in module.parameters())]

    names = ["output", "h_n"] + ["c_n"] * lstm + ["d input", "d h0"] + ["d c0"] * lstm
    names += [f"d {n}" for n, _ in fused.named_parameters()]
    launch.POISON = True
    try:
        with kernel_mode(mode), persistent_probe() as ran:
            got = run(fused, dtype)
            if mode == "persistent" and not ran:
                return None, []
            if mode == "persistent":
                again = run(fused, dtype)
                repeat = all(torch.equal(a, b) for a, b in zip(got, again, strict=True))
    finally:
        launch.POISON = False
    want = run(ref, torch.float64)
    tol = tolerance(p.prec)
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want, strict=True)}
    bad = [n for n, e in errs.items() if not e <= tol["fwd" if n in ("output", "h_n", "c_n") else "bwd"]]
    rec = {"point": asdict(p), "errors": {k: float(f"{v:.3e}") for k, v in errs.items()}, "tolerance": tol}
    if mode == "persistent":
        rec["bitwise_repeat"] = repeat
        bad += [] if repeat else ["persistent run not bitwise repeatable"]
    rec.update(ok=not bad, failed=bad)
    return rec, list(ran)


# --------------------------------------------------------------------------- one point


def _figures(q: tuple[float, float, float], T: int) -> dict:
    ms, p20, p80 = q
    return {"ms": ms, "p20": p20, "p80": p80, "us_per_step": ms * 1e3 / T}


def run_point(cell: str, p: Point, dev, smoke: bool, cap: tuple[int, int], sms: int) -> list[dict]:
    """The point's records: one per kernel mode, or one "no kernel: <reason>" record with nn's times."""
    import torch

    cuda = dev.type == "cuda"
    dtype = dtype_of(p.prec)
    base = {
        "phase": "gated", "cell": cell, "point": asdict(p), "precision": PRECISION_TEXT[p.prec],
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu (interpreter)",
        "baseline": f"nn.{CELLS[cell]} ({'cuDNN' if cuda else 'CPU'})",
        "cudnn_algorithm": {
            "forward": cudnn_algorithm(p.B, p.T, p.H, p.prec, True, capability=cap, sm_count=sms, cell=cell),
            "backward": cudnn_algorithm(p.B, p.T, p.H, p.prec, False, capability=cap, sm_count=sms, cell=cell),
        },
    }  # fmt: skip
    x = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    gout = torch.randn(p.T, p.B, p.H, device=dev).to(dtype)
    with precision_mode(p.prec):
        reason = _reason(p, dev)
        ref = _nn(cell, p.H, dev, dtype)
        fused = None
        if reason is None:
            fused = _fused(cell, p.H, p.prec, dev)
            ref.load_state_dict(fused.state_dict())
        fwd, fwdbwd = timed_fns(ref, x, gout, graph=False)
        nn_q = {"fwd": bench_ms(fwd, smoke), "fwdbwd": bench_ms(fwdbwd, smoke)}
        if reason is not None:
            nn_figs = {k: _figures(q, p.T) for k, q in nn_q.items()}
            return [dict(base, mode="-", skipped=f"no kernel: {reason}", no_kernel=reason, nn=nn_figs)]
        recs = []
        for mode in MODES:
            rec = dict(base, mode=mode)
            if mode == "persistent" and not cuda:
                recs.append(dict(rec, skipped="CUDA only: a spin barrier deadlocks the interpreter"))
                continue
            try:
                chk, ran = check(cell, Point(p.B, min(p.T, CHECK_T), p.H, p.prec), mode, dev)
                if chk is None:
                    recs.append(dict(rec, skipped="no grid-barrier kernel at this point (it runs one program)"))
                    continue
                rec["check"] = chk
                if mode == "persistent" and not all(ran):
                    recs.append(dict(rec, skipped="the grid is not co-resident on this card: step mode runs"))
                    continue
                with kernel_mode(mode):
                    fwd, fwdbwd = timed_fns(fused, x, gout, graph=False)
                    ours = {"fwd": bench_ms(fwd, smoke), "fwdbwd": bench_ms(fwdbwd, smoke)}
            except Exception as exc:  # noqa: BLE001 - a mode that cannot run is a result
                recs.append(dict(rec, skipped=f"{type(exc).__name__}: {exc}"))
                continue
            for kind, q in ours.items():
                b = nn_q[kind]
                rec[kind] = dict(_figures(q, p.T), baseline_ms=b[0], baseline_p20=b[1], baseline_p80=b[2],
                                 baseline_us_per_step=b[0] * 1e3 / p.T, speedup=b[0] / q[0])  # fmt: skip
            recs.append(rec)
    return recs


def phase(out: Path, smoke: bool, deadline: float, points: list[tuple[str, Point]] | None = None) -> None:
    """Every point of the grid (or `points`) in order, each record appended as made; stops at `deadline` (the
    phase's own end) with the remaining points recorded as out of time."""
    import torch

    dev = device()
    cuda = dev.type == "cuda"
    cap, sms = (9, 0), 132  # the interpreter: sm_90's table, an H200's SMs
    if cuda:
        cap, sms = torch.cuda.get_device_capability(), torch.cuda.get_device_properties(0).multi_processor_count
    pts = grid(smoke) if points is None else points
    took: list[float] = []
    for i, (cell, p) in enumerate(pts):
        left, need = deadline - time.time(), (max(took) if took else FIRST_ESTIMATE[smoke]) + MARGIN
        if left < need:
            why = f"out of time: {max(left, 0):.0f} s left in the phase, a point takes up to {need:.0f} s"
            for c, q in pts[i:]:
                append(out, {"phase": "gated", "cell": c, "point": asdict(q), "mode": "-", "skipped": why})
            log(f"gated: {len(pts) - i} of {len(pts)} points not run: {why}")
            return
        t0 = time.perf_counter()
        try:
            recs = run_point(cell, p, dev, smoke, cap, sms)
        except Exception as exc:  # noqa: BLE001 - a point that fails is a result
            recs = [{"phase": "gated", "cell": cell, "point": asdict(p), "mode": "-",
                     "error": f"{type(exc).__name__}: {exc}"}]  # fmt: skip
        took.append(time.perf_counter() - t0)
        for r in recs:
            append(out, dict(r, seconds=round(took[-1], 2)))
        log(f"gated {i + 1}/{len(pts)} {cell} {p}: {_outcome(recs)}, {took[-1]:.1f} s")
        if cuda:
            torch.cuda.empty_cache()


def _outcome(recs: list[dict]) -> str:
    timed = [r for r in recs if "fwdbwd" in r]
    if timed:
        best = max(timed, key=lambda r: r["fwdbwd"]["speedup"])
        failed = [f"{r['mode']}: {r['check']['failed']}" for r in recs if not r.get("check", {}).get("ok", True)]
        return (f"fwd+bwd {best['fwdbwd']['speedup']:.2f}x nn ({best['mode']})"
                + (f", CHECK FAILED {failed}" if failed else ""))  # fmt: skip
    return "; ".join(str(r.get("skipped") or r.get("error")) for r in recs)


# --------------------------------------------------------------------------- summary, targets, markdown


def _key(cell: str, p: dict) -> tuple:
    return (cell, p["B"], p["T"], p["H"], p["prec"])


def _label(key: tuple) -> str:
    return f"{key[0].upper()} B {key[1]} T {key[2]} H {key[3]} {key[4]}"


def _points(recs: list[dict], planned: list[tuple[str, Point]] | None) -> dict[tuple, dict]:
    """Per point: its records, status (timed / no kernel / check failed / not run) and best figures."""
    keys = [_key(c, asdict(p)) for c, p in planned or []]
    keys += [k for k in (_key(r["cell"], r["point"]) for r in recs) if k not in keys]
    info = {}
    for key in keys:
        rs = [r for r in recs if _key(r["cell"], r["point"]) == key]
        good = [r for r in rs if "fwdbwd" in r and r["check"]["ok"]]
        nk = next((r["no_kernel"] for r in rs if "no_kernel" in r), None)
        d = {"records": rs, "no_kernel": nk}
        if good:
            d["status"] = "timed"
            for kind in ("fwd", "fwdbwd"):
                best = min(good, key=lambda r, k=kind: r[k]["ms"])
                d[kind] = dict(best[kind], mode=best["mode"])
        elif nk is not None:
            d["status"] = "no kernel"
        elif any("fwdbwd" in r for r in rs):
            d["status"] = "check failed"
        else:
            why = next((r.get("skipped") or r.get("error") for r in rs if r.get("skipped") or r.get("error")), None)
            d["status"] = "not run"
            d["why"] = why or "the phase ended before it (or did not run)"
        info[key] = d
    return info


def summary(recs: list[dict], planned: list[tuple[str, Point]] | None = None) -> dict:
    """The phase in figures, and issue 23's two targets each met / not met / not run with its figure.
    `planned`: the grid the run meant to measure (its points without a record count as not run)."""
    info = _points(recs, planned)
    checks = [r for r in recs if "check" in r]
    failed = [f"{_label(_key(r['cell'], r['point']))} {r['mode']}: {r['check']['failed']}" for r in checks
              if not r["check"]["ok"]]  # fmt: skip
    statuses = ("timed", "no kernel", "check failed", "not run")
    by = {s: [k for k, d in info.items() if d["status"] == s] for s in statuses}
    return {
        "points": len(info), "timed": len(by["timed"]), "no_kernel": [_label(k) for k in by["no kernel"]],
        "not_run": [_label(k) for k in by["not run"]], "checked": len(checks), "passed": len(checks) - len(failed),
        "failed": failed, "targets": [_target_step(info), _target_ratio(info, by)],
    }  # fmt: skip


def _target_step(info: dict[tuple, dict]) -> dict:
    cell, p = TARGET
    d = info.get(_key(cell, asdict(p)))
    out = {"target": TARGET_TEXT}
    if d is None:
        return dict(out, status="not run", figure="the point is not in this run's grid")
    nn_ = next((r["nn"] for r in d["records"] if "nn" in r), None)
    if d["status"] == "no kernel":
        figure = f"no kernel: {d['no_kernel']}"
        if nn_:
            figure += f"; nn.LSTM {nn_['fwd']['us_per_step']:.2f} / {nn_['fwdbwd']['us_per_step']:.2f} µs per step"
        return dict(out, status="not run", figure=figure)
    if d["status"] == "not run":
        return dict(out, status="not run", figure=d["why"])
    if d["status"] == "check failed":
        bad = [r["check"]["failed"] for r in d["records"] if "check" in r and not r["check"]["ok"]]
        return dict(out, status="not met", figure=f"the check failed: {bad}")
    f, b = d["fwd"], d["fwdbwd"]
    met = f["us_per_step"] <= TARGET_US["fwd"] and b["us_per_step"] <= TARGET_US["fwdbwd"]
    figure = (f"forward {f['us_per_step']:.2f} µs per step ({f['mode']}), forward+backward {b['us_per_step']:.2f} "
              f"({b['mode']}); nn.LSTM {f['baseline_us_per_step']:.2f} / {b['baseline_us_per_step']:.2f}")  # fmt: skip
    return dict(out, status="met" if met else "not met", figure=figure, fwd_us=f["us_per_step"],
                fwdbwd_us=b["us_per_step"])  # fmt: skip


def _target_ratio(info: dict[tuple, dict], by: dict[str, list]) -> dict:
    out = {"target": RATIO_TEXT}
    n = len(info)
    lows = [(min(info[k]["fwd"]["speedup"], info[k]["fwdbwd"]["speedup"]), k) for k in by["timed"]]
    rest = [f"{len(by[s])} of {n} {s}" for s in ("no kernel", "check failed", "not run") if by[s]]
    if not lows:
        return dict(out, status="not run", figure="no point timed" + (f" ({', '.join(rest)})" if rest else ""))
    low, where = min(lows)
    figure = f"lowest {low:.2f}× ({_label(where)}, the worse of forward and forward+backward) over {len(lows)} timed"
    figure += f"; {', '.join(rest)}" if rest else ""
    if low < 1 or by["no kernel"] or by["check failed"]:
        status = "not met"
    else:
        status = "not run" if by["not run"] else "met"
    return dict(out, status=status, figure=figure, lowest=low)


def markdown(recs: list[dict], summ: dict) -> list[str]:
    """results.md's LSTM / GRU section: the correctness line, one row per (point, mode), then the targets."""
    lines = ["", '## LSTM / GRU: FusedLSTM / FusedGRU (backend "triton") against nn.LSTM / nn.GRU', ""]
    if not recs:
        lines.append("Not run (the phase `gated` left no record).")
    else:
        lines.append(f"Correctness: {summ['passed']} of {summ['checked']} checks passed (float64 nn, the suite's "
                     "tolerances, NaN-poisoned outputs)." + (" Failed: " + "; ".join(summ["failed"])
                     if summ["failed"] else ""))  # fmt: skip
        lines += ["", "Same weights and inputs, matched precision (fp32: IEEE everywhere; tf32: TF32 everywhere); "
                  "× = nn time / ours; µs per step = median / T (p20–p80); mode default: the library's launch, "
                  "persistent: the grid barrier. Device and versions: the header.", "",
                  "| cell | B | T | H | prec | mode | cuDNN fwd / bwd | check (worst err / tol) | fwd µs/step | "
                  "nn fwd | fwd × | fwd+bwd µs/step | nn fwd+bwd | fwd+bwd × |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in recs:
        p, a = r["point"], r.get("cudnn_algorithm", {})
        row = (f"| {r['cell']} | {p['B']} | {p['T']} | {p['H']} | {p['prec']} | {r.get('mode', '-')} | "
               f"{a.get('forward', '-')} / {a.get('backward', '-')} | {_check_cell(r.get('check'))} |")  # fmt: skip
        if "fwd" in r:
            f, b = r["fwd"], r["fwdbwd"]
            row += (f" {_us(f, p['T'])} | {f['baseline_us_per_step']:.2f} | {f['speedup']:.2f} | {_us(b, p['T'])} |"
                    f" {b['baseline_us_per_step']:.2f} | {b['speedup']:.2f} |")  # fmt: skip
        elif "nn" in r:
            nn_ = r["nn"]
            row += f" {r['skipped']} | {_us(nn_['fwd'], p['T'])} | | | {_us(nn_['fwdbwd'], p['T'])} | |"
        else:
            row += f" {r.get('skipped') or r.get('error')} | | | | | |"
        lines.append(row)
    lines += ["", "## Targets (issue 23)", ""]
    lines += [f"- {t['target']}: **{t['status']}**: {t['figure']}" for t in summ["targets"]]
    return lines


def _us(f: dict, T: int) -> str:
    return f"{f['us_per_step']:.2f} ({f['p20'] * 1e3 / T:.2f}–{f['p80'] * 1e3 / T:.2f})"


def _check_cell(chk: dict | None) -> str:
    """The check's verdict and its worst error against that error's tolerance."""
    if not chk:
        return "-"

    def tol(name: str) -> float:
        return chk["tolerance"]["bwd" if name.startswith("d ") else "fwd"]

    name = max(chk["errors"], key=lambda n: chk["errors"][n] / tol(n))
    verdict = "ok" if chk["ok"] else "FAIL " + ", ".join(chk["failed"])
    return f"{verdict}: {name} {chk['errors'][name]:.1e} / {tol(name):.1e}"
