#!/usr/bin/env bash
# What a GPU lease should run, in stages that each fit one device call (10 minutes at most):
#   suite  the test suite compiled on the card, then its grid-barrier tests (incl. tf32x3 accuracy)
#   gate   the compile gate on this machine's cores, the runtime cross-check against it, the stress run
#   bench  the benchmark in tf32, ieee and bf16
#   x3     the per-step floors (bench/floors.py), then the benchmark with the tf32x3 option
#          against the IEEE baselines
# Logs and results go to $OUT (or bench/results/gpu-run). Usage, from the repository root:
#   bash bench/gpu_session.sh gate      (then suite, bench, x3; "all" runs every stage, over 10 minutes)
# Run gate first: its builds land in Triton's cache under the keys the runtime uses, so the suite
# then compiles only the variants the gate does not build (issue the calls back to back: an idle
# machine is handed back within a minute, cache and all). Do not carry .venv (a CPU torch).
set -uo pipefail
STAGE=${1:-all}
OUT=${OUT:-bench/results/gpu-run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi | tee "$OUT/nvidia-smi.txt" | head -15
# the image already has torch, triton, pytest, tqdm, matplotlib: install the package only
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())" | tee "$OUT/versions.txt"
status=0
run() { [ "$STAGE" = all ] || [ "$STAGE" = "$1" ]; }
if run suite; then
  timeout 390 python3 -m pytest -q -x --ignore=tests/test_compile_gate.py 2>&1 | tee "$OUT/pytest.log" | tail -15 || status=1
  FUSED_RNN_GRID_BARRIER=1 timeout 150 python3 -m pytest -q -x tests/test_recurrence.py 2>&1 | tee "$OUT/pytest-barrier.log" | tail -5 || status=1
fi
if run gate; then
  GATE_WORKERS=16 timeout 240 python3 tests/compile_gate.py --json > "$OUT/gate.json" || status=1
  timeout 170 python3 bench/gate_crosscheck.py --seconds 110 --gate "$OUT/gate.json" --out "$OUT/crosscheck.json" > "$OUT/crosscheck.md" 2>&1 || status=1
  head -3 "$OUT/crosscheck.md"; grep -m 5 FAIL "$OUT/crosscheck.md"
  timeout 120 python3 bench/stress.py --barrier --iters 3000 --seconds 95 --dtypes fp32,tf32,tf32x3,bf16,fp16 2>&1 | tee "$OUT/stress.log" | tail -5 || status=1
fi
if run bench; then
  timeout 520 python3 bench/bench.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -40 || status=1
fi
if run x3; then
  timeout 150 python3 bench/floors.py --out "$OUT/floors.json" 2>&1 | tee "$OUT/floors.md" || status=1
  timeout 380 python3 bench/bench.py --precision tf32x3 --out "$OUT/tf32x3" 2>&1 | tee "$OUT/bench-tf32x3.log" | tail -20 || status=1
fi
exit $status
