"""The command line: training learns, checkpoints round-trip and resume, sampling, DDP, bad input."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY
from helpers import run_cli as run

from fused_rnn.cli import main
from fused_rnn.data import DEFAULT_MODULES, default_text
from fused_rnn.train import load_checkpoint


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_training_learns_and_checkpoint_round_trips(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        ["train", "--text", text_file, "--steps", 60, "--eval-every", 20, "--out", out, *TINY], capsys
    )
    assert code == 0, stdout
    m = metrics(out)
    vals = [h["val_loss"] for h in m["history"]]
    assert m["step"] == 60 and len(vals) == 3
    assert vals[-1] < 0.75 * vals[0]  # a repetitive text is easy: the loss must clearly fall
    assert m["val_bpc"] == pytest.approx(m["val_loss"] / 0.6931471805599453)
    assert {"step", "train_loss", "val_loss", "val_bpc"} <= set(m)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 60 and ckpt["vocab"] == "".join(sorted(set(text_file.read_text())))
    assert "final: step 60" in stdout and "chars/s" in stdout


def test_resume_continues_the_step_count(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--text", text_file, "--eval-every", 10, "--out", out, *TINY]
    assert run([*base, "--steps", 10], capsys)[0] == 0
    first = load_checkpoint(out / "checkpoint.pt")
    # no --text: the resumed run reads the text it started with (the embedded default has other characters)
    base.remove(text_file)
    base.remove("--text")
    assert run([*base, "--steps", 20, "--resume"], capsys)[0] == 0
    second = load_checkpoint(out / "checkpoint.pt")
    assert second["config"]["text"] == str(text_file)
    assert second["step"] == 20
    assert [h["step"] for h in metrics(out)["history"]] == [10, 20]
    assert second["optimizer"]["state"][0]["step"].item() == 20  # Adam's count went on too
    assert not torch.equal(first["model"]["l_hidden.weight"], second["model"]["l_hidden.weight"])


def test_checkpoints_keep_the_step0_weights_through_resume(text_file, tmp_path, capsys):
    """Training keeps the weights it started from (inspect's before/after view), digested with the rest; a
    resumed run keeps them; a checkpoint without them (older ones) resumes without them."""
    from fused_rnn.train import build_model, payload_digest

    out = tmp_path / "run"
    base = ["train", "--text", text_file, "--eval-every", 5, "--out", out, "--seed", 3, *TINY]
    assert run([*base, "--steps", 5], capsys)[0] == 0
    first = load_checkpoint(out / "checkpoint.pt")
    torch.manual_seed(3)
    fresh = build_model("fused", len(first["vocab"]), 8, 32).state_dict()
    assert set(first["initial_model"]) == set(fresh)
    for k, v in fresh.items():
        assert torch.equal(first["initial_model"][k], v), k
        assert not torch.equal(first["model"][k], v), k  # five Adam steps moved every parameter
    assert run([*base, "--steps", 10, "--resume"], capsys)[0] == 0
    second = load_checkpoint(out / "checkpoint.pt")
    assert all(torch.equal(second["initial_model"][k], v) for k, v in fresh.items())
    # the digest covers them: a changed step-0 weight is a damaged checkpoint
    d = torch.load(out / "checkpoint.pt", weights_only=True)
    d["initial_model"]["l_hidden.bias"] += 1
    torch.save(d, out / "checkpoint.pt")
    code, _, err = run(["sample", "--checkpoint", out / "checkpoint.pt", "--length", 3], capsys)
    assert code == 2 and "sha256 digest" in err
    # an older checkpoint (no step-0 weights, its digest over model and optimizer only) loads and resumes
    del d["initial_model"]
    d["digest"] = payload_digest(d)
    torch.save(d, out / "checkpoint.pt")
    assert run([*base, "--steps", 12, "--resume"], capsys)[0] == 0
    assert "initial_model" not in load_checkpoint(out / "checkpoint.pt")


def test_seeded_sampling_is_repeatable(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--text", text_file, "--steps", 30, "--eval-every", 30, "--out", out, *TINY], capsys)[0] == 0
    ck = out / "checkpoint.pt"
    args = ["sample", "--checkpoint", ck, "--prime", "the ", "--length", 40, "--temperature", 1.0]
    a = run([*args, "--seed", 1], capsys)[1]
    b = run([*args, "--seed", 1], capsys)[1]
    c = run([*args, "--seed", 2], capsys)[1]
    assert a == b and a != c
    assert a.startswith("the ") and len(a.rstrip("\n")) == 44
    greedy = run([*args, "--top-k", 1, "--seed", 3], capsys)[1]
    assert greedy == run([*args, "--temperature", 0, "--seed", 4], capsys)[1]  # top-1 is argmax


def test_sampling_runs_the_prime_once_then_generates(text_file, tmp_path, capsys, monkeypatch):
    """The prime runs once (T = its length); the 7 characters come from one generation call, no prefix rerun."""
    out = tmp_path / "run"
    assert run(["train", "--text", text_file, "--steps", 5, "--eval-every", 5, "--out", out, *TINY], capsys)[0] == 0
    import fused_rnn.generate as G

    scans, pieces = [], []
    orig_scan, orig_next = G.rnn_scan, G._Run.next

    def scan_spy(u, *args, **kwargs):
        scans.append(u.shape[0])
        return orig_scan(u, *args, **kwargs)

    def next_spy(self, length):
        pieces.append(length)
        return orig_next(self, length)

    monkeypatch.setattr(G, "rnn_scan", scan_spy)
    monkeypatch.setattr(G._Run, "next", next_spy)
    code, stdout, _ = run(["sample", "--checkpoint", out / "checkpoint.pt", "--prime", "the qu", "--length", 7], capsys)
    assert code == 0 and stdout.startswith("the qu") and len(stdout) == 6 + 7 + 1
    assert scans == [6] and pieces == [7]


def test_reference_model_and_many_to_one_objective(text_file, tmp_path, capsys):
    out = tmp_path / "ref"
    argv = ["train", "--text", text_file, "--steps", 8, "--eval-every", 4, "--out", out, "--model", "reference"]
    assert run([*argv, "--objective", "last", *TINY], capsys)[0] == 0
    assert metrics(out)["step"] == 8
    # a reference-trained checkpoint samples through the fused model: same state_dict
    code, stdout, _ = run(["sample", "--checkpoint", out / "checkpoint.pt", "--length", 5], capsys)
    assert code == 0 and len(stdout) > 0


def test_carry_state_trains(text_file, tmp_path, capsys, monkeypatch):
    """Truncated BPTT: every training step after the first starts from the previous step's detached h_n."""
    from fused_rnn.models import FusedCharRNN

    seen = []  # (h0, h_n) of every training call; validation runs under no_grad
    orig = FusedCharRNN.forward_sequence

    def spy(self, tokens, h0=None):
        logp, hn = orig(self, tokens, h0)
        if torch.is_grad_enabled():
            seen.append((h0, hn.detach().clone()))
        return logp, hn

    monkeypatch.setattr(FusedCharRNN, "forward_sequence", spy)
    out = tmp_path / "carry"
    argv = ["train", "--text", text_file, "--steps", 6, "--eval-every", 6, "--out", out, "--carry-state", *TINY]
    assert run(argv, capsys)[0] == 0
    assert metrics(out)["step"] == 6
    assert len(seen) == 6 and seen[0][0] is None
    for (h0, _), (_, prev_hn) in zip(seen[1:], seen[:-1], strict=True):
        assert h0 is not None and not h0.requires_grad  # detached: backprop stops at the batch boundary
        assert torch.equal(h0, prev_hn)


def test_stream_windows_are_contiguous():
    """Row b of step k + 1 continues row b of step k, until the streams wrap together."""
    from fused_rnn.data import stream_starts

    n, B, T = 1000, 4, 16
    span = (n - 1) // B
    per_stream = span // T
    a = [stream_starts(n, B, T, k) for k in range(per_stream + 1)]
    for k in range(per_stream - 1):
        assert torch.equal(a[k + 1], a[k] + T)
    assert torch.equal(a[per_stream], a[0])  # wrapped
    assert int(a[per_stream - 1].max()) + T <= n - 1  # the last window and its targets fit
    assert torch.equal(a[0], torch.arange(B) * span)


def test_carry_state_needs_the_sequence_objective(text_file, tmp_path, capsys):
    argv = ["train", "--text", text_file, "--steps", 2, "--out", tmp_path / "o", "--carry-state", "--objective", "last"]
    code, _, err = run([*argv, *TINY], capsys)
    assert code == 2 and "--carry-state" in err and "--objective seq" in err


def test_embedded_default_text():
    text = default_text()
    assert len(text) > 100_000 and "def " in text
    assert len(DEFAULT_MODULES) == 10


@pytest.mark.parametrize(
    "content,match",
    [
        pytest.param(None, "no such file", id="missing"),
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"abc\xff\xfedef", "not UTF-8", id="not-utf8"),
        pytest.param(b"abc", "too short", id="too-short"),
    ],
)
def test_bad_text(content, match, tmp_path, capsys):
    p = tmp_path / "t.txt"
    if content is not None:
        p.write_bytes(content)
    code, _, err = run(["train", "--text", p, "--steps", 1, "--out", tmp_path / "o", *TINY], capsys)
    assert code == 2 and match in err and err.startswith("error: ") and err.count("\n") == 1


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


