"""Generation for `FusedCharRNN.generate`: checks, the path choice, and the three paths.

    one launch   `generate_kernel`: every character of every stream in one kernel call (H <= 128,
                 V <= 256 where the gate's shared memory fits the card, see `one_launch_config`)
    per step     triton elsewhere: per character, `generate_draw_step_kernel` (projection, log-softmax,
                 top-k, Gumbel-max draw; V <= 256, 512 in half precision, else PyTorch ops) and one
                 recurrence step (the gather and `launch.forward`, T = 1)
    torch        plain PyTorch ops, the same draws: Gumbel noise from the same Philox counters
                 (`fused_rnn.reference.gumbel_noise`)

No path reads a tensor's values on the host inside its loop. The prime runs through `rnn_scan`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import launch
from .dispatch import SMEM_LIMIT, dot_precision, smem_limit
from .ops import BACKENDS, _choose_backend, resolve_backend, rnn_scan
from .reference import gumbel_noise

#: Streams per program of the generation kernels (the smallest tl.dot tile).
GEN_BLOCK_B = 16
#: Largest H and V `generate_kernel` runs (W_h^T and W_out^T on chip).
GEN_MAX_H, GEN_MAX_V = 128, 256
#: (BH, BV, dot kind) -> (warps, shared memory in bytes) of every `generate_kernel` config that builds
#: without spills in the compile gate (tests/compile_gate.py; the bytes are the most over its builds, which
#: its test checks). `one_launch_config` takes the smallest BH >= H, then BV >= V, that fits the card. Left
#: out for spilling (gate, Triton 3.6, 16 warps for the FMA dots from BH = 64, else 8): BH = 16 with
#: tensor-core dots (24 B - 2.6 KiB), the FMA dots at BH = 64 (8-32 B) and BH = 32, BV = 256 (8 B), and the
#: FMA dots at BH = 128, BV = 128 (1.4 KiB at 16 warps, 1.9 KiB at 8); those sizes run a larger config.
GEN_CONFIGS: dict[tuple[int, int, str], tuple[int, int]] = {
    (16, 128, "ieee"): (8, 19456),
    (16, 256, "ieee"): (8, 23552),
    (32, 128, "ieee"): (8, 31744),
    (128, 256, "ieee"): (16, 222208),
    (32, 128, "tf32"): (8, 29696),
    (32, 256, "tf32"): (8, 54272),
    (64, 128, "tf32"): (8, 58368),
    (64, 256, "tf32"): (8, 99328),
    (128, 128, "tf32"): (8, 140288),
    (128, 256, "tf32"): (8, 214016),
    (32, 128, "half"): (8, 19456),
    (32, 256, "half"): (8, 35840),
    (64, 128, "half"): (8, 33792),
    (64, 256, "half"): (8, 58368),
    (128, 128, "half"): (8, 74752),
    (128, 256, "half"): (8, 115712),
}
GEN_SHARED_BYTES = {k: v[1] for k, v in GEN_CONFIGS.items()}
#: (BV, dot kind) -> shared memory (bytes) of the `generate_draw_step_kernel` builds without spills
#: (BK = 64; 4 warps, 8 at BV = 512). A V no entry covers on the card draws in PyTorch ops (the half
#: BV = 1024 build spills; float32 BV >= 512 needs over 227 KiB, its K loop's loads multi-buffered).
DRAW_BK = 64
DRAW_CONFIGS: dict[tuple[int, str], int] = {
    (128, "ieee"): 74752,
    (256, "ieee"): 140288,
    (128, "tf32"): 74752,
    (256, "tf32"): 140288,
    (128, "half"): 21504,
    (256, "half"): 37888,
    (512, "half"): 70656,
}
#: Philox counters are stream * 2**32 + step * ceil(V / 4) + j: step * ceil(V / 4) + j must stay below 2**32.
COUNTER_LIMIT = 2**32


@dataclass(frozen=True)
class GenConfig:
    """`generate_kernel`'s blocks and warps (block_b streams per program)."""

    block_b: int
    block_h: int
    block_v: int
    num_warps: int
    dot_precision: str


def draw_warps(block_v: int) -> int:
    return 8 if block_v >= 512 else 4


def draw_block_v(V: int, k: str, capability: tuple[int, int] | None) -> int | None:
    """The draw-step kernel's BV for V on a card, or None: the draw runs in PyTorch ops."""
    fits = [bv for (bv, kk), smem in DRAW_CONFIGS.items() if kk == k and bv >= V and smem <= smem_limit(capability)]
    return min(fits) if fits else None


def kind(dtype: torch.dtype, precision: str) -> str:
    """The generation kernels' dot: "ieee", "tf32" or "half" (tf32x3 runs the IEEE dot here)."""
    if dtype != torch.float32:
        return "half"
    return "tf32" if precision == "tf32" else "ieee"


