"""Files the command line writes: folders checked before any work, and atomic writes (temp file, then os.replace).

No torch import here: the command line checks paths before it loads anything heavy.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import DataError


def ensure_dir(path: str | Path, option: str) -> Path:
    """Create the folder `path` (and its parents) and prove it is writable, or raise DataError naming `option`.

    Catches, before any work: a path under a regular file, a file where the folder should be, a
    read-only mount or a folder without write permission.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{option} {path}: is a file, not a folder; choose a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{option} {path}: a part of this path is a file, not a folder") from None
    except NotADirectoryError:
        raise DataError(f"{option} {path}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise DataError(f"{option} {path}: cannot create this folder ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"{option} {path}: cannot write in this folder ({exc.strerror or exc})") from None
    return p


def check_dir(path: str | Path, option: str) -> None:
    """Raise DataError when the folder `path` could not be created and written, without creating anything:
    a file in the way, or a nearest existing folder that is not writable (permissions, a read-only mount)."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise DataError(f"{option} {path}: is a file, not a folder; choose a folder")
        probe = p
    else:
        probe = p.absolute().parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise DataError(f"{option} {path}: a part of this path is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{option} {path}: cannot write in {probe} (no permission, or a read-only file system)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it replaces `path` in one step.

    A crash or an interrupt inside the block leaves the old file (if any) intact and removes the temp file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # on disk before it takes the name
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def atomic_save(path: str | Path, save: Callable[[Path], object]) -> None:
    """Call save(tmp) (e.g. torch.save, savefig) and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        save(tmp)
