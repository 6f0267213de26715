"""The benchmark's quick mode runs, checks every fused point against nn.RNN, and writes its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--out", str(tmp_path)],
        env=env,
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
    for r in block["recurrence"] + block["generation"]:
        assert r["max_rel_vs_nn_rnn"] < 1e-5 and r["fused_fwd_ms"] > 0
    assert "Geometric mean" in out.stdout
