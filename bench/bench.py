"""The benchmark of a source checkout: a thin shim over the packaged runner `fused_rnn.bench.runner`.

Same options as `fused-rnn bench` (see its --help); results go to bench/results next to this file
unless --out says otherwise. The cases live in fused_rnn/bench/cases/.

    python bench/bench.py [--quick] [--out DIR] [--device auto|cpu|cuda] [--precision tf32,ieee,bf16]
                          [--B 32,64] [--T 64] [--H 128] [--no-plot]
"""

from __future__ import annotations

from pathlib import Path

from fused_rnn.bench.runner import main as runner_main

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """Run the packaged benchmark with bench/results as the default output folder; the exit status."""
    return runner_main(argv, prog=Path(__file__).name, default_out=RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
