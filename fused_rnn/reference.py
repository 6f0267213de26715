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


def gated_scan_reference(
    cell: str,
    u: torch.Tensor,
    weight_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None = None,
    b_hn: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One LSTM or GRU layer and direction given its input half, one step at a time, in PyTorch's formulas.

    LSTM: ``a = u[s] + h_prev @ W_hh^T`` split i, f, g, o; ``c = sig(f) c_prev + sig(i) tanh(g)``,
    ``h = sig(o) tanh(c)``. GRU: u[s] split r, z, n; ``l = h_prev @ W_hn^T + b_hn``,
    ``r, z = sig(u_r + h_prev W_hr^T), sig(u_z + h_prev W_hz^T)``, ``n = tanh(u_n + r l)``,
    ``h = (1 - z) n + z h_prev``. Rows with `lengths` run only their steps s < lengths[b], as `scan_reference`.

    Args:
        cell: "lstm" or "gru". u: (T, B, G*H) with G = 4 or 3. weight_hh: (G*H, H). h0: (B, H).
        c0: (B, H), LSTM. b_hn: (H,), GRU. lengths: (B,) integers or None.

    Returns:
        hs (T, B, H), h_n (B, H) and c_n (B, H) (None for GRU); differentiable through autograd.
    """
    T = u.shape[0]
    H = h0.shape[-1]
    h, c = h0, c0
    hs = []
    for i in range(T):
        s = T - 1 - i if reverse else i
        if cell == "lstm":
            a = u[s] + F.linear(h, weight_hh)
            gi, gf, gg, go = a.split(H, dim=-1)
            c_new = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
            h_new = torch.sigmoid(go) * torch.tanh(c_new)
        else:
            ur, uz, un = u[s].split(H, dim=-1)
            wr, wz, wn = weight_hh.split(H, dim=0)
            r = torch.sigmoid(ur + F.linear(h, wr))
            z = torch.sigmoid(uz + F.linear(h, wz))
            n = torch.tanh(un + r * F.linear(h, wn, b_hn))
            h_new, c_new = (1 - z) * n + z * h, None
        if lengths is None:
            h, c = h_new, c_new
        else:
            valid = (lengths > s)[:, None]
            h = torch.where(valid, h_new, h)
            c = None if c_new is None else torch.where(valid, c_new, c)
        hs.append(h)
    if not hs:
        return u.new_empty(T, h0.shape[0], H), h0.clone(), None if c0 is None else c0.clone()
    return torch.stack(hs[::-1] if reverse else hs), h, c


# --------------------------------------------------------------------------------------------- sampling noise

_M32 = 0xFFFFFFFF
#: Philox4x32's round multipliers and Weyl key increments (triton/language/random.py, the uint32 branch).
_PHILOX_ROUND = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY = (0x9E3779B9, 0xBB67AE85)


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of a * b for a constant a < 2**32 and int64 b in [0, 2**32), exact in int64.

    The full product needs 64 unsigned bits, so b is multiplied by a's two 16-bit halves (< 2**48 each).
    """
    p1, p0 = (a >> 16) * b, (a & 0xFFFF) * b
    t = p1 + (p0 >> 16)
    return t >> 16, ((t & 0xFFFF) << 16) | (p0 & 0xFFFF)


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: int, k1: int, rounds: int = 10
) -> tuple[torch.Tensor, ...]:
    """Philox4x32-`rounds` of counters (c0, c1, c2, c3) (int64 tensors holding uint32 values) under key (k0, k1).

    The same function as Triton's `philox_impl` (uint32 branch), so equal counters and keys give
    equal words on either side. CPU tensors run it in numpy's uint64, whose products of two 32-bit
    words are exact (about 10x faster than int64 torch ops there); other devices in torch ops. Both
    give the same bits (tests/test_generate.py).
    """
    if all(c.device.type == "cpu" for c in (c0, c1, c2, c3)):
        return _philox4x32_numpy(c0, c1, c2, c3, k0, k1, rounds)
    return _philox4x32_torch(c0, c1, c2, c3, k0, k1, rounds)


