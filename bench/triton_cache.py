"""A prebuilt Triton cache for the GPU run: sm_90 cubins of every kernel specialisation it launches, built here on CPU.

Three steps, driven by `python bench/gpu_run.py --build-cache` (and restored by its env phase):

  record   (this machine's Python with torch, TRITON_INTERPRET=1) runs what the GPU run's warm-up runs, with
           every kernel in `fused_rnn.kernels` swapped for a recorder: each launch's kernel, grid, arguments
           (a tensor as its dtype and whether its data_ptr is 16-byte aligned, the only things Triton's binder
           reads of it) and options. The dispatcher picks sm_90's configs under the interpreter, and the
           recorder says yes to the grid-barrier mode, so the records are the launches an H200 gets.
           Kernels run (in the interpreter) only where they are cheap, since generation reads its tokens back.
  build    (any Python with Triton and no torch: use Python 3.12 with PyPI's triton 3.6.0, the pair the card
           has, since Triton's cache key hashes libtriton, which differs per Python) feeds stand-ins for those
           arguments to each kernel's own `JITFunction.warmup` under a compile-only driver for sm_90, one per
           distinct JIT key (`jit_key`). So the binder, the specialisation and the cache key are the runtime's
           by construction, not rebuilt. Each kernel's C launcher (gcc, per signature) is built too, linked
           against a stub libcuda.so.1, as the card would build it at the first launch. Refuses to run with a
           cache-invalidating environment variable set (it would enter every key).
  pack     one tar.xz (at most `MAX_BYTES`), the cache folder plus `identity.json`: Triton's identity (version,
           `triton_key` hash, ptxas version, cache-invalidating environment variables), the digest of the
           kernels' sources (`source_digest`), the folder it was built in and the counts.

`restore` (on the card, before the warm-up) extracts it only when the identity matches the machine's and the
tree's, and points the paths Triton's cache groups hold (`__grp__*.json`) at the files beside them. Not in it:
bench/floors.py's own two tiny kernels (that module needs torch), and the shapes of the CUDA-only tests (they
skip on the CPU, so they cannot be recorded here).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

#: the compressed cache travels with the tree (ignored by git): at most this size
MAX_BYTES = 10 * 1024 * 1024
#: where `gpu_run.py --build-cache` writes it, and where the GPU run looks for it
DEFAULT_FILE = Path(__file__).resolve().parents[1] / ".triton-cache" / "sm90.tar.xz"  # in the repository root
#: a recorded kernel runs in the interpreter when B * H is at most this (generation reads its tokens back)
EXECUTE_MAX_BH = 64 * 128
#: the identity fields that must match for the carried cache to be used
IDENTITY_KEYS = ("triton", "triton_key", "ptxas", "env_vars", "source")
ROOT = DEFAULT_FILE.parents[1]
#: the files whose contents decide the kernels' cache keys (kernels/) and which configs launch (the dispatcher)
SOURCE_FILES = ("kernels/*.py", "fused_rnn/dispatch.py")

_TORCH_TO_TRITON = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64",
                    "int32": "i32", "int64": "i64", "int8": "i8", "uint8": "u8", "bool": "i1"}  # fmt: skip
_TRITON_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "i32": "int32",
                 "i64": "int64", "i8": "int8", "u8": "uint8", "i1": "int1"}  # fmt: skip


# --------------------------------------------------------------------------- identity


def source_digest(root: Path = ROOT) -> str:
    """sha256 (16 hex digits) of SOURCE_FILES under `root`: a cache built from other kernels is not restored."""
    h = hashlib.sha256()
    for pattern in SOURCE_FILES:
        for path in sorted(root.glob(pattern)):
            h.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def identity() -> dict:
    """What Triton's cache keys hold besides the kernel: its version, the hash of its sources and libtriton
    (`triton_key`, which differs per Python version), the ptxas version and the cache-invalidating environment
    variables that are set; the digest of this tree's kernels (`source_digest`); and the Python it runs on."""
    import triton
    from triton._C.libtriton import get_cache_invalidating_env_vars

    ident: dict = {"triton": triton.__version__, "python": platform.python_version()}
    ident["env_vars"] = dict(sorted(get_cache_invalidating_env_vars().items()))
    ident["source"] = source_digest()
    try:
        from triton.runtime.cache import triton_key

        ident["triton_key"] = hashlib.sha256(triton_key().encode()).hexdigest()[:16]
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        ident["triton_key"] = f"unavailable: {exc}"
    try:
        from triton.backends.nvidia.compiler import get_ptxas_version

        text = str(get_ptxas_version())
        found = re.search(r"release [\d.]+, V[\d.]+", text)  # "Cuda compilation tools, release 12.8, V12.8.93"
        ident["ptxas"] = found.group(0) if found else text
    except Exception as exc:  # noqa: BLE001
        ident["ptxas"] = f"unavailable: {type(exc).__name__}"
    return ident


