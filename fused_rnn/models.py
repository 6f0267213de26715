"""`FusedCharRNN`: the drop-in for `CharLoopModel` with the recurrence in one fused op."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import BACKENDS, _host_readable, rnn_scan


def check_tokens(name: str, tokens: torch.Tensor, vocab_size: int, ndim: int, shape: str) -> None:
    """Raise before any kernel runs when `tokens` is not an integer tensor of indices in [0, vocab_size).

    The range is checked only where reading the values costs no device sync and no graph
    break: eager, on the CPU. Elsewhere the gather's own bounds check applies (CUDA: a
    device-side assert, as in nn.Embedding).
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name}: expected an integer tensor of shape {shape}, got {type(tokens).__name__}")
    if tokens.dim() != ndim:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer (long) tensor, got {tokens.dtype}")
    if tokens.numel() and _host_readable(tokens):
        lo, hi = torch.aminmax(tokens)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name}: character index {bad} is outside [0, {vocab_size}) for vocab_size={vocab_size}")


class FusedCharRNN(nn.Module):
    """Character RNN with `CharLoopModel`'s constructor, submodules and state_dict.

    The whole input half runs once for the vocabulary:
    ``table = relu(l_in(e.weight)) @ W_h^T + b_h`` (V, H), gathered for all T*B
    tokens in one indexing op, so that the recurrence is `rnn_scan`'s
    ``h_t = tanh(h_{t-1} @ W_h^T + table[c_t])``, the same cell as CharLoopModel's
    ``tanh(W_h (h_{t-1} + relu(l_in(e(c_t)))) + b_h)``.

    Args:
        vocab_size: V. n_fac: embedding width. n_hidden: H.
        backend: passed to `fused_recurrence` ("auto", "triton" or "torch").
    """

    def __init__(self, vocab_size: int, n_fac: int, n_hidden: int, *, backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.n_hidden = n_hidden
        self.backend = backend
        self.e = nn.Embedding(vocab_size, n_fac)
        self.l_in = nn.Linear(n_fac, n_hidden)
        self.l_hidden = nn.Linear(n_hidden, n_hidden)
        self.l_out = nn.Linear(n_hidden, vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.e.num_embeddings

    def recur(self, tokens: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> hidden states hs (T, B, H) and h_n (B, H)."""
        check_tokens("tokens", tokens, self.vocab_size, 2, "(B, T)")
        w_h = self.l_hidden.weight
        table = F.linear(F.relu(self.l_in(self.e.weight)), w_h, self.l_hidden.bias)  # (V, H)
        u = F.embedding(tokens.t(), table)  # (T, B, H)
        return rnn_scan(u, w_h, h0, backend=self.backend)

    def forward_sequence(
        self, tokens: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> log-probabilities (B, T, V) at every position, and h_n (B, H).

        Pass h_n back as `h0` (detached) to carry the state across batches.
        """
        hs, hn = self.recur(tokens, h0)
        return F.log_softmax(self.l_out(hs.transpose(0, 1)), dim=-1), hn

    def forward(self, *cs: torch.Tensor) -> torch.Tensor:
        """T LongTensors of shape (B,) -> log-probabilities (B, V) of the next character."""
        if not cs:
            raise ValueError("cs: expected at least one (B,) tensor of character indices")
        for i, c in enumerate(cs):
            if not isinstance(c, torch.Tensor) or c.dim() != 1 or c.shape != cs[0].shape:
                got = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
                raise ValueError(f"cs[{i}]: expected shape (B,) = {tuple(cs[0].shape)} like cs[0], got {got}")
        _, hn = self.recur(torch.stack(cs, dim=1))
        return F.log_softmax(self.l_out(hn), dim=-1)

    def generate(
        self,
        prime: torch.Tensor,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        return_logp: bool = False,
        backend: str = "auto",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Continue B primes (B, P) by `length` characters each: tokens (B, length) int64.

        Each stream's prime runs through `rnn_scan`; then every character is drawn from
        softmax(logp / temperature) over the top_k likeliest (0: all; ties at the k-th all kept) by
        the Gumbel-max trick, with noise from Philox keyed by (seed, stream, step): the same seed gives
        the same text on every path and grid (up to float32 ties). temperature 0 is greedy.
        With `return_logp`, also the (B, length, V) float32 log-probabilities each token was drawn
        from (before temperature and top-k). On the triton backend the whole loop is one kernel launch
        for H <= 128 and V <= 256 (where the card's shared memory holds both matrices), else one draw
        launch and one recurrence step per character; no path syncs with the host inside its loop.
        Bad arguments raise, naming the argument, before anything runs.
        """
        from .generate import generate

        return generate(
            self, prime, length, temperature=temperature, top_k=top_k, seed=seed,
            return_logp=return_logp, backend=backend,
        )  # fmt: skip