def _philox4x32_numpy(c0, c1, c2, c3, k0: int, k1: int, rounds: int) -> tuple[torch.Tensor, ...]:
    import numpy as np

    cs = [np.ascontiguousarray(c.numpy()).astype(np.uint64) for c in (c0, c1, c2, c3)]
    c0, c1, c2, c3 = np.broadcast_arrays(*cs)
    m32, s32 = np.uint64(_M32), np.uint64(32)
    ra, rb = (np.uint64(r) for r in _PHILOX_ROUND)
    for _ in range(rounds):
        pb, pa = rb * c2, ra * c0  # < 2**64: exact
        c0, c1, c2, c3 = (pb >> s32) ^ c1 ^ np.uint64(k0), pb & m32, (pa >> s32) ^ c3 ^ np.uint64(k1), pa & m32
        k0, k1 = (k0 + _PHILOX_KEY[0]) & _M32, (k1 + _PHILOX_KEY[1]) & _M32
    return tuple(torch.from_numpy(c.astype(np.int64)) for c in (c0, c1, c2, c3))


def _philox4x32_torch(c0, c1, c2, c3, k0: int, k1: int, rounds: int) -> tuple[torch.Tensor, ...]:
    (ra, rb), (ka, kb) = _PHILOX_ROUND, _PHILOX_KEY
    for _ in range(rounds):
        hi_b, lo_b = _mulhilo32(rb, c2)
        hi_a, lo_a = _mulhilo32(ra, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + ka) & _M32, (k1 + kb) & _M32
    return c0, c1, c2, c3


def philox_uniform(seed: int, offset: torch.Tensor) -> torch.Tensor:
    """`tl.rand(seed, offset)` in PyTorch: float32 uniforms in [0, 1) for int64 offsets (any shape).

    As Triton: counters (offset's low and high 32 bits, 0, 0), key (seed's low and high 32 bits),
    the first word of Philox4x32-10, read as int32 x, then (x < 0 ? -x - 1 : x) * 4.6566127342e-10
    in float32.
    """
    lo, hi = offset & _M32, (offset >> 32) & _M32
    zero = torch.zeros_like(lo)
    return _uniform(philox4x32(lo, hi, zero, zero, seed & _M32, (seed >> 32) & _M32)[0])


def philox_uniform4(seed: int, offset: torch.Tensor) -> torch.Tensor:
    """`tl.rand4x(seed, offset)` in PyTorch, its four words stacked last: offset (...) -> (..., 4) float32."""
    lo, hi = offset & _M32, (offset >> 32) & _M32
    zero = torch.zeros_like(lo)
    words = philox4x32(lo, hi, zero, zero, seed & _M32, (seed >> 32) & _M32)
    return torch.stack([_uniform(x) for x in words], -1)


def _uniform(x: torch.Tensor) -> torch.Tensor:
    """Triton's uint_to_uniform_float of a uint32 word (held in int64)."""
    x = torch.where(x >= 2**31, x - 2**32, x)  # the word as int32
    x = torch.where(x < 0, -x - 1, x)  # in [0, 2**31)
    return x.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32, device=x.device)


def gumbel_offsets(streams: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The Philox counters of every (stream, step, group of 4 characters): stream * 2**32 + step * G + j, int64.

    streams (S,), steps (N,) -> (S, N, G), G = ceil(V / 4); word w of counter j is character 4j + w. The
    counter names the draw, not the launch that makes it, so every path and grid draws the same noise for
    a stream's step (step * G + j < 2**32 is the caller's).
    """
    groups = (vocab_size + 3) // 4
    j = torch.arange(groups, dtype=torch.int64, device=streams.device)
    return (streams.long()[:, None, None] << 32) + steps.long()[None, :, None] * groups + j


def gumbel_noise(seed: int, streams: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Gumbel(0, 1) noise -log(-log(u)) in float32 of the generation kernels' draws: (S, N, V).

    u: `philox_uniform4` of `gumbel_offsets`, the four words of counter j for characters 4j..4j+3.
    """
    u = philox_uniform4(seed, gumbel_offsets(streams, steps, vocab_size)).flatten(-2)[..., :vocab_size]
    return -torch.log(-torch.log(u))
