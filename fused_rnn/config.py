"""What the command line needs before any heavy import: the training config, the errors, the defaults.

Nothing here imports torch, so `fused-rnn --help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

#: The embedded default corpus: the source of these standard-library modules of the
#: running interpreter (about 360 KB of Python on CPython 3.11), so the demo needs no download.
DEFAULT_MODULES = (
    "argparse",
    "collections",
    "csv",
    "difflib",
    "fractions",
    "heapq",
    "json.decoder",
    "shlex",
    "string",
    "textwrap",
)

#: Seeds lie in [0, SEED_LIMIT): torch.manual_seed takes a 64-bit integer.
SEED_LIMIT = 2**63


class DataError(ValueError):
    """Unusable input (text, option, path); the message is one line, fit for the command line."""


class CheckpointError(ValueError):
    """An unusable checkpoint; the message is one line, fit for the command line."""


@dataclass
class TrainConfig:
    """Everything `fused-rnn train` takes; saved in the checkpoint."""

    text: str | None = None
    steps: int = 600
    batch_size: int = 32
    seq_len: int = 64
    hidden: int = 128
    embed: int = 42
    lr: float = 3e-3
    clip: float = 1.0
    device: str = "auto"
    model: str = "fused"
    objective: str = "seq"
    carry_state: bool = False
    seed: int = 0
    out: str = "runs/default"
    resume: bool = False
    eval_every: int = 100
    eval_batches: int = 8
    val_fraction: float = 0.1
    quiet: bool = False
    force: bool = False
    threads: int = 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2): `error: <prog>: <message> (see <prog> --help)`."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
