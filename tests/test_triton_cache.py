"""bench/triton_cache.py and `gpu_run.py --build-cache`: the prebuilt sm_90 Triton cache the GPU run carries.

Recording runs here under the interpreter; building compiles real sm_90 cubins with Triton's own JIT under a
compile-only driver (no GPU); restoring into another folder must turn every one of those JIT compiles into a
cache hit, which is what the card's warm-up then sees.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import fused_rnn.kernels as K
import pytest
import torch
from helpers import load_bench

import fused_rnn.launch as launch

ROOT = Path(__file__).resolve().parents[1]
tc = load_bench("triton_cache")
gpu_run = load_bench("gpu_run")
Point = gpu_run.Point
pytestmark = pytest.mark.skipif(not launch.INTERPRETED, reason="recording runs under Triton's interpreter (CPU)")

#: small items, one per kernel family: single program, split step, persistent (grid barrier), packed
#: bidirectional (lengths, reverse) and generation
ITEMS = [
    (Point(16, 2, 32, "fp32"), "single"),
    (Point(17, 2, 160, "bf16"), "step"),
    (Point(16, 2, 160, "bf16"), "persistent"),
    (Point(5, 2, 100, "fp32"), "packed_bidirectional"),
    (Point(3, 2, 32, "fp32"), "generate"),
]


def _record(items):
    def work():
        for p, mode in items:
            gpu_run.exercise(p, mode, torch.device("cpu"))
            yield

    return tc.record(work)


@pytest.fixture(scope="module")
def records():
    return _record(ITEMS)


def test_record_sees_every_kernel_family_as_a_card_launches_it(records):
    kernels = {r["kernel"] for r in records}
    assert kernels == {
        "fused_recurrent_fwd_kernel", "fused_recurrent_bwd_kernel", "split_recurrent_fwd_step_kernel",
        "split_recurrent_bwd_step_kernel", "split_recurrent_fwd_kernel", "split_recurrent_bwd_kernel",
        "generate_kernel",
    }  # fmt: skip
    persistent = [r for r in records if r["kernel"] in ("split_recurrent_fwd_kernel", "split_recurrent_bwd_kernel")]
    assert all(r["kwargs"]["launch_cooperative_grid"] is True for r in persistent)
    # the packed bidirectional item: per-row lengths, both directions
    flags = {(r["kwargs"].get("HAS_LENGTHS"), r["kwargs"].get("REVERSE")) for r in records}
    assert (True, True) in flags and (True, False) in flags
    # T and the step are do_not_specialize: one record per specialisation, whatever their values
    assert len({json.dumps(r, sort_keys=True) for r in records}) == len(records)
    json.dumps(records)  # JSON as they are
    # B = 17 and B = 1 rows: an int that is 1 or a multiple of 16 specialises, and the records keep the value
    assert any(17 in r["args"] for r in records) and any(16 in r["args"] for r in records)


def test_record_restores_the_kernels_and_launchers(records):
    assert all(type(getattr(K, n)).__name__ == "InterpretedFunction" for n in K.__all__)
    assert launch._persistent_wanted(torch.device("cpu")) is False
    assert launch._persistent_fits is not None and launch._persistent_fits.__name__ == "_persistent_fits"


def test_record_restores_even_when_the_work_fails():
    def work():
        yield
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tc.record(work)
    assert all(type(getattr(K, n)).__name__ == "InterpretedFunction" for n in K.__all__)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int64])
@pytest.mark.parametrize("offset", [0, 1, 4])
def test_stand_ins_specialise_as_the_real_tensors(dtype, offset):
    """What the binder makes of a stand-in equals what it makes of the tensor it was recorded from."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", 90, 32))
    t = torch.zeros(64, dtype=dtype)[offset:]
    stand_in = tc._arg(tc._describe(t))
    assert native_specialize_impl(backend, stand_in, False, True, True) == native_specialize_impl(
        backend, t, False, True, True
    )


def _no_interpreter_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return dict(env, PYTHONUNBUFFERED="1", **extra)


_COUNT = """
import json, sys
sys.path.insert(0, {bench!r})
import triton_cache
print(json.dumps(triton_cache.compile_records(json.load(open({recs!r}))["records"])))
"""


