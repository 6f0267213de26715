"""Training text: loading, the character vocabulary, the train/validation split and (B, T) batches."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
import unicodedata
from pathlib import Path

import torch

from .config import DEFAULT_MODULES, DataError


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


#: A text with more than this share of control characters (other than tab, newline, CR, FF, VT) is binary.
BINARY_SHARE = 0.1


def text_source(path: str | None) -> str | None:
    """What the checkpoint records of --text: an absolute path, "-" for standard input or a pipe, None for the
    default."""
    if path is None or path == "-":
        return path
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_file():
        return "-"  # a pipe, a process substitution or a device: nothing to read again on resume
    return str(p)


def text_digest(text: str) -> str:
    """sha256 of the text's UTF-8 bytes, as "sha256:<hex>"."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read(path: str) -> bytes:
    """The bytes of --text: a file, standard input ("-"), a pipe or a device; one-line DataError otherwise."""
    if path == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise DataError("--text -: standard input is a terminal; pipe the text in (--text - < FILE)")
        return sys.stdin.buffer.read()
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DataError(f"--text: no such file: {path}") from None
    except NotADirectoryError:
        raise DataError(f"--text: {path}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise DataError(f"--text: {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"--text: {path} is a directory; give a text file inside it")
    try:
        with open(p, "rb") as f:  # a regular file, or a pipe / process substitution / device read to its end
            return f.read()
    except PermissionError:
        raise DataError(f"--text: {path}: permission denied") from None
    except OSError as exc:
        raise DataError(f"--text: {path}: cannot be read ({exc.strerror or exc})") from None


def _what(path: str) -> str:
    if path == "-":
        return "standard input"
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        return str(path)
    if stat.S_ISCHR(st.st_mode):
        return f"{path} (a device, not a file)"
    if stat.S_ISFIFO(st.st_mode):
        return f"{path} (a pipe)"
    return str(path)


def load_text(path: str | None) -> str:
    """Read a UTF-8 text: a file, "-" (standard input) or a pipe; the embedded default when `path` is None.

    Refuses, in one line: a missing file, a directory, an empty input, bytes that are not UTF-8,
    and a binary file (more than BINARY_SHARE control characters or NUL bytes).
    """
    if path is None:
        return default_text()
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--text: {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from None
    if not text:
        raise DataError(f"--text: {_what(path)} is empty")
    control = sum(1 for c in text if c not in "\t\n\r\f\v" and unicodedata.category(c) == "Cc")
    if control > BINARY_SHARE * len(text):
        nul = text.count("\0")
        detail = f", {nul:,} of them NUL bytes" if nul else ""
        raise DataError(
            f"--text: {_what(path)} looks binary, not text: {control:,} of its {len(text):,} characters "
            f"are control characters{detail}"
        )
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
