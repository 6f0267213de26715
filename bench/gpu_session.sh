#!/usr/bin/env bash
# Everything a GPU lease should run, in one device call (see the device tool's METHOD.md):
# the suite compiled on the card, the compile gate, a stress run of the persistent split
# kernels, and the benchmark. Logs and results go to $OUT (or bench/results/gpu-run).
# Usage on the device machine, from the repository root:  bash bench/gpu_session.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu-run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi | tee "$OUT/nvidia-smi.txt"
# the image already has torch, triton, pytest, tqdm, matplotlib: install the package only
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())" | tee "$OUT/versions.txt"
status=0
timeout 240 python3 -m pytest -q -x 2>&1 | tee "$OUT/pytest.log" | tail -15 || status=1
FUSED_RNN_GRID_BARRIER=1 timeout 240 python3 -m pytest -q -x tests/test_recurrence.py 2>&1 | tee "$OUT/pytest-barrier.log" | tail -5 || status=1
timeout 200 python3 bench/stress.py --barrier --iters 3000 --seconds 150 2>&1 | tee "$OUT/stress.log" | tail -5 || status=1
timeout 420 python3 bench/bench.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -40 || status=1
exit $status