def one_launch_config(
    H: int, V: int, dtype: torch.dtype, precision: str, capability: tuple[int, int] | None = None
) -> GenConfig | None:
    """`generate_kernel`'s config for a model, or None where generation runs per step.

    The smallest gated config (`GEN_CONFIGS`) with BH >= H and BV >= V whose shared memory fits the
    card's per-block limit (`capability` None: the interpreter, sm_90's table).
    """
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return None
    k, limit = kind(dtype, precision), smem_limit(capability)
    for (bh, bv, kk), (warps, smem) in sorted(GEN_CONFIGS.items()):
        if kk == k and bh >= H and bv >= V and smem <= limit:
            return GenConfig(GEN_BLOCK_B, bh, bv, warps, "ieee" if k == "half" else k)
    return None


def all_gen_configs() -> list[tuple[tuple[int, int], torch.dtype, str, GenConfig]]:
    """Every (capability, dtype, precision, config) of `generate_kernel` a card can run: what the gate builds."""
    out = []
    for cap in SMEM_LIMIT:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for prec in ("ieee", "tf32") if dtype == torch.float32 else ("ieee",):
                for (bh, bv, k), (warps, smem) in sorted(GEN_CONFIGS.items()):
                    if k == kind(dtype, prec) and smem <= smem_limit(cap):
                        out.append((cap, dtype, prec, GenConfig(GEN_BLOCK_B, bh, bv, warps, prec)))
    return out


def all_draw_configs() -> list[tuple[tuple[int, int], torch.dtype, str, int]]:
    """Every (capability, dtype, precision, BV) of the draw-step kernel a card can run."""
    out = []
    for cap in SMEM_LIMIT:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for prec in ("ieee", "tf32") if dtype == torch.float32 else ("ieee",):
                for (bv, k), smem in sorted(DRAW_CONFIGS.items()):
                    if k == kind(dtype, prec) and smem <= smem_limit(cap):
                        out.append((cap, dtype, prec, bv))
    return out