def mismatches(built: dict, here: dict) -> list[str]:
    """The identity fields (IDENTITY_KEYS) that differ, as 'field: built != here'."""
    return [f"{k}: {built.get(k)} != {here.get(k)}" for k in IDENTITY_KEYS if built.get(k) != here.get(k)]


# --------------------------------------------------------------------------- record (interpreter, torch)


def _describe(value) -> object:
    """A launch argument as JSON: a tensor as ["tensor", triton dtype, 16-byte aligned]; anything else as itself."""
    import torch

    if isinstance(value, torch.Tensor):
        return ["tensor", _TORCH_TO_TRITON[str(value.dtype).split(".")[1]], value.data_ptr() % 16 == 0]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot record a launch argument of type {type(value).__name__}")


class _Recorder:
    """Stands in for one interpreted kernel: records each launch; runs it only when it is cheap."""

    def __init__(self, name: str, fn, sink: dict) -> None:
        self.name, self.fn, self.sink = name, fn, sink
        dns = fn.kwargs.get("do_not_specialize") or ()
        self.unspecialised = {fn.arg_names[d] if isinstance(d, int) else d for d in dns}

    def __getattr__(self, attr):  # arg_names and the rest, as the launchers read them
        return getattr(self.fn, attr)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            named = dict(zip(self.fn.arg_names, args, strict=False))
            # do_not_specialize arguments (T, the step) do not enter the key: one record for all their values
            desc = [2 if n in self.unspecialised and isinstance(a, int) else _describe(a) for n, a in named.items()]
            kw = {k: _describe(v) for k, v in sorted(kwargs.items())}
            grid_t = list(grid) if isinstance(grid, tuple | list) else [grid]
            rec = {"kernel": self.name, "grid": grid_t, "args": desc, "kwargs": kw}
            self.sink.setdefault(json.dumps(rec, sort_keys=True), rec)
            cheap = named.get("B", 1) * named.get("H", 1) <= EXECUTE_MAX_BH
            if cheap and not kwargs.get("launch_cooperative_grid"):  # a spin barrier deadlocks the interpreter
                return self.fn[grid](*args, **kwargs)
            return None

        return launch


def record(work: Callable[[], Iterable], on_error: Callable[[str], None] | None = None) -> list[dict]:
    """The distinct kernel launches `work()` makes (it yields once per item, or raises), as JSON-able records.

    Runs under Triton's interpreter (TRITON_INTERPRET=1 before fused_rnn is imported). Every kernel of
    `fused_rnn.kernels` is swapped for a recorder, and the launchers try the grid-barrier kernels as on a card
    (`launch._persistent_wanted` / `_persistent_fits` say yes), for as long as `work()` runs.
    """
    import fused_rnn.kernels as K

    import fused_rnn.launch as launch

    if not launch.INTERPRETED:
        raise RuntimeError("record needs Triton's interpreter: set TRITON_INTERPRET=1 before importing fused_rnn")
    sink: dict = {}
    saved = {name: getattr(K, name) for name in K.__all__}
    patched = {"_persistent_wanted": lambda device: launch._grid_barrier_enabled(), "_persistent_fits": lambda *a: True}
    saved_launch = {k: getattr(launch, k) for k in patched}
    try:
        for name, fn in saved.items():
            setattr(K, name, _Recorder(name, fn, sink))
        for k, v in patched.items():
            setattr(launch, k, v)
        for item in work():
            if on_error and isinstance(item, str):
                on_error(item)
    finally:
        for name, fn in saved.items():
            setattr(K, name, fn)
        for k, v in saved_launch.items():
            setattr(launch, k, v)
    return list(sink.values())


