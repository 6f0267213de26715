"""The benchmark's quick mode runs, checks every fused point against nn.RNN, and writes its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    """The torch path on CPU (faster than Triton's interpreter), one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_quick_benchmark(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--device", "cpu", "--out", str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".md", ".png"]
    res = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {"device", "torch", "triton", "cudnn", "date"} <= set(res["info"])
    block = res["precisions"]["ieee"]
    assert len(block["recurrence"]) == len(res["grid"]["B"]) * len(res["grid"]["T"]) * len(res["grid"]["H"])
    assert len(block["model"]) == len(block["recurrence"])
    grid = res["grid"]
    assert len(block["generation"]) == len(grid["gen_B"]) * len(grid["gen_H"]) * len(grid["gen_N"])
    for r in block["recurrence"]:
        assert r["max_rel_vs_nn_rnn"] < 1e-5 and r["fused_fwd_ms"] > 0
    for r in block["generation"]:  # three ways to sample, checked against float64, in characters per second
        assert r["ok"] and r["gen_logp_max_rel_vs_float64"] < 1e-4 and r["path"] in ("torch", "one_launch", "steps")
        assert all(r[f"{k}_chars_per_s"] > 0 for k in ("one_launch", "per_step_loop", "char_loop"))
    for cell in ("rnn", "lstm", "gru"):
        _check_rnn_case(res, out.stdout, cell)
    assert block["failed_points"] == 0
    assert "Geometric mean" in out.stdout


def _check_rnn_case(res: dict, stdout: str, cell: str = "rnn") -> None:
    """The "rnn" case (FusedRNN vs nn.RNN), and "lstm" / "gru" alike: every variant of every point, checked,
    timed, in the table."""
    from fused_rnn.bench.case import worst_error

    block, grid = res["precisions"]["ieee"], res["grid"]
    rows = block[cell]
    nn_ = f"nn_{cell}"
    assert len(rows) == 4 * len(grid["rnn_B"]) * len(grid["rnn_T"]) * len(grid["rnn_H"])
    assert {(r["layers"], r["dirs"], r["packed"]) for r in rows} == {(1, 1, 0), (2, 1, 0), (1, 2, 0), (1, 1, 1)}
    for r in rows:
        assert r["ok"] and r["backend"] in ("torch", "triton")
        for key in ("max_rel_vs_", "hn_max_rel_vs_", "input_grad_max_rel_vs_", "h0_grad_max_rel_vs_"):
            assert r[key + nn_] < 1e-5, (key, r)
        assert worst_error(r) < 1e-5, r  # every parameter's gradient too
        assert r["fused_fwd_ms"] > 0 and r["fused_fwdbwd_ms"] > 0
        assert r[f"speedup_{cell}_fwd_vs_{nn_}"] > 0 and r[f"speedup_{cell}_fwdbwd_vs_{nn_}"] > 0
    for r in (r for r in rows if r["packed"]):  # ragged lengths, and the padded run of the same max length
        assert 0 < r["fill"] < 1 and r["fused_padded_fwd_ms"] > 0 and r[f"{nn_}_padded_fwdbwd_ms"] > 0
        for who in (nn_, "fused"):
            for what in ("fwd", "fwdbwd"):
                assert r[f"{who}_packed_over_padded_{what}"] == r[f"{who}_{what}_ms"] / r[f"{who}_padded_{what}_ms"]
    assert block[f"geomean_{cell}_fwd_vs_{nn_}"] > 0 and block[f"geomean_{cell}_fwdbwd_vs_{nn_}"] > 0
    names = {"rnn": ("FusedRNN", "nn.RNN"), "lstm": ("FusedLSTM", "nn.LSTM"), "gru": ("FusedGRU", "nn.GRU")}
    fused, label = names[cell]
    assert f"{fused} fwd+bwd over {label} (all variants)" in stdout and "| packed | " in stdout


def test_without_matplotlib_the_plot_is_skipped(tmp_path):
    """matplotlib missing: JSON and markdown written, one line saying how to get the plot, exit 0."""
    prelude = (
        "import sys; sys.modules['matplotlib'] = None; "  # `import matplotlib` now raises ImportError
        "from fused_rnn.bench.runner import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    argv = ["--quick", "--device", "cpu", "--B", "2", "--T", "3", "--H", "8", "--out", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-c", prelude, *argv], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".md"]
    both = out.stdout + out.stderr
    lines = [line for line in both.splitlines() if "fused_rnn[plot]" in line]
    assert len(lines) == 1 and "plot skipped" in lines[0], both[-3000:]
    assert "Traceback" not in both
    assert ".png" not in out.stderr.splitlines()[-1]  # the "wrote ..." line names only what was written


