"""Nothing a user does loses work or shows a traceback (issue 17): overwrites, signals, atomic files,
non-finite losses, paths and sizes checked first, damaged checkpoints, resume, binary texts, --version."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import TINY
from helpers import run_cli as run

import fused_rnn.train as T
from fused_rnn.cli import main
from fused_rnn.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the torch path: faster
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return env


def train(out, text_file, capsys, *extra, steps=4):
    argv = ["train", "--text", text_file, "--steps", steps, "--eval-every", 2, "--out", out, *TINY, *extra]
    return run(argv, capsys)


# ------------------------------------------------------------------------------------------ lost work


def test_train_into_a_checkpoint_refuses_without_resume_and_force_replaces(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, text_file, capsys)[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    code, _, err = train(out, text_file, capsys, "--seed", 5)
    assert code == 2 and one_error_line(err)
    assert "--resume" in err and "--force" in err and "another --out" in err
    assert (out / "checkpoint.pt").read_bytes() == before  # untouched
    code, _, err = train(out, text_file, capsys, "--seed", 5, "--force", steps=2)
    assert code == 0, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["step"] == 2 and ck["config"]["seed"] == 5


def _popen(argv: list[str]) -> subprocess.Popen:
    """Start a command as a user's shell would, with Ctrl-C's default action: a shell that runs this suite in
    the background (`pytest &` in a script) passes SIGINT on ignored, and Python keeps an ignored SIGINT."""

    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )


def _start_training(tmp_path, text_file, out, *extra):
    argv = [sys.executable, "-m", "fused_rnn", "train", "--text", str(text_file), "--steps", "1000000"]
    argv += ["--eval-every", "3", "--out", str(out), "--device", "cpu", *TINY[:-1], *extra]
    return _popen(argv), argv


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_step_and_prints_the_resume_command(sig, code, text_file, tmp_path):
    out = tmp_path / "run"
    proc, argv = _start_training(tmp_path, text_file, out)
    try:
        line = proc.stdout.readline()  # the first validation line: training is under way
        assert line.startswith("step 3:"), line + proc.stderr.read()
        time.sleep(0.3)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    m = re.search(r"stopped after step (\d+) of 1000000; saved (\S+); resume with: (.+)$", stderr, re.M)
    assert m, stderr
    step = int(m.group(1))
    assert step >= 3 and Path(m.group(2)) == out / "checkpoint.pt"
    assert load_checkpoint(out / "checkpoint.pt")["step"] == step  # saved at that step, not the last validation
    assert m.group(3) == "python -m fused_rnn " + " ".join(argv[3:]) + " --resume"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_crash_while_saving_keeps_the_last_checkpoint(text_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train(out, text_file, capsys)[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def broken(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # half-written
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    code, _, err = train(out, text_file, capsys, "--resume", steps=6)
    assert code == 2 and err == "error: disk full\n"  # one line, no traceback
    assert (out / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(text_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = T.Objective.forward
    calls = []

    def diverging(self, x, y, h0=None):
        loss, hn = real(self, x, y, h0)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 5:
                loss = loss * float("nan")
        return loss, hn

    monkeypatch.setattr(T.Objective, "forward", diverging)
    code, _, err = train(out, text_file, capsys, steps=8)
    assert code == 2 and one_error_line(err)
    assert "step 5" in err and "learning rate" in err and "--lr" in err and "keeps step 4" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


# ------------------------------------------------------------------------------------------ refuse first


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_a_bad_out_is_refused_before_the_first_step(where, text_file, tmp_path, capsys, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    out = f / "run" if where == "under-a-file" else f
    monkeypatch.setattr(T, "build_model", lambda *a: pytest.fail("a model was built"))
    code, _, err = train(out, text_file, capsys)
    assert code == 2 and one_error_line(err) and "--out" in err and "file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(text_file, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, _, err = train(ro / "run", text_file, capsys)
    assert code == 2 and one_error_line(err) and "--out" in err


def test_a_read_only_filesystem_is_refused(text_file, tmp_path, capsys, monkeypatch):
    """As on a read-only mount (EROFS), whoever runs it: the probe file cannot be created."""
    import errno
    import tempfile

    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", erofs)
    code, _, err = train(tmp_path / "run", text_file, capsys)
    assert code == 2 and one_error_line(err) and "Read-only file system" in err


@pytest.mark.parametrize(
    "opt,value",
    [("--hidden", 100000), ("--batch-size", 1000000000), ("--embed", 1000000000), ("--seq-len", 100000)],
)
def test_sizes_are_checked_against_memory_before_allocating(opt, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T, "available_memory", lambda device: 8 * 2**30)
    monkeypatch.setattr(T, "build_model", lambda *a: pytest.fail("a model was built"))
    monkeypatch.setattr(T, "split", lambda *a: pytest.fail("the text was split"))
    argv = ["train", "--steps", 2, "--out", tmp_path / "o", "--quiet", opt, value]
    code, _, err = run(argv, capsys)
    assert code == 2 and one_error_line(err), err
    assert "GiB of memory" in err and "8.0 GiB free" in err and f"{opt} {value}" in err


def test_the_memory_estimate_lets_ordinary_sizes_through():
    cfg = T.TrainConfig()
    assert T.training_bytes(cfg, 159) < 64 * 2**20
    assert T.training_bytes(T.TrainConfig(hidden=100000), 159) > 100 * 2**30


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--seed", "99999999999999999999"], "--seed: must lie in [0, 2**63)"),
        (["train", "--seed", "-1"], "--seed: must lie in [0, 2**63)"),
        (["sample", "--checkpoint", "x", "--seed", "99999999999999999999"], "--seed: must lie in [0, 2**63)"),
        (["sample", "--checkpoint", "x", "--temperature", "nan"], "--temperature: must be a finite number"),
        (["sample", "--checkpoint", "x", "--temperature", "-1"], "--temperature: must be a finite number"),
        (["sample", "--checkpoint", "x", "--length", "-3"], "--length: must be at least 0"),
        (["sample", "--checkpoint", "x", "--top-k", "-1"], "--top-k: must be at least 0"),
        (["train", "--lr", "inf"], "--lr: must be a finite number above 0"),
        (["train", "--clip", "nan"], "--clip: must be a finite number above 0"),
        (["train", "--steps", "0"], "--steps: must be at least 1"),
        (["train", "--val-fraction", "1"], "--val-fraction: must lie strictly between 0 and 1"),
        (["train", "--threads", "-2"], "--threads: must be at least 0"),
        (["inspect", "--checkpoint", "x", "--out", "o", "--length", "0"], "--length: must be at least 1"),
    ],
)
def test_every_option_has_a_range(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and one_error_line(err) and match in err, err


def test_the_backend_is_chosen_without_a_tensor(monkeypatch):
    """planned_backend reads shapes and the device only, and agrees with what fused_recurrence runs."""
    from fused_rnn.ops import resolve_backend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # H = 3000 is over the kernels' limit: the one-time fallback warning
        expect = {h: resolve_backend(torch.empty(1, 3, h), "auto")[0] for h in (32, 128, 3000)}

    def no_alloc(*a, **k):
        raise AssertionError("a tensor was allocated to choose the backend")

    for name in ("empty", "zeros", "ones", "randn", "tensor"):
        monkeypatch.setattr(torch, name, no_alloc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = {h: T.planned_backend("fused", torch.device("cpu"), 3, h) for h in expect}
    assert got == expect
    assert T.planned_backend("reference", torch.device("cpu"), 3, 32) == "python loop"


# ------------------------------------------------------------------------------------------ damaged files


def _trained(tmp_path, text_file, capsys) -> Path:
    out = tmp_path / "run"
    assert train(out, text_file, capsys, steps=2)[0] == 0
    return out / "checkpoint.pt"


def test_flipped_bytes_in_the_tensor_data_are_named(text_file, tmp_path, capsys):
    ck = _trained(tmp_path, text_file, capsys)
    w = load_checkpoint(ck)["model"]["l_hidden.weight"].numpy().tobytes()
    raw = bytearray(ck.read_bytes())
    at = raw.find(w)
    assert at > 0
    for i in range(at + 8, at + 72):  # 64 bytes of the weights
        raw[i] ^= 0xFF
    ck.write_bytes(bytes(raw))
    code, _, err = run(["sample", "--checkpoint", ck, "--length", 3], capsys)
    assert code == 2 and one_error_line(err)
    assert "is damaged" in err and "sha256 digest" in err


def test_a_truncated_checkpoint_is_damaged_not_unsafe(text_file, tmp_path, capsys):
    ck = _trained(tmp_path, text_file, capsys)
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    code, _, err = run(["sample", "--checkpoint", ck, "--length", 3], capsys)
    assert code == 2 and one_error_line(err)
    assert "damaged or truncated" in err and "safely" not in err


def test_an_old_checkpoint_without_a_digest_still_loads(text_file, tmp_path, capsys):
    ck = _trained(tmp_path, text_file, capsys)
    d = torch.load(ck, weights_only=True)
    assert d["digest"].startswith("sha256:")
    del d["digest"], d["text_sha256"]
    torch.save(d, ck)
    code, out, err = run(["sample", "--checkpoint", ck, "--length", 5, "--prime", "the "], capsys)
    assert code == 0, err
    assert out.startswith("the ")


def test_a_config_tensor_mismatch_says_what(text_file, tmp_path, capsys):
    ck = _trained(tmp_path, text_file, capsys)
    d = torch.load(ck, weights_only=True)
    d["config"]["hidden"] = 40
    del d["digest"]
    torch.save(d, ck)
    code, _, err = run(["sample", "--checkpoint", ck, "--length", 3], capsys)
    assert code == 2 and one_error_line(err)
    assert "hidden=40" in err and "l_hidden.weight is (32, 32), the config needs (40, 40)" in err


# ------------------------------------------------------------------------------------------ resume


def test_resume_takes_sizes_from_the_checkpoint_and_applies_lr_and_clip(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, text_file, capsys, steps=2)[0] == 0
    argv = ["train", "--steps", 4, "--eval-every", 2, "--out", out, "--resume", "--lr", "1e-5", "--clip", "0.5"]
    code, _, err = run(argv, capsys)  # no --hidden/--embed/--seq-len/--batch-size, no --text
    assert code == 0, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["step"] == 4 and ck["config"]["hidden"] == 32 and ck["config"]["seq_len"] == 16
    assert ck["config"]["lr"] == 1e-5 and ck["config"]["clip"] == 0.5
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]] == [1e-5]  # Adam ran at it
    assert ck["history"][-1]["lr"] == 1e-5 and ck["history"][0]["lr"] == 3e-3


def test_the_text_is_stored_absolute_with_its_digest_and_a_change_is_named(text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    code, _, err = train(out, "tiny.txt", capsys, steps=2)  # a relative path
    assert code == 0, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["config"]["text"] == str(text_file) and ck["text_sha256"].startswith("sha256:")
    monkeypatch.chdir(ROOT)  # resume from elsewhere: the absolute path still finds it
    assert run(["train", "--steps", 4, "--out", out, "--resume", "--quiet"], capsys)[0] == 0
    text_file.write_text(text_file.read_text() + "the end.\n")
    code, _, err = run(["train", "--steps", 6, "--out", out, "--resume", "--quiet"], capsys)
    assert code == 2 and one_error_line(err)
    assert str(text_file) in err and "changed" in err
    code, _, err = run(["train", "--steps", 6, "--out", out, "--resume", "--quiet", "--text", text_file], capsys)
    assert code == 0 and "note: --text" in err and "sha256 differs" in err  # given again: trained on, and named


def test_text_from_standard_input(text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text_file.read_bytes())))
    out = tmp_path / "run"
    code, _, err = train(out, "-", capsys, steps=2)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt")["config"]["text"] == "-"
    code, _, err = run(["train", "--steps", 4, "--out", out, "--resume", "--quiet"], capsys)
    assert code == 2 and "standard input" in err and "--text" in err


@pytest.mark.parametrize("kind", ["directory", "devnull", "nul", "control"])
def test_texts_that_are_not_text_files(kind, tmp_path, capsys):
    if kind == "directory":
        p, match = tmp_path, "is a directory"
    elif kind == "devnull":
        p, match = Path(os.devnull), "a device, not a file) is empty"
    else:
        p = tmp_path / "bin"
        p.write_bytes(b"\0" * 100_000 if kind == "nul" else bytes(range(1, 32)) * 3000 + b"abc" * 100)
        match = "looks binary"
    code, _, err = run(["train", "--text", p, "--steps", 1, "--out", tmp_path / "o", *TINY], capsys)
    assert code == 2 and one_error_line(err) and match in err, err
    assert not (tmp_path / "o").exists()  # refused before --out was made
    if kind == "nul":
        assert "NUL bytes" in err


def test_a_text_with_a_few_control_characters_is_still_text(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("form\ffeed and a bell\a, ordinary text.\n" * 80)
    assert run(["train", "--text", p, "--steps", 1, "--out", tmp_path / "o", *TINY], capsys)[0] == 0


# ------------------------------------------------------------------------------------------ busy machines


def test_the_thread_count_is_measured_and_printed(text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    argv = ["train", "--text", text_file, "--steps", 12, "--eval-every", 12, "--out", tmp_path / "o"]
    code, out, err = run([*argv, *TINY, "--device", "cpu"], capsys)
    assert code == 0, err
    assert seen[:4] == [1, 1, 2, 2] and seen[4] in (1, 2) and seen[-1] == 2  # tried, chosen, restored
    line = next(ln for ln in out.splitlines() if ln.startswith("training speed:"))
    assert f"cpu, {seen[4]} thread" in line and "measured" in line
    code, out, _ = run([*argv[:-1], tmp_path / "p", *TINY, "--device", "cpu", "--threads", "1"], capsys)
    assert "cpu, 1 thread," in out


# ------------------------------------------------------------------------------------------ what users expect


def test_version_and_help_do_not_import_torch():
    code = "import sys; import fused_rnn.cli as c; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert out.stdout.strip() == "False", out.stderr
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "fused_rnn", "--help"], capture_output=True, text=True, env=_env())
        best = min(best, time.perf_counter() - t0)
        assert r.returncode == 0 and "train" in r.stdout
    assert best < 1.0
    r = subprocess.run([sys.executable, "-m", "fused_rnn", "--version"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and r.stdout.strip() == "fused-rnn 0.1.0"


def test_sample_ctrl_c_exits_130_without_a_traceback(text_file, tmp_path, capsys, monkeypatch):
    ck = _trained(tmp_path, text_file, capsys)
    import fused_rnn.sample

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fused_rnn.sample, "stream_sample", interrupted)  # what `sample` and print_sample run
    code, _, err = run(["sample", "--checkpoint", ck], capsys)
    assert code == 130 and "SIGINT" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ bench


def _bench(tmp_path, *args, timeout=300):
    argv = [sys.executable, "-m", "fused_rnn", "bench", "--device", "cpu", "--no-plot", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=tmp_path)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--precision", "tf32x3"], "--precision: tf32x3 not among ieee on cpu"),
        (["--H", "0"], "argument --H"),
        (["--H", "100000", "--quick"], "needs about"),
        (["--out", "afile", "--quick"], "--out afile: is a file"),
    ],
)
def test_bench_bad_options_exit_2_in_one_line_before_running(args, match, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _bench(tmp_path, *args, timeout=60)
    assert r.returncode == 2 and one_error_line(r.stderr) and match in r.stderr, r.stderr
    assert r.stdout == ""


def test_bench_interrupt_writes_the_points_measured(tmp_path):
    argv = [sys.executable, "-m", "fused_rnn", "bench", "--device", "cpu", "--no-plot", "--out", str(tmp_path)]
    argv += ["--B", "4", "--T", "8", "--H", "16,32,48,64,80,96"]
    proc = _popen(argv)
    try:
        first = proc.stdout.readline()
        assert re.match(r"\[1/\d+ ETA \d+(m\d\ds|s)\] \[ieee\] recurrence", first), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "wrote the points measured so far" in stderr
    res = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert res["interrupted"].startswith("SIGINT after ")
    n = int(res["interrupted"].split()[2])
    assert n >= 1 and sum(len(res["precisions"]["ieee"].get(c, [])) for c in res["cases"]) == n
    assert "interrupted" in next(tmp_path.glob("*.md")).read_text()


def test_bench_plot_shows_every_case_notes_the_torch_path_and_keeps_1(tmp_path):
    """Every measured case gets a panel; the figure says when the fused side ran PyTorch; 1.0 lies inside each axis."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    from fused_rnn.bench import runner
    from fused_rnn.bench.cases import CASES

    grid = runner.build_grid(CASES, True, {})
    res = dict(info=dict(device="cpu", torch="x", date="d"), grid=grid, precisions={"ieee": {}})
    block = res["precisions"]["ieee"]
    for i, case in enumerate(CASES):
        block[case.name] = []
        for shape in case.points(grid):
            r = dict(shape, ok=True, backend="torch")
            for s in case.speedups:
                r[s.key] = 3.0 + i  # every bar well above 1: the axis must still reach down to 1.0
            block[case.name].append(r)
    drawn = {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        drawn["texts"] = [t.get_text() for t in fig.texts]
        drawn["titles"] = [ax.get_title() for ax in fig.axes]
        drawn["ylims"] = [ax.get_ylim() for ax in fig.axes]
        return real(fig, *a, **k)

    import unittest.mock

    with unittest.mock.patch.object(matplotlib.figure.Figure, "savefig", spy):
        runner.plot(res, tmp_path / "p.png", CASES)
    assert (tmp_path / "p.png").stat().st_size > 0
    for case in CASES:  # every case, including model and rnn that have no panels of their own
        assert any(
            case.name in t or any(s.label in t for s in case.speedups) or any(title in t for _, title in case.plots)
            for t in drawn["titles"]
        ), case.name
    assert len(drawn["titles"]) >= sum(max(len(c.plots), len(c.speedups)) for c in CASES if c.plots or c.speedups)
    assert any("PyTorch path" in t for t in drawn["texts"])
    assert all(lo <= 1.0 <= hi for lo, hi in drawn["ylims"])


# ------------------------------------------------------------------------------------------ inspect


def _inspect_checkpoint(tmp_path: Path, text: str) -> Path:
    from fused_rnn.data import Vocab
    from fused_rnn.models import FusedCharRNN
    from fused_rnn.train import TrainConfig, save_checkpoint

    vocab = Vocab.from_text(text)
    model = FusedCharRNN(len(vocab), 8, 16)
    ck = tmp_path / "run" / "checkpoint.pt"
    ck.parent.mkdir(parents=True)
    save_checkpoint(ck, model, torch.optim.Adam(model.parameters()), vocab, TrainConfig(hidden=16, embed=8), 1, [])
    return ck


def test_inspect_draws_every_character_with_a_glyph_and_no_warnings(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from fused_rnn.inspector import has_glyph, show_char

    text = "line one\r\n中文 and emoji 🙂, a NUL \0 and $5 \\ back\ttab\n" * 3
    ck = _inspect_checkpoint(tmp_path, text)
    for c in set(text):
        shown = show_char(c)
        assert all(has_glyph(g) for g in shown), (c, shown)
    assert show_char("中") == "\\u4e2d" and show_char("🙂") == "\\U0001f642" and show_char("\0") == "\\x00"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = ["inspect", "--checkpoint", ck, "--prime", text, "--out", tmp_path / "o", "--device", "cpu", "--png"]
        code, _, err = run(argv, capsys)
    font = [str(w.message) for w in caught if "glyph" in str(w.message).lower() or "font" in str(w.message).lower()]
    assert font == []  # matplotlib's "Glyph ... missing from font(s)"
    assert code == 0, err
    # the page carries the text whole: CR, NUL, CJK and astral characters decode to the very same text
    from fused_rnn.inspect_page import decode_page

    dec = decode_page((tmp_path / "o" / "index.html").read_text(encoding="utf-8"))
    assert "".join(dec["payload"]["vocab"][i] for i in dec["tokens"]) == text


def test_inspect_labels_training_text_past_the_held_out_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    text = "abcdefghij\n" * 40  # 440 characters: the held-out end is the last 65 (seq_len 64 + 1)
    p = tmp_path / "t.txt"
    p.write_text(text)
    ck = _inspect_checkpoint(tmp_path, text)
    state = torch.load(ck, weights_only=True)
    state["config"]["text"] = str(p)
    torch.save(state, ck)
    code, out, err = run(
        ["inspect", "--checkpoint", ck, "--length", 100, "--out", tmp_path / "o", "--device", "cpu", "--json"], capsys
    )
    assert code == 0, err
    assert "note: the first 35 of these 100 characters are training text" in out
    data = json.loads((tmp_path / "o" / "inspect.json").read_text())
    assert data["training_chars"] == 35 and "training text" in (tmp_path / "o" / "index.html").read_text()
    code, out, err = run(
        ["inspect", "--checkpoint", ck, "--length", 60, "--out", tmp_path / "o2", "--device", "cpu"], capsys
    )
    assert code == 0 and "training text" not in out


def test_the_demo_comparison_uses_the_benchmark_timer(monkeypatch):
    """Warm-up, repeats and median come from fused_rnn.bench.runner.time_ms, on one CPU thread, in alternating
    rounds; the ratio is the median of the rounds' ratios."""
    from fused_rnn import cli
    from fused_rnn.bench import runner

    calls = []
    fake = iter([2.0, 6.0, 2.0, 5.0, 1.0, 7.0])  # fused, reference, fused, reference, ...: ratios 3, 2.5, 7

    def timer(fn, device, quick):
        fn()
        calls.append((torch.get_num_threads(), quick))
        return next(fake)

    monkeypatch.setattr(runner, "time_ms", timer)
    line = cli._speed_line(T.TrainConfig(device="cpu", batch_size=2, seq_len=4, hidden=8, embed=4))
    assert calls == [(1, False)] * 2 * cli.SPEED_ROUNDS
    assert "(3.0x)" in line and "median of repeats" in line
    assert f"FusedCharRNN {8 / 0.002:,.0f} chars/s" in line and f"CharLoopModel {8 / 0.006:,.0f} chars/s" in line
