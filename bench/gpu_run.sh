#!/usr/bin/env bash
# The one GPU entry point: install the package from this tree (offline, nothing else), then run every
# phase of bench/gpu_run.py under one budget. Results: $OUT (the device tool's folder) or the first
# argument, else bench/results/gpu-run; at most 7 files, all at its top level. Further arguments go to
# gpu_run.py (e.g. --budget 400, --phases env,correctness). Usage, from the repository root:
#   bash bench/gpu_run.sh [DIR] [gpu_run.py options]
# FlashRNN's side (phase f) needs its wheels carried with the tree, the machine has no network: before the
# device call, `pip download --no-deps -d .whl flashrnn einops` and pass carry=[".whl"] (.whl/ is ignored by git).
# The prebuilt sm_90 Triton cache travels the same way: `python bench/gpu_run.py --build-cache --cache-python
# PY312` (a Python 3.12 with triton 3.6.0, as on the card) writes .triton-cache/sm90.tar.xz; carry ".triton-cache".
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu-run}"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out="$1"; shift; fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=python3
# the machine has torch, triton, pytest, matplotlib: only the package itself goes in, without the network
if ! $py -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/log.txt" 2>&1; then
    # no setuptools build there: a site folder that maps the package as setuptools' package-dir does
    site="$(mktemp -d)"
    mkdir -p "$site/fused_rnn"
    for f in fused_rnn/*; do ln -s "$PWD/$f" "$site/fused_rnn/"; done
    ln -s "$PWD/kernels" "$site/fused_rnn/kernels"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_run.sh: pip could not install the package offline; using $site on PYTHONPATH" | tee -a "$out/log.txt"
fi
exec $py bench/gpu_run.py --out "$out" "$@"