# --------------------------------------------------------------------------- build (no torch, no GPU)


class _StandIn:
    """What Triton's binder reads of a tensor argument: its dtype and its data_ptr's alignment."""

    def __init__(self, dtype: str, aligned: bool) -> None:
        import triton.language as tl

        self.dtype = getattr(tl, _TRITON_NAMES[dtype])
        self._ptr = 0 if aligned else 4

    def data_ptr(self) -> int:
        return self._ptr


class CompileOnlyDriver:
    """Enough of Triton's driver for `JITFunction.warmup` on a machine with no GPU: a current device, a stream
    and a target (sm_90 by default). Launching is not possible with it."""

    def __init__(self, capability: int = 90) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self):
        return self.target


def _arg(value):
    if isinstance(value, list) and value and value[0] == "tensor":
        return _StandIn(value[1], value[2])
    return value


class Counter:
    """Triton's compilation listener: how many compiles hit the cache and how many built."""

    def __init__(self) -> None:
        self.hits = 0
        self.built = 0

    def __call__(self, *, cache_hit: bool = False, **_kw) -> None:
        if cache_hit:
            self.hits += 1
        else:
            self.built += 1


def jit_key(rec: dict, capability: int = 90) -> str:
    """The part of the JIT's in-memory cache key a record decides (kernel, specialisation, options): records
    that differ only in values the binder ignores (B = 17 or 33) share one."""
    import fused_rnn.kernels as K
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = getattr(K, rec["kernel"])
    binder = create_function_from_signature(fn.signature, fn.params, make_backend(GPUTarget("cuda", capability, 32)))
    _bound, specialization, options = binder(*[_arg(a) for a in rec["args"]], **rec["kwargs"])
    return json.dumps([rec["kernel"], [list(x) for x in specialization], sorted(options.items())], default=str)


