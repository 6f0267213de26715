"""Plain-PyTorch truth: the Python-loop char model and the recurrence it runs.

Nothing here is fast; everything here is obviously right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CharLoopModel(nn.Module):
    """The classic character-level RNN, one Python iteration per character.

    ``h = 0; for c in cs: h = tanh(l_hidden(h + relu(l_in(e(c)))))``, then
    ``log_softmax(l_out(h))``.

    Args:
        vocab_size: number of distinct characters V.
        n_fac: embedding width F.
        n_hidden: hidden size H.
    """

    def __init__(self, vocab_size: int, n_fac: int, n_hidden: int) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.e = nn.Embedding(vocab_size, n_fac)
        self.l_in = nn.Linear(n_fac, n_hidden)
        self.l_hidden = nn.Linear(n_hidden, n_hidden)
        self.l_out = nn.Linear(n_hidden, vocab_size)

    def step(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """One character: state (B, H), indices (B,) -> next state (B, H)."""
        inp = F.relu(self.l_in(self.e(c)))
        return torch.tanh(self.l_hidden(h + inp))

    def forward(self, *cs: torch.Tensor) -> torch.Tensor:
        """T LongTensors of shape (B,) -> log-probabilities (B, V) of the next character."""
        if not cs:
            raise ValueError("cs: expected at least one (B,) tensor of character indices")
        w = self.l_hidden.weight
        h = torch.zeros(cs[0].shape[0], self.n_hidden, device=w.device, dtype=w.dtype)
        for c in cs:
            h = self.step(h, c)
        return F.log_softmax(self.l_out(h), dim=-1)

    def forward_sequence(
        self, tokens: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> log-probabilities (B, T, V) after every prefix, and h_n (B, H)."""
        w = self.l_hidden.weight
        h = torch.zeros(tokens.shape[0], self.n_hidden, device=w.device, dtype=w.dtype) if h0 is None else h0
        outs = []
        for t in range(tokens.shape[1]):
            h = self.step(h, tokens[:, t])
            outs.append(self.l_out(h))
        return F.log_softmax(torch.stack(outs, dim=1), dim=-1), h


def recurrence_reference(
    inp: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``hs[t] = tanh((hs[t-1] + inp[t]) @ weight.T + bias)``, one step at a time.

    Args:
        inp: (T, B, H) per-step input.
        weight: (H, H).
        bias: (H,) or None.
        h0: (B, H) or None for zeros.

    Returns:
        hs (T, B, H) and h_n (B, H), differentiable through autograd.
    """
    T, B, H = inp.shape
    h = inp.new_zeros(B, H) if h0 is None else h0
    hs = []
    for t in range(T):
        h = torch.tanh(F.linear(h + inp[t], weight, bias))
        hs.append(h)
    if not hs:
        return inp.new_empty(0, B, H), h
    return torch.stack(hs), h


def scan_reference(
    u: torch.Tensor,
    weight_hh: torch.Tensor,
    h0: torch.Tensor,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    relu: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input-projected recurrence, one step at a time: the torch path of `rnn_scan`.

    ``h_s = act(h_prev @ weight_hh.T + u[s])`` over s = 0..T-1 (T-1..0 when
    `reverse`), act = relu or tanh, h_prev = h0 at the first step. A row b with
    `lengths` runs only its steps s < lengths[b] and keeps its state at the others.

    Args:
        u: (T, B, H). weight_hh: (H, H). h0: (B, H). lengths: (B,) integers, on u's device, or None.

    Returns:
        hs (T, B, H), the state after every step (not zeroed past a row's length),
        and h_n (B, H), the last state; differentiable through autograd.
    """
    act = torch.relu if relu else torch.tanh
    T = u.shape[0]
    h = h0
    hs = []
    for i in range(T):
        s = T - 1 - i if reverse else i
        new = act(F.linear(h, weight_hh) + u[s])
        h = new if lengths is None else torch.where((lengths > s)[:, None], new, h)
        hs.append(h)
    if not hs:
        return u.new_empty(u.shape), h0.clone()
    return torch.stack(hs[::-1] if reverse else hs), h