def test_a_new_case_plugs_in_and_a_failed_point_fails_the_run(tmp_path, capsys):
    """A case defined outside the runner runs, reports and plots; its wrong point is FAIL and exit 1."""
    from fused_rnn.bench import runner
    from fused_rnn.bench.case import Case, Column, Speedup, speedup_column

    def check(shape, ctx):
        return {"toy_max_rel": 1.0 if shape["H"] == 8 else 0.0}  # H = 8 is wrong on purpose

    def run(shape, ctx):
        fused = ctx.time_ms(lambda: sum(range(1000)))
        return {"fused_ms": fused, "ref_ms": 2 * fused}

    s = Speedup("toy_vs_ref", "ref_ms", "fused_ms", "toy over ref", geomean=True)
    toy = Case(
        name="toy",
        title="Toy",
        full=dict(toy_H=[4, 8]),
        quick=dict(toy_H=[4, 8]),
        points=lambda grid: [dict(B=1, T=1, H=h) for h in grid["toy_H"]],
        setup=lambda shape, ctx: shape,
        check=check,
        run=run,
        columns=(Column("H", lambda r: str(r["H"])), speedup_column("x", s)),
        speedups=(s,),
        plots=((s.key, "toy"),),
    )
    code = runner.main(["--quick", "--device", "cpu", "--out", str(tmp_path)], cases=[toy])
    out = capsys.readouterr()
    assert code == 1 and "1 point(s) failed" in out.err
    res = json.loads(next(tmp_path.glob("*.json")).read_text())
    block = res["precisions"]["ieee"]
    good, bad = block["toy"]
    assert good["ok"] and good["speedup_toy_vs_ref"] == 2.0 and block["geomean_toy_vs_ref"] == 2.0
    assert not bad["ok"] and bad["speedup_toy_vs_ref"] is None and block["failed_points"] == 1
    assert res["grid"] == {"toy_H": [4, 8]}
    assert "| 8 | FAIL |" in out.out and "toy over ref 2.00x. Failed checks: 1." in out.out
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".md", ".png"]


def test_precisions_and_the_tf32x3_setting(monkeypatch):
    """tf32x3 runs on CUDA when asked for, sets the fused kernels' option, and run() restores it."""
    import torch

    from fused_rnn.bench import runner
    from fused_rnn.launch import TF32X3_ENV

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert runner.precisions(None, cuda) == ["tf32", "ieee", "bf16"]
    assert runner.precisions("ieee,tf32x3", cuda) == ["ieee", "tf32x3"]
    assert runner.precisions(None, cpu) == ["ieee"]
    monkeypatch.delenv(TF32X3_ENV, raising=False)
    old = torch.get_float32_matmul_precision()
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        assert runner.set_precision("tf32x3") == torch.float32
        assert os.environ[TF32X3_ENV] == "1" and torch.get_float32_matmul_precision() == "highest"
        runner.set_precision("ieee")
        assert TF32X3_ENV not in os.environ
    finally:
        torch.set_float32_matmul_precision(old)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_gpu_only_scripts_say_so_without_a_gpu():
    """bench/floors.py and bench/gate_crosscheck.py import cleanly and refuse in one line without CUDA."""
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bench/gpu_run.sh runs them")
    for script, extra in (("floors.py", []), ("gate_crosscheck.py", ["--gate", os.devnull])):
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / script), *extra], env=_env(), capture_output=True, text=True
        )
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().splitlines() == [f"error: {script.split('.')[0]} needs a CUDA device"]