def _stub_libcuda(folder: Path) -> Path:
    """A libcuda.so.1 to link Triton's C launchers against where there is no driver. It defines every cu* name
    Triton's CUDA driver module mentions (the launcher template's calls among them), so that the linker, which
    drops a library that resolves nothing (--as-needed), records libcuda.so.1 as needed, as on the card; there
    the real one resolves them."""
    import triton.backends.nvidia.driver as nv

    names = sorted(set(re.findall(r"\b(cu[A-Z]\w*)\s*\(", Path(nv.__file__).read_text())))
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "stub.c"
    src.write_text("".join(f"void {n}(void) {{}}\n" for n in names))
    gcc = shutil.which("gcc") or shutil.which("cc") or "gcc"
    cmd = [gcc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(folder / "libcuda.so.1"), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    return folder


def _build_launcher(kernel, stub: Path) -> None:
    """Triton's C launcher for `kernel` (gcc, one per signature; cached in TRITON_CACHE_DIR as
    __triton_launcher*.so), as the card would build it at the kernel's first launch. Loading it needs the
    driver, so that part fails here, after the build is in the cache."""
    import logging

    import triton.backends.nvidia.driver as nv

    if nv.libcuda_dirs.__name__ != "stub_dirs":

        def stub_dirs():
            return [str(stub)]

        nv.libcuda_dirs = stub_dirs
        nv.library_dirs.cache_clear()
        logging.getLogger("triton.runtime.build").setLevel(logging.ERROR)  # "could not be loaded": expected here
    with contextlib.suppress(ImportError, OSError):
        nv.CudaLauncher(kernel.src, kernel.metadata)


def launchers(cache_dir: Path) -> int:
    """How many C launchers a Triton cache folder holds."""
    return sum(1 for _ in Path(cache_dir).glob("*/__triton_launcher*.so")) if Path(cache_dir).is_dir() else 0


def compile_records(records: list[dict], capability: int = 90, stub: Path | None = None) -> dict:
    """Compile every record through its kernel's own JIT (`warmup`) into TRITON_CACHE_DIR, for `capability`;
    with `stub` (a folder holding a stub libcuda.so.1), also each kernel's C launcher.

    Needs no GPU and no torch; must not run under TRITON_INTERPRET. Returns counts and failures."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("compile_records builds cubins: unset TRITON_INTERPRET")
    import fused_rnn.kernels as K
    from triton import knobs
    from triton.runtime.driver import driver

    counter = Counter()
    saved_listener, saved_driver = knobs.compilation.listener, driver._active  # reset_active needs a GPU
    driver.set_active(CompileOnlyDriver(capability))
    knobs.compilation.listener = counter
    failed: list[str] = []
    t0 = time.perf_counter()
    try:
        for rec in records:
            fn = getattr(K, rec["kernel"])
            args = [_arg(a) for a in rec["args"]]
            try:
                kernel = fn.warmup(*args, grid=tuple(rec["grid"]), **rec["kwargs"])
                if stub is not None:
                    _build_launcher(kernel, stub)
            except Exception as exc:  # noqa: BLE001 - reported per record
                failed.append(f"{rec['kernel']}: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        knobs.compilation.listener = saved_listener
        driver._active = saved_driver
    return {"records": len(records), "built": counter.built, "hits": counter.hits, "failed": failed,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def kernel_dirs(cache_dir: Path) -> int:
    """How many compiled kernels a Triton cache folder holds (one metadata group per kernel)."""
    return sum(1 for _ in Path(cache_dir).glob("*/__grp__*.json")) if Path(cache_dir).is_dir() else 0


# --------------------------------------------------------------------------- pack and restore


def pack(cache_dir: Path, out_file: Path, ident: dict, extra: dict | None = None) -> dict:
    """Write the cache folder and identity.json as one tar.xz (atomically); refuses one over MAX_BYTES."""
    cache_dir = Path(cache_dir).resolve()
    meta = dict(identity=ident, build_dir=str(cache_dir), kernels=kernel_dirs(cache_dir),
                launchers=launchers(cache_dir), **(extra or {}))  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        data = json.dumps(meta, indent=1).encode()
        info = tarfile.TarInfo("identity.json")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(cache_dir.rglob("*")):
            if path.is_file() and ".tmp." not in path.name:
                tar.add(path, arcname=f"cache/{path.relative_to(cache_dir)}", recursive=False)
    size = buf.tell()
    if size > MAX_BYTES:
        raise ValueError(f"the packed cache is {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB limit")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp.{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out_file)
    return dict(meta, file=str(out_file), bytes=size)


def read_identity(tar_file: Path) -> dict:
    """identity.json of a packed cache."""
    with tarfile.open(tar_file, "r:xz") as tar:
        f = tar.extractfile("identity.json")
        if f is None:
            raise ValueError(f"{tar_file}: no identity.json")
        return json.loads(f.read())


def restore(tar_file: Path, dest: Path, here: dict) -> dict:
    """Extract a packed cache into `dest` (Triton's cache folder) when its identity matches `here`.

    Cache groups hold absolute paths of the folder the cache was built in: they are rewritten to `dest`.
    Returns what happened: restored (bool), kernels, and why not where it did not."""
    tar_file, dest = Path(tar_file), Path(dest).resolve()
    if not tar_file.is_file():
        return {"restored": False, "why": f"no carried cache at {tar_file}"}
    meta = read_identity(tar_file)
    if bad := mismatches(meta["identity"], here):
        return {"restored": False, "why": "identity differs: " + "; ".join(bad), "built_with": meta["identity"]}
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_file, "r:xz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("cache/")]
        for m in members:
            rel = Path(m.name).relative_to("cache")
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"{tar_file}: unsafe member {m.name}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            data = src.read()
            if rel.name.startswith("__grp__"):
                # a group's files sit beside it: the paths depend on neither folder's spelling (symlinks)
                grp = json.loads(data)
                grp["child_paths"] = {k: str(target.parent / Path(v).name) for k, v in grp["child_paths"].items()}
                data = json.dumps(grp).encode()
            target.write_bytes(data)
    return {"restored": True, "kernels": kernel_dirs(dest), "launchers": launchers(dest),
            "records": meta.get("records"), "dir": str(dest), "built_with": meta["identity"]}  # fmt: skip
