"""Case "recurrence": `fused_recurrence` against `nn.RNN` with tied weights, forward and forward + backward.

`nn.RNN(H, H)` with weight_ih = weight_hh = W_h, bias_ih = 0, bias_hh = b_h and h0 = 0 computes
exactly h_t = tanh(W_h (h_{t-1} + x_t) + b_h), the recurrence of `fused_recurrence(inp, W_h, b_h)`.
Both are fed the same inp = relu(l_in(e(tokens))) (T, B, H) of a CharLoopModel. The check compares
hs and, with backward, d(inp), dW (against dW_ih + dW_hh) and db.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fused_rnn import CharLoopModel, fused_recurrence

from ..case import (
    FLOOR_COLUMN,
    NFAC,
    SHAPE_COLUMNS,
    VOCAB,
    Case,
    Column,
    Ctx,
    Speedup,
    backend_of,
    column,
    max_rel,
    product_points,
    speedup_column,
    worst_error,
)

FULL: Mapping[str, Sequence[int]] = dict(B=[32, 64, 128, 256], T=[64, 256], H=[128, 256, 512])
QUICK: Mapping[str, Sequence[int]] = dict(B=[8, 32], T=[16], H=[32, 64])


@dataclass
class State:
    """One point: inp (T, B, H), w (H, H), b (H,), the tied nn.RNN, h0 (1, B, H) = 0."""

    inp: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    rnn: torch.nn.RNN
    h0: torch.Tensor
    backward: bool


def tied_rnn(w: torch.Tensor, b: torch.Tensor) -> torch.nn.RNN:
    """nn.RNN computing exactly h_t = tanh(W (h_{t-1} + x_t) + b), for w (H, H) and b (H,)."""
    H = w.shape[0]
    rnn = torch.nn.RNN(H, H, nonlinearity="tanh").to(w.device, w.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w)
        rnn.weight_hh_l0.copy_(w)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.copy_(b)
    return rnn


def setup(shape: dict[str, int], ctx: Ctx, backward: bool = True) -> State:
    """inp = relu(l_in(e(tokens))) (T, B, H) of a fresh CharLoopModel, its W_h and b_h, the tied nn.RNN, h0 = 0."""
    B, T, H = shape["B"], shape["T"], shape["H"]
    model = CharLoopModel(VOCAB, NFAC, H).to(ctx.device, ctx.dtype)
    tokens = torch.randint(0, VOCAB, (T, B), device=ctx.device)
    with torch.no_grad():
        inp = F.relu(model.l_in(model.e(tokens)))
    w, b = model.l_hidden.weight.detach(), model.l_hidden.bias.detach()
    h0 = torch.zeros(1, B, H, device=ctx.device, dtype=ctx.dtype)
    return State(inp, w, b, tied_rnn(w, b), h0, backward)


def check(s: State, ctx: Ctx) -> dict:
    """The backend that runs, and the max rel diff against nn.RNN: hs, and with backward d(inp), dW, db."""
    backend, note = backend_of(s.inp)
    out: dict = dict(backend=backend)
    grad = s.backward
    x1, x2 = s.inp.clone().requires_grad_(grad), s.inp.clone().requires_grad_(grad)
    w1, b1 = s.w.clone().requires_grad_(grad), s.b.clone().requires_grad_(grad)
    hs1, hs2 = fused_recurrence(x1, w1, b1)[0], s.rnn(x2, s.h0)[0]
    out["max_rel_vs_nn_rnn"] = max_rel(hs1, hs2)
    if grad:
        g = torch.randn_like(hs1)
        dx1, dw1, db1 = torch.autograd.grad(hs1, (x1, w1, b1), g)
        params = (x2, s.rnn.weight_ih_l0, s.rnn.weight_hh_l0, s.rnn.bias_hh_l0)
        dx2, dwi, dwh, db2 = torch.autograd.grad(hs2, params, g)
        out["grad_max_rel_vs_nn_rnn"] = max(max_rel(dx1, dx2), max_rel(dw1, dwi + dwh), max_rel(db1, db2))
    if note:
        out["backend_note"] = note
    return out


def run(s: State, ctx: Ctx) -> dict:
    """Median ms of nn.RNN and fused_recurrence: forward (no grad), and with backward forward + backward."""
    r = {}
    with torch.no_grad():
        r["nn_rnn_fwd_ms"] = ctx.time_ms(lambda: s.rnn(s.inp, s.h0))
        r["fused_fwd_ms"] = ctx.time_ms(lambda: fused_recurrence(s.inp, s.w, s.b))
    if s.backward:
        x = s.inp.clone().requires_grad_()
        wg, bg = s.w.clone().requires_grad_(), s.b.clone().requires_grad_()
        g = torch.randn_like(s.inp)
        r["nn_rnn_fwdbwd_ms"] = ctx.time_ms(lambda: s.rnn(x, s.h0)[0].backward(g))
        r["fused_fwdbwd_ms"] = ctx.time_ms(lambda: fused_recurrence(x, wg, bg)[0].backward(g))
    T = s.inp.shape[0]
    r["fused_fwd_ms_per_step"] = r["fused_fwd_ms"] / T
    r["fused_fwd_us_per_step"] = 1e3 * r["fused_fwd_ms"] / T
    r["nn_rnn_fwd_us_per_step"] = 1e3 * r["nn_rnn_fwd_ms"] / T
    return r


def log(r: dict) -> str:
    """Progress text: the fused forward in ms, ms/step and µs/step."""
    return (
        f"fused fwd {r['fused_fwd_ms']:.3f} ms = {r['fused_fwd_ms_per_step']:.4f} ms/step "
        f"({r['fused_fwd_us_per_step']:.2f} µs/step)"
    )


FWD = Speedup("fwd_vs_nn_rnn", "nn_rnn_fwd_ms", "fused_fwd_ms", "forward over nn.RNN", geomean=True)
FWDBWD = Speedup("fwdbwd_vs_nn_rnn", "nn_rnn_fwdbwd_ms", "fused_fwdbwd_ms", "forward+backward over nn.RNN", True)

CASE = Case(
    name="recurrence",
    title="Recurrence: nn.RNN (tied weights) vs fused_recurrence",
    full=FULL,
    quick=QUICK,
    points=product_points,
    setup=setup,
    check=check,
    run=run,
    columns=(
        *SHAPE_COLUMNS,
        column("backend", "backend", "s"),
        Column("rel err", lambda r: f"{worst_error(r):.1e}"),
        column("nn.RNN fwd", "nn_rnn_fwd_ms"),
        column("fused fwd", "fused_fwd_ms"),
        speedup_column("x fwd", FWD),
        column("nn.RNN fwd+bwd", "nn_rnn_fwdbwd_ms"),
        column("fused fwd+bwd", "fused_fwdbwd_ms"),
        speedup_column("x fwd+bwd", FWDBWD),
        column("fused µs/step", "fused_fwd_us_per_step", ".2f"),
        FLOOR_COLUMN,
    ),
    speedups=(FWD, FWDBWD),
    per_step_floor=True,
    plots=((FWD.key, "recurrence forward"), (FWDBWD.key, "recurrence fwd+bwd")),
    log=log,
)
