"""Case "model": the Python-loop `CharLoopModel` against `FusedCharRNN` with the same weights.

Both map T index tensors (B,) to log-probabilities (B, V) of the next character. Timed: the
many-to-one forward `model(*cs)` (no grad), and one training step (forward, NLL loss, backward).
The check compares the forward outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fused_rnn import CharLoopModel, FusedCharRNN

from ..case import (
    NFAC,
    SHAPE_COLUMNS,
    VOCAB,
    Case,
    Column,
    Ctx,
    Speedup,
    column,
    max_rel,
    product_points,
    speedup_column,
)
from .recurrence import FULL, QUICK


@dataclass
class State:
    """One point: the two models, T tensors cs of indices (B,), and targets (B,)."""

    ref: CharLoopModel
    fused: FusedCharRNN
    cs: tuple[torch.Tensor, ...]
    target: torch.Tensor


def setup(shape: dict[str, int], ctx: Ctx) -> State:
    """A CharLoopModel, a FusedCharRNN loaded with its weights, random characters cs and targets."""
    B, T, H = shape["B"], shape["T"], shape["H"]
    ref = CharLoopModel(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    fused = FusedCharRNN(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    fused.load_state_dict(ref.state_dict())
    cs = torch.randint(0, VOCAB, (T, B), device=ctx.device).unbind(0)
    target = torch.randint(0, VOCAB, (B,), device=ctx.device)
    return State(ref, fused, cs, target)


def check(s: State, ctx: Ctx) -> dict:
    """Max rel diff of the fused model's log-probabilities (B, V) against CharLoopModel's."""
    with torch.no_grad():
        out_ref, out_fused = s.ref(*s.cs), s.fused(*s.cs)
    return dict(model_max_rel_vs_reference=max_rel(out_fused, out_ref))


def run(s: State, ctx: Ctx) -> dict:
    """Median ms of both models: forward (no grad), and a training step (forward, NLL loss, backward)."""

    def train_step(m: torch.nn.Module) -> Callable[[], None]:
        return lambda: F.nll_loss(m(*s.cs).float(), s.target).backward()

    r = {}
    with torch.no_grad():
        r["reference_fwd_ms"] = ctx.time_ms(lambda: s.ref(*s.cs))
        r["fused_model_fwd_ms"] = ctx.time_ms(lambda: s.fused(*s.cs))
    r["reference_train_ms"] = ctx.time_ms(train_step(s.ref))
    r["fused_train_ms"] = ctx.time_ms(train_step(s.fused))
    return r


FWD = Speedup("fwd_vs_reference", "reference_fwd_ms", "fused_model_fwd_ms", "model forward over CharLoopModel")
TRAIN = Speedup(
    "train_vs_reference", "reference_train_ms", "fused_train_ms", "training step over CharLoopModel", geomean=True
)

CASE = Case(
    name="model",
    title="Model: CharLoopModel vs FusedCharRNN (forward; training step = forward + NLL + backward)",
    full=FULL,
    quick=QUICK,
    points=product_points,
    setup=setup,
    check=check,
    run=run,
    columns=(
        *SHAPE_COLUMNS,
        Column("rel err", lambda r: f"{r['model_max_rel_vs_reference']:.1e}"),
        column("reference fwd", "reference_fwd_ms"),
        column("fused fwd", "fused_model_fwd_ms"),
        speedup_column("x fwd", FWD),
        column("reference train", "reference_train_ms"),
        column("fused train", "fused_train_ms"),
        speedup_column("x train", TRAIN),
    ),
    speedups=(FWD, TRAIN),
)