# --------------------------------------------------------------------------------------------- checks


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_args(model, prime, length, temperature, top_k, seed, return_logp, backend) -> None:
    """Raise, naming the argument, before anything is allocated or launched."""
    from .models import check_tokens

    if not _is_int(length) or length < 0:
        raise ValueError(f"length: expected an integer >= 0, got {length!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature: expected a number >= 0, got {type(temperature).__name__}")
    if math.isnan(temperature) or temperature < 0 or math.isinf(temperature):
        raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), got {temperature}")
    if not _is_int(top_k) or top_k < 0:
        raise ValueError(f"top_k: expected an integer >= 0 (0 = every character), got {top_k!r}")
    if not _is_int(seed) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
    if not isinstance(return_logp, bool):
        raise TypeError(f"return_logp: expected a bool, got {type(return_logp).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    V = model.vocab_size
    check_tokens("prime", prime, V, 2, "(B, P)")
    if prime.shape[1] < 1:
        raise ValueError(f"prime: expected shape (B, P) with P >= 1 characters per stream, got {tuple(prime.shape)}")
    device = model.l_hidden.weight.device
    if prime.device != device:
        raise ValueError(f"prime: expected device {device} (the model's), got {prime.device}")
    groups = (V + 3) // 4
    if length * groups > COUNTER_LIMIT:
        raise ValueError(f"length: at most {COUNTER_LIMIT // groups} characters per call for vocab_size = {V}")
    if prime.shape[0] >= 2**31:
        raise ValueError(f"prime: at most 2**31 - 1 streams, got B = {prime.shape[0]}")


def inverse_temperature(temperature: float) -> float | None:
    """1 / temperature rounded to float32 (both paths scale by this very number); None: greedy.

    Temperature 0, or one so small that its inverse overflows float32, is greedy (the limit).
    """
    if temperature == 0 or 1.0 / temperature > 3.4028234663852886e38:
        return None
    return struct.unpack("f", struct.pack("f", 1.0 / temperature))[0]


# --------------------------------------------------------------------------------------------- paths


def choose_path(model, B: int, backend: str) -> tuple[str, GenConfig | None]:
    """("one_launch", config), ("steps", None) or ("torch", None) for a model and B streams.

    Reads devices, dtypes and shapes only (as `rnn_scan`'s backend choice).
    """
    w = model.l_hidden.weight
    probe = torch.empty((), device=w.device, dtype=w.dtype).expand(1, max(B, 1), w.shape[0])
    if _choose_backend(probe, backend) == "torch":
        return "torch", None
    prec = dot_precision(w.dtype, torch.get_float32_matmul_precision())
    cfg = one_launch_config(w.shape[0], model.vocab_size, w.dtype, prec, launch.device_key(w.device)[0])
    return ("one_launch", cfg) if cfg is not None else ("steps", None)


def _empty_tokens(B: int, L: int, device: torch.device) -> torch.Tensor:
    """(B, L) int64; -1 everywhere under launch.POISON, so that a token left unwritten shows."""
    out = torch.empty(B, L, dtype=torch.int64, device=device)
    return out.fill_(-1) if launch.POISON else out


def _empty_logp(B: int, L: int, V: int, device: torch.device) -> torch.Tensor:
    return launch._empty(torch.empty((), dtype=torch.float32, device=device), (B, L, V))


def table_of(model) -> torch.Tensor:
    """The input half of every character, relu(l_in(e.weight)) @ W_h^T + b_h: (V, H), as `recur` gathers it."""
    w = model.l_hidden.weight
    return F.linear(F.relu(model.l_in(model.e.weight)), w, model.l_hidden.bias)


def draw_torch(logits: torch.Tensor, noise: torch.Tensor | None, inv_temp: float | None, top_k: int) -> torch.Tensor:
    """The kernels' draw in PyTorch: logits (B, V), noise (B, V) Gumbel -> tokens (B,) int64.

    argmax(logits * inv_temp + noise) over the logits >= the k-th largest; greedy when inv_temp is None.
    """
    if inv_temp is None:
        return logits.argmax(-1)
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return (logits * torch.tensor(inv_temp, dtype=torch.float32, device=logits.device) + noise).argmax(-1)


def _noise_chunk(B: int, V: int, length: int) -> int:
    """Steps of Gumbel noise made at once by the PyTorch paths: about 2**20 values, at least one step."""
    return max(1, min(length, 2**20 // max(1, B * V)))


def _generate_torch(model, h, table, tokens, logp, step0, seed, inv_temp, top_k, step_fn) -> torch.Tensor:
    """The PyTorch draws, and `step_fn(h, u) -> h` for the recurrence: fills tokens (B, L) and logp;
    returns the state after the last token. Step i draws with the counters of step step0 + i."""
    B, L = tokens.shape
    w_out, b_out = model.l_out.weight, model.l_out.bias
    streams = torch.arange(B, device=h.device)
    chunk = _noise_chunk(B, model.vocab_size, L)
    noise = None
    for i in range(L):
        if inv_temp is not None and i % chunk == 0:
            steps = torch.arange(step0 + i, step0 + min(L, i + chunk), device=h.device)
            noise = gumbel_noise(seed, streams, steps, model.vocab_size)  # (B, chunk, V)
        logits = F.linear(h, w_out.to(h.dtype), b_out.to(h.dtype))
        if logp is not None:
            logp[:, i] = F.log_softmax(logits, -1)
        tok = draw_torch(logits, None if noise is None else noise[:, i % chunk].to(h.dtype), inv_temp, top_k)
        tokens[:, i] = tok
        h = step_fn(h, F.embedding(tok, table))
    return h


class _Run:
    """One generation request after its checks: the path, the model's tensors, and the state to continue from."""

    def __init__(self, model, prime, temperature, top_k, seed, return_logp, backend):
        self.model, self.seed, self.top_k, self.return_logp = model, seed, top_k, return_logp
        self.B, self.V = prime.shape[0], model.vocab_size
        self.w = model.l_hidden.weight
        self.path, self.cfg = choose_path(model, self.B, backend)
        self.inv_temp = inverse_temperature(float(temperature))
        self.step = 0  # the counter index of the next step
        if self.B == 0:
            return
        self.table = table_of(model)
        backend = "torch" if self.path == "torch" else "triton"
        _, self.h = rnn_scan(F.embedding(prime.t(), self.table), self.w, backend=backend)

    def next(self, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stream's next `length` tokens (B, length) and log-probabilities (or None); the state carries on."""
        B, V, w = self.B, self.V, self.w
        if B == 0 or length == 0:
            tokens = torch.empty(B, length, dtype=torch.int64, device=w.device)
            return tokens, (torch.empty(B, length, V, device=w.device) if self.return_logp else None)
        tokens = _empty_tokens(B, length, w.device)
        logp = _empty_logp(B, length, V, w.device) if self.return_logp else None
        if self.path == "torch":
            cdt = torch.float64 if w.dtype == torch.float64 else torch.float32
            wf, tf = w.to(cdt), self.table.to(cdt)
            lp = None if logp is None else torch.empty(B, length, V, dtype=cdt, device=w.device)
            step = lambda h, u: torch.tanh(F.linear(h, wf) + u)  # noqa: E731 (scan_reference's step)
            args = (tokens, lp, self.step, self.seed, self.inv_temp, self.top_k, step)
            self.h = _generate_torch(self.model, self.h.to(cdt), tf, *args)
            if logp is not None:
                logp.copy_(lp)
        else:
            self.h = _generate_triton(self, tokens, logp)
        self.step += length
        return tokens, logp


def generate(
    model,
    prime: torch.Tensor,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    return_logp: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`FusedCharRNN.generate`: B streams continue their primes (B, P) by `length` characters each.

    Returns tokens (B, length) int64, and with `return_logp` also the (B, length, V) float32
    log-probabilities each token was drawn from (before temperature and top-k).
    """
    check_args(model, prime, length, temperature, top_k, seed, return_logp, backend)
    with torch.no_grad():
        tokens, logp = _Run(model, prime, temperature, top_k, seed, return_logp, backend).next(length)
    return (tokens, logp) if return_logp else tokens


def generate_chunks(
    model,
    prime: torch.Tensor,
    length: int,
    chunk: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    backend: str = "auto",
) -> Iterator[torch.Tensor]:
    """`generate`'s tokens in pieces of `chunk` steps (B, <= chunk), each as soon as it is made.

    The state and the draws' counters carry on from piece to piece, so the pieces joined are
    `generate(model, prime, length, ...)` (float32: exactly). One launch per piece on the one-launch path.
    """
    check_args(model, prime, length, temperature, top_k, seed, False, backend)
    if not _is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk: expected an integer >= 1, got {chunk!r}")
    with torch.no_grad():
        run = _Run(model, prime, temperature, top_k, seed, False, backend)

    def pieces() -> Iterator[torch.Tensor]:
        for start in range(0, length, chunk):
            with torch.no_grad():
                yield run.next(min(chunk, length - start))[0]

    return pieces()


def _generate_triton(run: _Run, tokens: torch.Tensor, logp: torch.Tensor | None) -> torch.Tensor:
    """The kernels' paths: fills tokens and logp, returns the state after the last token."""
    K, model, w, h = launch.K, run.model, run.w, run.h.contiguous()
    B, L = tokens.shape
    V, H = run.V, model.n_hidden
    wot = model.l_out.weight.t().contiguous()  # (H, V)
    bo = model.l_out.bias.contiguous()
    seed_t = torch.tensor([run.seed], dtype=torch.int64, device=w.device)
    inv_temp, top_k = run.inv_temp, run.top_k
    flags = dict(SAMPLE=inv_temp is not None, HAS_TOP_K=0 < top_k < V, RETURN_LOGP=logp is not None)
    args = (L, run.step, B, H, V, 1.0 if inv_temp is None else inv_temp, max(top_k, 1))
    logp_arg = tokens if logp is None else logp  # a pointer the kernels never touch without RETURN_LOGP
    with launch._guard(w.device):
        if run.path == "one_launch":
            cfg = run.cfg
            hn = launch._empty(h)  # NaN under launch.POISON: the chunked tests see an unwritten state
            K.generate_kernel[(math.ceil(B / cfg.block_b),)](
                run.table.contiguous(), w.t().contiguous(), wot, bo, h, seed_t, tokens, logp_arg, hn, *args,
                BB=cfg.block_b, BH=cfg.block_h, BV=cfg.block_v, DOT_PRECISION=cfg.dot_precision, **flags,
                num_warps=cfg.num_warps,
            )  # fmt: skip
            return hn
        _, scan_cfg = resolve_backend(torch.empty((), device=w.device, dtype=w.dtype).expand(1, B, H), "triton")

        wt = w.t().contiguous()  # W^T once for the whole call, not once per step

        def step(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # the recurrence, T = 1, on the kernels
            return launch.forward(u[None].contiguous(), w, h, None, False, False, scan_cfg, wt=wt)[1]

        k = kind(w.dtype, dot_precision(w.dtype, torch.get_float32_matmul_precision()))
        bv = draw_block_v(V, k, launch.device_key(w.device)[0])
        if bv is None:  # no draw kernel for this V on this card: the draw in PyTorch ops
            return _generate_torch(model, h, run.table, tokens, logp, run.step, run.seed, inv_temp, top_k, step)
        meta = dict(BB=GEN_BLOCK_B, BK=DRAW_BK, BV=bv, DOT_PRECISION="ieee" if k == "half" else k)
        meta.update(flags, num_warps=draw_warps(bv))
        grid = (math.ceil(B / GEN_BLOCK_B),)
        for i in range(L):
            K.generate_draw_step_kernel[grid](h, wot, bo, seed_t, tokens, logp_arg, i, *args, **meta)
            h = step(h, F.embedding(tokens[:, i], run.table))
    return h
