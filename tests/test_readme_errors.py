"""The README's bad-input block (`<!-- console:errors -->`) is what the commands print: each refusal, one line."""

import shlex

import pytest
import torch
from test_readme import console_block

import fused_rnn.train as T
from fused_rnn.cli import main
from fused_rnn.train import load_checkpoint

TINY = ["--steps", "2", "--eval-every", "2", "--quiet", "--device", "cpu"]


class Hostile:
    def __reduce__(self):
        import os

        return (os.system, ("touch HACKED",))


@pytest.fixture
def files(tmp_path, monkeypatch, capsys):
    """The files the block's commands name, made as the README describes them."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "runs/demo", *TINY]) == 0  # the default sizes: hidden=128, embed=42
    assert main(["train", "--out", "runs/first", *TINY]) == 0
    capsys.readouterr()
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    (tmp_path / "zeros.bin").write_bytes(b"\0" * 100_000)
    torch.save({"format": "fused_rnn.checkpoint/1", "model": Hostile()}, tmp_path / "hostile.pt")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    ck = tmp_path / "runs" / "demo" / "checkpoint.pt"
    raw = bytearray(ck.read_bytes())
    at = raw.find(load_checkpoint(ck)["model"]["l_hidden.weight"].numpy().tobytes())
    for i in range(at, at + 64):
        raw[i] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(raw))
    (tmp_path / "cut.pt").write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    monkeypatch.setattr(T, "available_memory", lambda device: int(22.2 * 2**30))  # as on the README's machine
    return tmp_path


def test_the_bad_input_block_is_what_the_commands_print(files, capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- console:errors -->\n```console\n(.*?)\n```", text, re.S).group(1).split("\n")
    assert console_block("errors")[0]  # the block exists and starts with a command
    pairs = [(block[i], block[i + 1]) for i in range(0, len(block), 2)]
    assert len(pairs) >= 15 and all(c.startswith("$ fused-rnn ") and e.startswith("error: ") for c, e in pairs)
    for command, want in pairs:
        argv = shlex.split(command[2:], comments=True)[1:]
        if argv[:1] == ["bench"] and torch.cuda.is_available():
            continue  # tf32x3 is allowed on a GPU
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (command, err)
        got = err.rstrip("\n")
        if "bytes)" in want:  # the checkpoint's size varies with the history it holds
            got, want = (re.sub(r"\(\d[\d,]* bytes\)", "(N bytes)", s) for s in (got, want))
        assert got == want, command
    assert not (files / "HACKED").exists()
