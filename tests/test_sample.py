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