@pytest.mark.parametrize("kind", ["hostile", "foreign", "corrupt", "text", "missing"])
def test_bad_checkpoints_are_refused(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "checkpoint.pt"
    if kind == "hostile":
        torch.save({"format": "fused_rnn.checkpoint/1", "model": Hostile()}, ck)
    elif kind == "foreign":
        torch.save({"a": 1}, ck)
    elif kind == "corrupt":
        ck.write_bytes(b"PK\x03\x04 this is not a zip archive")
    elif kind == "text":  # a text file given by mistake: not a torch file at all, nothing to do with code
        ck.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    code, _, err = run(["sample", "--checkpoint", ck, "--length", 3], capsys)
    assert code == 2 and err.startswith("error: checkpoint: ") and err.count("\n") == 1
    assert not (tmp_path / "HACKED").exists()  # weights_only: nothing ran
    expected = {"hostile": "could run code", "foreign": "not a fused_rnn checkpoint", "missing": "no such file"}
    expected["text"] = "is not a torch.save file (it starts with b'Firs')"
    assert expected.get(kind, "is damaged or truncated") in err


def test_resume_with_another_shape_is_refused(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--text", text_file, "--steps", 2, "--eval-every", 2, "--out", out, *TINY], capsys)[0] == 0
    argv = ["train", "--text", text_file, "--steps", 4, "--out", out, "--resume", *TINY, "--hidden", "48"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "hidden=32" in err and "hidden=48" in err


def test_checkpoint_that_contradicts_its_config_is_refused(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--text", text_file, "--steps", 2, "--eval-every", 2, "--out", out, *TINY], capsys)[0] == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    ck["config"]["hidden"] = 40  # the weights are still 32 wide
    torch.save(ck, out / "checkpoint.pt")
    code, _, err = run(["sample", "--checkpoint", out / "checkpoint.pt", "--length", 3], capsys)
    assert code == 2 and err.startswith("error: checkpoint: ") and "does not match" in err and err.count("\n") == 1


def test_unknown_prime_characters(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--text", text_file, "--steps", 2, "--eval-every", 2, "--out", out, *TINY], capsys)[0] == 0
    code, _, err = run(["sample", "--checkpoint", out / "checkpoint.pt", "--prime", "the ZQ"], capsys)
    assert code == 2 and "'QZ'" in err


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the torch path: faster here
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


def test_module_help():
    out = subprocess.run([sys.executable, "-m", "fused_rnn", "--help"], capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    assert all(cmd in out.stdout for cmd in ("train", "sample", "bench"))


def test_every_option_has_help(capsys):
    from fused_rnn.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("train", "sample"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--carry-state" in capsys.readouterr().out


def test_bench_forwards_its_arguments(capsys, monkeypatch):
    from fused_rnn.bench import runner

    monkeypatch.setattr(runner, "main", lambda argv: print("bench got", argv) or 3)
    code, stdout, _ = run(["bench", "--quick", "--out", "x"], capsys)
    assert code == 3 and "bench got ['--quick', '--out', 'x']" in stdout


def test_bench_help_names_the_subcommand(capsys):
    """The packaged benchmark's usage line says `fused-rnn bench`, and its options are listed."""
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fused-rnn bench ")
    assert all(opt in out for opt in ("--quick", "--out", "--precision", "--no-plot", "fused_rnn[plot]"))


def test_two_gloo_processes_match_one(text_file, tmp_path):
    """DDP over 2 CPU processes, each on half of every global batch, equals one process on all of it."""
    common = ["train", "--text", str(text_file), "--steps", "6", "--eval-every", "3", *TINY, "--device", "cpu"]
    one = subprocess.run(
        [sys.executable, "-m", "fused_rnn", *common, "--out", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "fused_rnn", *common, "--out", str(tmp_path / "two")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
        assert hb["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-4)
    wa = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
