"""Case "generation": characters per second of sampling, three ways, for B streams of N characters.

    one launch      `FusedCharRNN.generate` (on CUDA with H <= 128: one kernel launch for all N
                    characters; elsewhere its per-step path, or the PyTorch path on the CPU)
    per-step loop   the loop `fused-rnn sample` ran before `generate`: per character one
                    `forward_sequence` call (T = 1, the fused recurrence) and a `torch.multinomial`
                    draw on the device (no host sync here; the old CLI also read each token back)
    CharLoopModel   the Python-loop reference: per character `step`, `l_out`, log-softmax, multinomial

All three sample at temperature 1 from the same weights. The check: `generate`'s log-probabilities
(return_logp) against the same model in float64, teacher-forced on the drawn tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fused_rnn import CharLoopModel, FusedCharRNN
from fused_rnn.generate import choose_path

from ..case import NFAC, VOCAB, Case, Column, Ctx, Speedup, column, max_rel, speedup_column

#: Axes gen_B (streams), gen_H and gen_N (characters per stream); not overridden by --B / --T / --H.
FULL: Mapping[str, Sequence[int]] = dict(gen_B=[1, 64], gen_H=[128, 512], gen_N=[512])
QUICK: Mapping[str, Sequence[int]] = dict(gen_B=[1, 4], gen_H=[32], gen_N=[16])
#: Prime length of every stream.
PRIME = 8


def points(grid: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """(B, T = N characters, H) for every gen_H (outer), gen_N and gen_B (inner)."""
    return [dict(B=B, T=N, H=H) for H in grid["gen_H"] for N in grid["gen_N"] for B in grid["gen_B"]]


@dataclass
class State:
    ref: CharLoopModel
    fused: FusedCharRNN
    prime: torch.Tensor  # (B, PRIME)
    n: int


def setup(shape: dict[str, int], ctx: Ctx) -> Any:
    """A CharLoopModel, a FusedCharRNN with its weights, and B random primes."""
    ref = CharLoopModel(VOCAB, NFAC, shape["H"]).to(ctx.device, ctx.dtype)
    fused = FusedCharRNN(VOCAB, NFAC, shape["H"]).to(ctx.device, ctx.dtype)
    fused.load_state_dict(ref.state_dict())
    prime = torch.randint(0, VOCAB, (shape["B"], PRIME), device=ctx.device)
    return State(ref, fused, prime, shape["T"])


def check(s: State, ctx: Ctx) -> dict:
    """The path `generate` takes, and its log-probabilities against float64, teacher-forced."""
    path = choose_path(s.fused, s.prime.shape[0], "auto")[0]
    tokens, logp = s.fused.generate(s.prime, s.n, seed=0, return_logp=True)
    m64 = copy.deepcopy(s.fused).cpu().double()
    with torch.no_grad():
        ref, _ = m64.forward_sequence(torch.cat([s.prime, tokens], 1)[:, :-1].cpu())
    return dict(path=path, gen_logp_max_rel_vs_float64=max_rel(logp.cpu(), ref[:, PRIME - 1 :]))


def _per_step_loop(model: FusedCharRNN, prime: torch.Tensor, n: int) -> torch.Tensor:
    logp, h = model.forward_sequence(prime)
    tok = torch.multinomial(logp[:, -1].float().exp(), 1)  # (B, 1)
    out = [tok]
    for _ in range(n - 1):
        logp, h = model.forward_sequence(tok, h)
        tok = torch.multinomial(logp[:, -1].float().exp(), 1)
        out.append(tok)
    return torch.cat(out, 1)


def _char_loop(model: CharLoopModel, prime: torch.Tensor, n: int) -> torch.Tensor:
    logp, h = model.forward_sequence(prime)
    tok = torch.multinomial(logp[:, -1].float().exp(), 1)[:, 0]
    out = [tok]
    for _ in range(n - 1):
        h = model.step(h, tok)
        tok = torch.multinomial(F.log_softmax(model.l_out(h), -1).float().exp(), 1)[:, 0]
        out.append(tok)
    return torch.stack(out, 1)


def run(s: State, ctx: Ctx) -> dict:
    """Median ms of the three ways to generate N characters per stream (prime included), and chars/s."""
    r = {}
    with torch.no_grad():
        r["one_launch_ms"] = ctx.time_ms(lambda: s.fused.generate(s.prime, s.n, seed=0))
        r["per_step_loop_ms"] = ctx.time_ms(lambda: _per_step_loop(s.fused, s.prime, s.n))
        r["char_loop_ms"] = ctx.time_ms(lambda: _char_loop(s.ref, s.prime, s.n))
    chars = s.prime.shape[0] * s.n
    for k in ("one_launch", "per_step_loop", "char_loop"):
        r[f"{k}_chars_per_s"] = chars / (r[f"{k}_ms"] * 1e-3)
    r["one_launch_us_per_step"] = 1e3 * r["one_launch_ms"] / s.n
    return r


def log(r: dict) -> str:
    return (
        f"{r['path']}: {r['one_launch_chars_per_s']:,.0f} chars/s "
        f"(per-step loop {r['per_step_loop_chars_per_s']:,.0f}, CharLoopModel {r['char_loop_chars_per_s']:,.0f})"
    )


OVER_LOOP = Speedup("gen_vs_per_step_loop", "per_step_loop_ms", "one_launch_ms", "generate over the per-step loop")
OVER_REF = Speedup("gen_vs_char_loop", "char_loop_ms", "one_launch_ms", "generate over the CharLoopModel loop")

CASE = Case(
    name="generation",
    title="Generation: characters per second, generate vs the per-step loop vs CharLoopModel",
    full=FULL,
    quick=QUICK,
    points=points,
    setup=setup,
    check=check,
    run=run,
    columns=(
        column("B", "B", "d"),
        column("N", "T", "d"),
        column("H", "H", "d"),
        column("path", "path", "s"),
        Column("rel err", lambda r: f"{r['gen_logp_max_rel_vs_float64']:.1e}"),
        column("generate chars/s", "one_launch_chars_per_s", ",.0f"),
        column("per-step loop chars/s", "per_step_loop_chars_per_s", ",.0f"),
        column("CharLoopModel chars/s", "char_loop_chars_per_s", ",.0f"),
        speedup_column("x loop", OVER_LOOP),
        speedup_column("x ref", OVER_REF),
        column("generate µs/char-step", "one_launch_us_per_step", ".2f"),
    ),
    speedups=(OVER_LOOP, OVER_REF),
    plots=((OVER_LOOP.key, "generate over the per-step loop"), (OVER_REF.key, "generate over the CharLoopModel loop")),
    log=log,
)