@pytest.fixture(scope="module")
def built(records, tmp_path_factory):
    """The records compiled for sm_90 and packed, through gpu_run.py's build child (this Python)."""
    tmp = tmp_path_factory.mktemp("cache")
    recs = tmp / "records.json"
    recs.write_text(json.dumps({"items": len(ITEMS), "records": records}))
    build_dir = tmp / "build"
    build_dir.mkdir()
    pack = tmp / "sm90.tar.xz"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--compile-records", str(recs), "--build-cache",
         str(pack), "--jobs", "2"],
        env=_no_interpreter_env(TRITON_CACHE_DIR=str(build_dir)), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, recs, build_dir, pack, r.stdout


def test_build_compiles_every_record_and_packs_it(built, records):
    _tmp, _recs, build_dir, pack, log = built
    # records that differ only where the JIT key does not look share one key; each key built once
    found = re.search(rf"{len(records)} records, (\d+) distinct JIT keys: (\d+) built, 0 already cached, 0 failed", log)
    assert found and found.group(1) == found.group(2), log
    keys = int(found.group(1))
    assert 7 <= keys <= len(records)
    kernels = tc.kernel_dirs(build_dir)
    assert kernels == keys
    meta = tc.read_identity(pack)
    assert meta["identity"] == tc.identity() and meta["kernels"] == kernels and meta["records"] == len(records)
    # the C launchers, one per signature, each needing libcuda.so.1 as the card's own build would
    assert 1 <= meta["launchers"] == tc.launchers(build_dir) <= kernels
    if shutil.which("readelf"):
        for so in build_dir.glob("*/__triton_launcher*.so"):
            needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
            assert "[libcuda.so.1]" in needed, so
    assert meta["build_dir"] == str(build_dir.resolve())
    assert pack.stat().st_size <= tc.MAX_BYTES
    with tarfile.open(pack) as tar:
        names = tar.getnames()
    assert sum(n.endswith(".cubin") for n in names) == kernels  # real sm_90 binaries
    assert all(n == "identity.json" or n.startswith("cache/") for n in names)


