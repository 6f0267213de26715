"""Training text: loading, the character vocabulary, the train/validation split and (B, T) batches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

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


class DataError(ValueError):
    """Unusable training text; the message is one line, fit for the command line."""


def default_text() -> str:
    """The concatenated source of `DEFAULT_MODULES`."""
    parts = []
    for name in DEFAULT_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue  # an interpreter without this module's source still has the others
        parts.append(Path(spec.origin).read_text(encoding="utf-8"))
    if not parts:
        raise DataError("the embedded default text is missing: this Python has none of its standard-library sources")
    return "\n".join(parts)


def load_text(path: str | None) -> str:
    """Read a UTF-8 file, or the embedded default when `path` is None."""
    if path is None:
        return default_text()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--text: no such file: {path}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--text: {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from None
    if not text:
        raise DataError(f"--text: {path} is empty")
    return text


class Vocab:
    """Characters of the training text, sorted; index i <-> chars[i]."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.index})

    def encode(self, text: str) -> torch.Tensor:
        """str -> (len,) int64 indices; unknown characters raise DataError."""
        missing = self.unknown(text)
        if missing:
            raise DataError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split(data: torch.Tensor, val_fraction: float, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (1 - val_fraction) of the text for training, the rest for validation."""
    n_val = max(int(len(data) * val_fraction), seq_len + 1)
    train, val = data[:-n_val], data[-n_val:]
    if len(train) < seq_len + 1:
        raise DataError(
            f"the text has {len(data)} characters: too short for --seq-len {seq_len} "
            f"(needs at least {2 * (seq_len + 1)} for a training and a validation window)"
        )
    return train, val


def windows(data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, T) at `starts` and their next-character targets (B, T)."""
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


def random_starts(n: int, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """(batch,) random window starts in a text of n characters."""
    return torch.randint(0, n - seq_len, (batch,), generator=generator)


def stream_starts(n: int, batch: int, seq_len: int, step: int) -> torch.Tensor:
    """(batch,) starts that walk `batch` contiguous streams forward by seq_len each step.

    Consecutive steps continue each row where the previous one stopped, so the
    hidden state can be carried across batches (truncated BPTT). A stream that
    runs out wraps to its beginning.
    """
    span = (n - 1) // batch
    per_stream = max(span // seq_len, 1)
    return torch.arange(batch) * span + (step % per_stream) * seq_len
