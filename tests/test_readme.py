"""The README's deterministic console examples are what the commands print today.

The seeded 300-step training losses and the seeded samples were made on CPython 3.11.7 with
torch 2.13.0 on the CPU, from the embedded default text; elsewhere the text or the float
rounding differs, and the test says so and skips.
"""

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

import fused_rnn.launch
from fused_rnn.cli import main
from fused_rnn.data import default_text

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT_CHARS = 360_127  # the embedded default text on CPython 3.11.7, as the README says


def console_block(name: str) -> tuple[list[str], list[str]]:
    """The command (argv after `fused-rnn`) and output lines of the console block under `<!-- console:name -->`."""
    m = re.search(rf"<!-- console:{name} -->\n```console\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    assert m, f"README has no console block {name!r}"
    first, *out = m.group(1).split("\n")
    assert first.startswith("$ fused-rnn "), first
    return shlex.split(first[2:], comments=True)[1:], out


@pytest.fixture(scope="module")
def same_setup():
    if sys.version_info[:3] != (3, 11, 7) or len(default_text()) != TEXT_CHARS:
        pytest.skip("the README's examples were made on CPython 3.11.7's standard-library text")
    if not torch.__version__.startswith("2.13.0") or torch.cuda.is_available():
        pytest.skip("the README's examples were made with torch 2.13.0 on the CPU")


def test_seeded_training_losses_and_sample_match_the_readme(same_setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the README ran without TRITON_INTERPRET, so on the PyTorch path: so does this test (the interpreter
    # gives the same figures, about 20x slower)
    monkeypatch.setattr(fused_rnn.launch, "unavailable_reason", lambda device: "as in the README: no interpreter")
    argv, want = console_block("train300")
    assert main([*argv, "--device", "cpu"]) == 0
    got = capsys.readouterr().out.splitlines()
    deterministic = [line for line in want if line.startswith(("step ", "final:"))]
    assert len(deterministic) == 4
    assert [line for line in got if line.startswith(("step ", "final:"))] == deterministic
    assert any(line.startswith("training speed:") for line in got)

    for name in ("sample", "streams"):  # the seeded sample, and three streams (the first is the sample's start)
        argv, want = console_block(name)
        assert main([*argv, "--device", "cpu"]) == 0
        assert capsys.readouterr().out.rstrip("\n").split("\n") == want
