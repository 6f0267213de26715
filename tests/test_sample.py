"""Sampling draws from softmax(logp / temperature), over the top-k when asked, and nothing else."""

import pytest
import torch

from fused_rnn.sample import next_token, token_probs


def _expected(logp: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """float64 softmax(logp / temperature), restricted to the top_k largest entries (0: all)."""
    z = logp.double() / temperature
    if top_k:
        keep = torch.zeros_like(z, dtype=torch.bool)
        keep[z.argsort(descending=True)[:top_k]] = True
        z = z.masked_fill(~keep, float("-inf"))
    return torch.softmax(z, -1)


@pytest.mark.parametrize("temperature", [0.3, 0.8, 1.0, 2.5])
@pytest.mark.parametrize("top_k", [0, 1, 5, 64])
def test_token_probs_are_softmax_of_logp_over_temperature(temperature, top_k):
    logp = torch.log_softmax(torch.randn(64) * 3, -1)
    got = token_probs(logp, temperature, top_k)
    torch.testing.assert_close(got.double(), _expected(logp, temperature, top_k), rtol=1e-5, atol=1e-7)
    assert int((got > 0).sum()) == (top_k or 64)


def test_next_token_frequencies_match_the_distribution():
    """20,000 seeded draws: each frequency within 5 sigma of softmax(logp / T).

    Applying T twice (softmax(logp / T**2)) moves the largest probability from 0.86 to 0.98,
    over 50 sigma away.
    """
    logp = torch.log_softmax(torch.arange(5.0), -1)
    temperature, n = 0.5, 20_000
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([next_token(logp, temperature, 0, g) for _ in range(n)]), minlength=5)
    p = _expected(logp, temperature, 0)
    sigma = (p * (1 - p) / n).sqrt()
    assert ((counts.double() / n - p).abs() <= 5 * sigma + 1e-12).all(), (counts / n, p)


def test_temperature_zero_is_greedy():
    logp = torch.log_softmax(torch.randn(40), -1)
    g = torch.Generator().manual_seed(0)
    assert next_token(logp, 0.0, 0, g) == int(logp.argmax())


# --------------------------------------------------------------------------------------------- fused-rnn sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from fused_rnn.cli import main

    text = tmp_path_factory.mktemp("text") / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 60, encoding="utf-8")
    out = tmp_path_factory.mktemp("run")
    tiny = ["--hidden", "32", "--embed", "8", "--seq-len", "16", "--batch-size", "8", "--quiet"]
    assert main(["train", "--text", str(text), "--steps", "5", "--eval-every", "5", "--out", str(out), *tiny]) == 0
    return str(out / "checkpoint.pt")


def test_streamed_pieces_join_to_one_generate_call(checkpoint):
    """Chunking does not change the text: 150 characters in pieces of 64 and of 7 are the same text."""
    from fused_rnn.sample import stream_sample

    texts = []
    for chunk in (64, 7, 150):
        prime, pieces = stream_sample(checkpoint, "the ", 150, 1.0, 0, 3, "cpu", streams=2, chunk=chunk)
        got = list(pieces)
        assert [len(p[0]) for p in got] == [min(chunk, 150 - s) for s in range(0, 150, chunk)]
        texts.append([prime + "".join(p[i] for p in got) for i in range(2)])
    assert texts[0] == texts[1] == texts[2]
    assert texts[0][0] != texts[0][1]  # two streams, two texts


def test_streams_print_in_blocks_and_stream_one_is_the_single_stream(checkpoint, capsys):
    from fused_rnn.cli import main

    base = ["sample", "--checkpoint", checkpoint, "--prime", "the ", "--length", "40", "--seed", "5"]
    assert main(base) == 0
    single = capsys.readouterr().out
    assert main([*base, "--streams", "3"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("--- stream ")[1:]
    assert [b.split(" ---\n")[0] for b in blocks] == ["1 of 3", "2 of 3", "3 of 3"]
    texts = [b.split(" ---\n", 1)[1] for b in blocks]
    assert texts[0] == single and all(t.startswith("the ") and len(t) == 45 for t in texts)
    assert main([*base, "--streams", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --streams: must be at least 1")


@pytest.mark.parametrize("streams", [1, 2])
def test_an_interrupt_leaves_what_was_made_printed(checkpoint, monkeypatch, streams):
    """Ctrl-C after the first piece: its 64 characters are already printed (one stream) or printed in the blocks."""
    import io

    import fused_rnn.generate as G
    from fused_rnn.sample import print_sample

    calls, orig = [], G._Run.next

    def interrupted(self, length):
        calls.append(length)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(self, length)

    monkeypatch.setattr(G._Run, "next", interrupted)
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        print_sample(checkpoint, "the ", 200, 1.0, 0, 0, "cpu", streams=streams, out=out)
    text = out.getvalue()
    if streams == 1:
        assert text.startswith("the ") and len(text) == 4 + 64
    else:
        blocks = text.split("--- stream ")[1:]
        assert len(blocks) == 2 and all(len(b.split(" ---\n", 1)[1]) == 4 + 64 + 1 for b in blocks)
