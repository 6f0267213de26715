"""bench/stress.py stays runnable: a few random shapes through the kernels, checked and repeated."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "stress.py"


def test_stress_smoke(capsys):
    spec = importlib.util.spec_from_file_location("fused_rnn_stress", SCRIPT)
    stress = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stress)
    modes = "fp32,tf32,tf32x3,bf16,fp16"
    args = ["--iters", "5", "--max-h", "40", "--max-b", "20", "--max-t", "5", "--seed", "1", "--dtypes", modes]
    code = stress.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "5 shapes, 0 failures" in out