def test_restored_cache_turns_every_jit_compile_into_a_hit(built, records, tmp_path):
    """Restored elsewhere (the build folder gone), the same JIT warm-ups build nothing: all hits."""
    _tmp, recs, build_dir, pack, _log = built
    dest = tmp_path / "elsewhere" / "triton"
    res = tc.restore(pack, dest, tc.identity())
    kernels = tc.kernel_dirs(build_dir)
    assert res["restored"] and res["kernels"] == kernels and res["launchers"] == tc.launchers(build_dir), res
    for grp in dest.glob("*/__grp__*.json"):  # the groups point into the new folder, at files that exist
        paths = json.loads(grp.read_text())["child_paths"].values()
        assert all(Path(p).is_file() and Path(p).is_relative_to(dest) for p in paths)
    moved = build_dir.with_name("build-moved")
    build_dir.rename(moved)  # nothing may still point at the build folder
    try:
        code = _COUNT.format(bench=str(ROOT / "bench"), recs=str(recs))
        r = subprocess.run([sys.executable, "-c", code], env=_no_interpreter_env(TRITON_CACHE_DIR=str(dest)),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    finally:
        moved.rename(build_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts == dict(counts, built=0, hits=kernels, failed=[]), counts


def _env_phase_carrying(pack: Path, out: Path) -> dict:
    """gpu_run's env phase (smoke) with --triton-cache PACK: what its record says of the carried cache."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--smoke", "--phases", "env", "--out", str(out),
         "--triton-cache", str(pack)],
        env=_no_interpreter_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return next(x for x in gpu_run.read_records(out) if x["phase"] == "env")["carried_cache"]


def test_smoke_env_phase_restores_a_carried_cache(built, tmp_path):
    """gpu_run's env phase restores --triton-cache into the run's TRITON_CACHE_DIR and says so."""
    _tmp, _recs, _build, pack, _log = built
    carried = _env_phase_carrying(pack, tmp_path / "run")
    assert carried["restored"] is True and carried["kernels"] == tc.read_identity(pack)["kernels"], carried
    assert not Path(carried["dir"]).is_relative_to(ROOT)


def _fake_pack(tmp: Path, ident: dict, written_as: str | None = None) -> Path:
    """A one-kernel cache; `written_as`: the folder its group names (Triton writes TRITON_CACHE_DIR unresolved)."""
    cache = tmp / "c"
    (cache / "abc").mkdir(parents=True)
    (cache / "abc" / "k.json").write_text("{}")
    child = f"{written_as or cache}/abc/k.json"
    (cache / "abc" / "__grp__k.json").write_text(json.dumps({"child_paths": {"k.json": child}}))
    return Path(tc.pack(cache, tmp / "p.tar.xz", ident)["file"])


def test_restore_points_the_groups_at_their_files_whatever_the_build_folder_was_called(tmp_path):
    here = tc.identity()
    pack = _fake_pack(tmp_path, here, written_as="/some/symlinked/tmp/cache")
    dest = tmp_path / "dest"
    res = tc.restore(pack, dest, here)
    assert res["restored"] and res["kernels"] == 1
    grp = json.loads((dest / "abc" / "__grp__k.json").read_text())
    assert grp["child_paths"] == {"k.json": str(dest.resolve() / "abc" / "k.json")}


@pytest.mark.parametrize("field", ["triton_key", "source", "env_vars", "ptxas"])
def test_restore_refuses_a_cache_built_by_another_triton_or_tree(field, tmp_path):
    here = tc.identity()
    pack = _fake_pack(tmp_path, dict(here, **{field: {"TRITON_X": "1"} if field == "env_vars" else "0" * 16}))
    dest = tmp_path / "dest"
    res = tc.restore(pack, dest, here)
    assert res["restored"] is False and field in res["why"]
    assert not dest.exists()
    assert tc.restore(tmp_path / "missing.tar.xz", dest, here)["restored"] is False


def test_source_digest_follows_the_kernels(tmp_path):
    for rel in ("kernels/a.py", "fused_rnn/dispatch.py", "fused_rnn/other.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    d0 = tc.source_digest(tmp_path)
    (tmp_path / "fused_rnn/other.py").write_text("x = 2\n")
    assert tc.source_digest(tmp_path) == d0  # not a file the keys or the configs come from
    (tmp_path / "kernels/a.py").write_text("x = 2\n")
    assert tc.source_digest(tmp_path) != d0


def test_smoke_env_phase_survives_a_broken_carried_cache(tmp_path):
    bad = tmp_path / "sm90.tar.xz"
    bad.write_bytes(b"not an xz file")
    carried = _env_phase_carrying(bad, tmp_path / "run")
    assert carried["restored"] is False and "restore failed" in carried["why"]


def test_build_refuses_an_environment_that_enters_the_keys(built, tmp_path):
    _tmp, recs, _build, _pack, _log = built
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--compile-records", str(recs), "--build-cache",
         str(tmp_path / "x.tar.xz")],
        env=_no_interpreter_env(TRITON_CACHE_DIR=str(tmp_path / "c"), TRITON_DEFAULT_FP_FUSION="0"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "TRITON_DEFAULT_FP_FUSION" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "x.tar.xz").exists()


def test_pack_refuses_a_cache_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "MAX_BYTES", 64)
    with pytest.raises(ValueError, match="over the"):
        _fake_pack(tmp_path, tc.identity())
    assert not (tmp_path / "p.tar.xz").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--build-cache", "--cache-python", "/nonexistent/python3.12"], "--cache-python"),
        (["--triton-cache", "/nonexistent/sm90.tar.xz", "--phases", "env"], "--triton-cache"),
        (["--build-cache", "--jobs", "0"], "--jobs"),
        (["--build-cache", "."], "--build-cache"),
        (["--build-cache", "--cache-python", "NO_TRITON"], "cannot import triton"),
        (["--compile-records", "r.json"], "--compile-records"),
    ],
)
def test_cache_options_fail_in_one_line(argv, says, tmp_path):
    if "NO_TRITON" in argv:  # a Python without triton
        fake = tmp_path / "python3.12"
        fake.write_text("#!/bin/sh\nexit 1\n")
        fake.chmod(0o755)
        argv = [str(fake) if a == "NO_TRITON" else a for a in argv]
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_run.py"), *argv, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert says in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
