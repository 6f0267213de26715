"""`fused-rnn inspect`: its numbers (inspect.json) and figures (PNG) against float64 CharLoopModel, the command
line and bad input. The interactive page itself: tests/test_inspect_page.py."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fused_rnn.cli import main
from fused_rnn.data import Vocab
from fused_rnn.inspector import char_classes, inspect_checkpoint
from fused_rnn.models import FusedCharRNN
from fused_rnn.reference import CharLoopModel
from fused_rnn.train import TrainConfig, load_checkpoint, save_checkpoint

#: Quotes, digits, indentation and blank lines: every character class occurs.
TEXT = 'def f(x, n=10):\n    """Say "hi" 3 times."""\n    s = \'a\' + str(n * 42)\n    return [x, s]\n\n' * 4
H, EMBED, LENGTH, MAX_DISTANCE = 32, 8, 160, 12
FIGURES = ["cell.png", "unrolled.png", "hidden.png", "units.png", "surprisal.png", "gradients.png", "eigenvalues.png"]


def make_checkpoint(path: Path, text: str = TEXT) -> Path:
    """A random FusedCharRNN saved as `fused-rnn train` saves it; W_h scaled to a spectral radius above 1."""
    vocab = Vocab.from_text(text)
    model = FusedCharRNN(len(vocab), EMBED, H)
    with torch.no_grad():
        model.l_hidden.weight.mul_(2.2)  # gradients then fade slowly enough to measure far back
    opt = torch.optim.Adam(model.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, opt, vocab, TrainConfig(hidden=H, embed=EMBED), 7, [])
    return path


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """One inspect run on CPU (the Triton kernels in the interpreter under the test conftest)."""
    root = tmp_path_factory.mktemp("inspect")
    ck = make_checkpoint(root / "run" / "checkpoint.pt")
    out = root / "out"
    data = inspect_checkpoint(
        ck,
        TEXT,
        out,
        length=LENGTH,
        device="cpu",
        max_distance=MAX_DISTANCE,
        max_positions=40,
        write_json=True,
        write_png=True,
    )
    return ck, out, data


def float64_reference(ck: Path) -> tuple[CharLoopModel, Vocab]:
    ckpt = load_checkpoint(ck)
    vocab = Vocab(ckpt["vocab"])
    ref = CharLoopModel(len(vocab), EMBED, H)
    ref.load_state_dict(ckpt["model"])
    return ref.double(), vocab


def test_files_and_json(inspected):
    _, out, data = inspected
    for name in [*FIGURES, "index.html", "inspect.json"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    on_disk = json.loads((out / "inspect.json").read_text(encoding="utf-8"))
    assert on_disk["surprisal"] == data["surprisal"] and on_disk["grad_norms"] == data["grad_norms"]
    assert data["length"] == LENGTH and data["text"] == TEXT[:LENGTH]
    assert len(data["surprisal"]) == len(data["top3"]) == LENGTH - 1
    assert len(data["grad_norms"]) == MAX_DISTANCE + 1
    assert len(data["eigenvalues"]) == H and data["n_hidden"] == H and data["step"] == 7
    assert sorted(data["hidden"]["unit_order"]) == list(range(H))
    assert np.asarray(data["hidden"]["values"]).shape == (H, 100)
    v = data["vocab_size"]
    assert data["params"] == {"e": v * EMBED, "l_in": EMBED * H + H, "l_hidden": H * H + H, "l_out": H * v + v}
    classes = {m["class"] for m in data["units"]}
    assert {"quote", "in_quotes", "whitespace", "newline", "line_start", "digit"} <= classes
    assert data["backend"] in ("triton", "torch")


def test_surprisal_and_states_match_float64(inspected):
    ck, _, data = inspected
    ref, vocab = float64_reference(ck)
    toks = vocab.encode(TEXT[:LENGTH])
    with torch.no_grad():
        logp, _ = ref.forward_sequence(toks[None])  # (1, N, V): row t predicts c_{t+1}
        logp = logp[0]
        want = -logp[:-1].gather(1, toks[1:, None])[:, 0]
        np.testing.assert_allclose(data["surprisal"], want.numpy(), rtol=1e-4, atol=1e-5)
        top = logp[:-1].topk(3, dim=1)
        for t in range(LENGTH - 1):  # the guesses' probabilities (near-ties may swap the characters)
            got = data["top3"][t]
            np.testing.assert_allclose([p for _, p in got], top.values[t].exp().numpy(), rtol=1e-4, atol=1e-7)
            assert all(abs(p - logp[t, vocab.index[c]].exp().item()) < 1e-5 for c, p in got)
        # the hidden states behind the unrolled graph, the heatmap and the unit correlations
        h = torch.zeros(1, H, dtype=torch.float64)
        hs = []
        for c in toks:
            h = ref.step(h, c[None])
            hs.append(h[0])
        hs = torch.stack(hs).numpy()
    np.testing.assert_allclose(data["unrolled"]["h_norms"], np.linalg.norm(hs[:8], axis=1), rtol=1e-4)
    order = data["hidden"]["unit_order"]
    np.testing.assert_allclose(data["hidden"]["values"], hs[:100, order].T, atol=1e-4)
    feats = char_classes(TEXT[:LENGTH])
    for m in data["units"]:
        r = np.corrcoef(hs[:, m["unit"]], feats[m["class"]])[0, 1]
        assert m["correlation"] == pytest.approx(r, rel=1e-3, abs=1e-4), m
        all_r = np.array([np.corrcoef(hs[:, u], feats[m["class"]])[0, 1] for u in range(H)])
        assert abs(m["correlation"]) == pytest.approx(np.nanmax(np.abs(all_r)), rel=1e-3, abs=1e-4), m


def test_gradient_norms_match_float64_autograd(inspected):
    """grad_norms[k] = mean over s of ||d log p(c_{s+1}) / d h_{s-k}||, each h a retained leaf of CharLoopModel.step."""
    ck, _, data = inspected
    ref, vocab = float64_reference(ck)
    toks = vocab.encode(TEXT[:LENGTH])
    K = len(data["grad_norms"]) - 1
    ends = torch.tensor(data["grad_positions"])
    assert len(ends) == data["grad_positions_count"] > 10 and int(ends.min()) >= K and int(ends.max()) <= LENGTH - 2
    with torch.no_grad():
        h = torch.zeros(1, H, dtype=torch.float64)
        states = []
        for c in toks:
            h = ref.step(h, c[None])
            states.append(h[0])
        states = torch.stack(states)
    chain = [states[ends - K].clone().requires_grad_()]  # h_{s-K}, then h_{s-K+1} .. h_s
    for j in range(1, K + 1):
        chain.append(ref.step(chain[-1], toks[ends - K + j]))
        chain[-1].retain_grad()
    logp = F.log_softmax(ref.l_out(chain[-1]), dim=-1)
    logp.gather(1, toks[ends + 1][:, None]).sum().backward()
    want = [chain[K - k].grad.norm(dim=1).mean().item() for k in range(K + 1)]
    np.testing.assert_allclose(data["grad_norms"], want, rtol=1e-4)
    assert want[0] > 0 and want[-1] > 0


def test_spectral_radius_matches_float64(inspected):
    ck, _, data = inspected
    w = load_checkpoint(ck)["model"]["l_hidden.weight"].double().numpy()
    eig = np.linalg.eigvals(w)
    assert data["spectral_radius"] == pytest.approx(np.abs(eig).max(), rel=1e-9)
    got = np.array(data["eigenvalues"])
    assert sorted(np.hypot(got[:, 0], got[:, 1])) == pytest.approx(sorted(np.abs(eig)), rel=1e-9)
    assert data["spectral_radius"] > 1  # the fixture scaled W_h up


def test_char_classes():
    f = char_classes("a 'b'\n  x1")
    assert f["quote"].tolist() == [0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    assert f["in_quotes"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert f["line_start"].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert f["indent"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert f["column"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert f["digit"].tolist() == [0] * 9 + [1]
    assert f["whitespace"].tolist() == [0, 1, 0, 0, 0, 1, 1, 1, 0, 0]


def test_files_written_are_the_ones_asked_for(inspected, tmp_path):
    _, out, data = inspected
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", "inspect.json", *FIGURES])
    assert data["files"] == ["index.html", "inspect.json", *FIGURES] and data["figures"] == FIGURES
    page = (out / "index.html").read_text(encoding="utf-8")
    assert data["page_bytes"] == len(page.encode("utf-8"))
    assert not re.findall(r'src="[^"]*\.png"', page)  # the page stands alone: it shows no PNG


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_inspect_with_prime(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    out = tmp_path / "page"
    prime = TEXT[:48]
    code, stdout, err = run_cli(
        ["inspect", "--checkpoint", ck, "--prime", prime, "--out", out, "--device", "cpu", "--json"], capsys
    )
    assert code == 0, err
    assert f"wrote {out / 'index.html'}, one self-contained page" in stdout and "spectral radius" in stdout
    assert "and inspect.json" in stdout and "no step-0 weights" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "inspect.json"]
    data = json.loads((out / "inspect.json").read_text(encoding="utf-8"))
    assert data["text"] == prime and len(data["surprisal"]) == len(prime) - 1
    assert len(data["grad_norms"]) == len(prime) - 1  # K = N - 2 when the text is shorter than 64 + 2


def test_cli_length_cuts_the_text(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    argv = ["inspect", "--checkpoint", ck, "--text", text, "--length", 30, "--out", tmp_path / "o", "--device", "cpu"]
    argv.append("--json")
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "inspect.json").read_text(encoding="utf-8"))["text"] == TEXT[:30]


def test_cli_defaults_to_the_held_out_end_of_the_training_text(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    state = torch.load(ck, weights_only=True)
    state["config"]["text"] = str(text)  # as `fused-rnn train --text t.txt` records it
    torch.save(state, ck)
    argv = ["inspect", "--checkpoint", ck, "--length", 50, "--out", tmp_path / "o", "--device", "cpu", "--json"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "inspect.json").read_text(encoding="utf-8"))["text"] == TEXT[-50:]


def test_every_inspect_option_has_help(capsys):
    import argparse

    from fused_rnn.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["inspect"]._actions:
        assert action.help, f"inspect {action.option_strings} has no help text"
    with pytest.raises(SystemExit) as exc:
        main(["inspect", "--help"])
    assert exc.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case", ["missing-checkpoint", "foreign-checkpoint", "unknown-chars", "empty-text", "empty-prime"]
)
def test_bad_input(case, tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    src = ["--prime", TEXT[:20]]
    if case == "missing-checkpoint":
        ck = tmp_path / "nowhere.pt"
    elif case == "foreign-checkpoint":
        ck = tmp_path / "foreign.pt"
        torch.save({"a": 1}, ck)
    elif case == "unknown-chars":
        src = ["--prime", "def ZQé"]
    elif case == "empty-text":
        (tmp_path / "empty.txt").write_bytes(b"")
        src = ["--text", tmp_path / "empty.txt"]
    elif case == "empty-prime":
        src = ["--prime", ""]
    out = tmp_path / "o"
    code, stdout, err = run_cli(["inspect", "--checkpoint", ck, *src, "--out", out, "--device", "cpu"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = {
        "missing-checkpoint": "no such file",
        "foreign-checkpoint": "not a fused_rnn checkpoint",
        "unknown-chars": "'QZé'",
        "empty-text": "is empty",
        "empty-prime": "is empty",
    }[case]
    assert expected in err
    assert not out.exists() and stdout == ""


def test_without_matplotlib(tmp_path, capsys, monkeypatch):
    """The page needs no matplotlib; --png does, and says so in one line before any work."""
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, out, err = run_cli(
        ["inspect", "--checkpoint", ck, "--prime", "def f", "--out", tmp_path / "o", "--device", "cpu"], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["index.html"]
    code, _, err = run_cli(
        ["inspect", "--checkpoint", ck, "--prime", "def f", "--out", tmp_path / "o2", "--png"], capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and 'pip install "fused_rnn[plot]"' in err
    assert not (tmp_path / "o2").exists()


def test_hostile_outputs_and_weights_end_in_one_line(tmp_path, capsys):
    """A folder where index.html goes, and NaN weights: one error line, exit 2, no traceback."""
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "o" / "index.html").mkdir(parents=True)
    code, _, err = run_cli(["inspect", "--checkpoint", ck, "--prime", "def f", "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "index.html" in err, err
    state = torch.load(ck, weights_only=True)
    state["model"]["l_hidden.weight"][0, 0] = float("nan")
    del state["digest"]
    torch.save(state, ck)
    code, _, err = run_cli(["inspect", "--checkpoint", ck, "--prime", "def f", "--out", tmp_path / "o2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "non-finite weights" in err and "l_hidden.weight" in err, err
    assert not (tmp_path / "o2").exists()


def test_the_report_line_names_what_was_written(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "run" / "checkpoint.pt")
    argv = ["inspect", "--checkpoint", ck, "--prime", TEXT[:30], "--out", tmp_path / "o", "--device", "cpu", "--png"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"(and {len(FIGURES)} PNGs)" in out and "cell.png" not in out
