"""Cases "rnn", "lstm" and "gru": `FusedRNN` / `FusedLSTM` / `FusedGRU` against `torch.nn.RNN` / `nn.LSTM` /
`nn.GRU` with the same weights, forward and forward + backward. One mechanism: `make_case(cell)`; the text
below says nn.RNN for all three.

Every (B, T, H) of the grid (input size I = H) runs four variants of a plain `nn.RNN(H, H, ...)` with
its own random init, loaded into `FusedRNN` with `load_state_dict`:

* "1 layer" and "2 layers": untied weights, unidirectional;
* "bidir": one bidirectional layer;
* "packed": one layer fed a PackedSequence of ragged lengths (uniform in [T/4, T], one row at T,
  packed with enforce_sorted=False): cuDNN's packed path for nn.RNN, a padded batch with per-row
  lengths for FusedRNN. The same row also times the padded (dense) input of the same maximum
  length T on both, so "packed / padded" says what the ragged packing costs each of them.

The main timings of a row (`nn_rnn_fwd_ms`, `fused_fwd_ms`, ...) are those of its variant's input
(the PackedSequence for "packed"); the geometric means run over every variant. The check compares,
on the same input and h0, the outputs, h_n and the gradients with respect to the input, h0 and
every parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from fused_rnn import FusedGRU, FusedLSTM, FusedRNN
from fused_rnn.gated_ops import triton_reason as gated_reason

from ..case import SHAPE_COLUMNS, Case, Column, Ctx, Speedup, backend_of, column, max_rel, speedup_column, worst_error

#: Axes rnn_B, rnn_T, rnn_H (their own: not overridden by --B / --T / --H); the input size is H.
FULL: Mapping[str, Sequence[int]] = dict(rnn_B=[32, 128], rnn_T=[64, 256], rnn_H=[128, 256, 512])
QUICK: Mapping[str, Sequence[int]] = dict(rnn_B=[8], rnn_T=[16], rnn_H=[32])

#: name -> (num_layers, directions, packed): the variants of every (B, T, H), in table order.
VARIANTS: Mapping[str, tuple[int, int, int]] = {
    "1 layer": (1, 1, 0),
    "2 layers": (2, 1, 0),
    "bidir": (1, 2, 0),
    "packed": (1, 1, 1),
}


def points(grid: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """(B, T, H, layers, dirs, packed) for every rnn_H (outer), rnn_T, rnn_B and variant (inner)."""
    return [
        dict(B=B, T=T, H=H, layers=L, dirs=D, packed=P)
        for H in grid["rnn_H"]
        for T in grid["rnn_T"]
        for B in grid["rnn_B"]
        for L, D, P in VARIANTS.values()
    ]


def variant(row: Mapping[str, object]) -> str:
    """The variant name of a row (or shape), from its layers / dirs / packed."""
    key = (row["layers"], row["dirs"], row["packed"])
    return next(name for name, v in VARIANTS.items() if v == key)


#: cell -> (the nn class, the fused class, its name in the table)
CELLS: Mapping[str, tuple[type, type, str]] = {
    "rnn": (torch.nn.RNN, FusedRNN, "nn.RNN"),
    "lstm": (torch.nn.LSTM, FusedLSTM, "nn.LSTM"),
    "gru": (torch.nn.GRU, FusedGRU, "nn.GRU"),
}


@dataclass
class State:
    """One point.

    ref / fused: nn.RNN(H, H, layers, bidirectional) and FusedRNN with its weights.
    x: (T, B, H) dense input; h0: (dirs * layers, B, H).
    lengths: (B,) int64 on the CPU for "packed", else None; packed: x packed by lengths (enforce_sorted=False).
    """

    ref: torch.nn.Module
    fused: torch.nn.Module
    x: torch.Tensor
    h0: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    lengths: torch.Tensor | None
    packed: PackedSequence | None
    cell: str = "rnn"
    note: str | None = None


def setup(shape: dict[str, int], ctx: Ctx, cell: str = "rnn") -> State:
    """nn.RNN(H, H) with its own init, FusedRNN loaded with its state_dict, x (T, B, H), h0 and the ragged lengths.

    FusedLSTM / FusedGRU get backend="triton" where their kernels run this point (else PyTorch's op, and a note).
    """
    B, T, H, L, D = shape["B"], shape["T"], shape["H"], shape["layers"], shape["dirs"]
    ref_cls, fused_cls, _ = CELLS[cell]
    note, backend = None, "auto"
    if cell != "rnn":
        note = gated_reason(B, H, ctx.dtype, torch.device(ctx.device))
        backend = "auto" if note else "triton"
    ref = ref_cls(H, H, num_layers=L, bidirectional=D == 2).to(ctx.device, ctx.dtype)
    fused = fused_cls(H, H, num_layers=L, bidirectional=D == 2, backend=backend).to(ctx.device, ctx.dtype)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, device=ctx.device, dtype=ctx.dtype)
    h0 = torch.randn(D * L, B, H, device=ctx.device, dtype=ctx.dtype)
    if cell == "lstm":
        h0 = (h0, torch.randn(D * L, B, H, device=ctx.device, dtype=ctx.dtype))
    lengths = packed = None
    if shape["packed"]:
        lengths = torch.randint(max(1, T // 4), T + 1, (B,))
        lengths[torch.randint(B, ())] = T  # the maximum length is T: the padded batch is x itself
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    return State(ref, fused, x, h0, lengths, packed, cell, note)


def _leaf_input(s: State, padded: bool = False) -> torch.Tensor | PackedSequence:
    """The point's input (the PackedSequence for "packed" unless padded) with a fresh leaf tensor that requires grad."""
    if s.packed is None or padded:
        return s.x.detach().clone().requires_grad_()
    p = s.packed
    return PackedSequence(p.data.detach().clone().requires_grad_(), p.batch_sizes, p.sorted_indices, p.unsorted_indices)


def _data(t: torch.Tensor | PackedSequence) -> torch.Tensor:
    """The tensor of an output or input: a PackedSequence's data (N, D*H), else the tensor itself."""
    return t.data if isinstance(t, PackedSequence) else t


def _states(h: torch.Tensor | tuple) -> tuple[torch.Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


def _leaf_h0(s: State):
    return tuple(h.clone().requires_grad_() for h in s.h0) if s.cell == "lstm" else s.h0.clone().requires_grad_()


def check(s: State, ctx: Ctx) -> dict:
    """The backend FusedRNN runs, and its max rel diffs against nn.RNN on the same input and h0.

    Output (T, B, D*H) (or the packed data (N, D*H)) and h_n (D*L, B, H); gradients (for random
    cotangents of both) with respect to the input, h0 and every parameter; the parameter with the
    largest gradient difference is named in "param_grad_worst".
    """
    T, B, H = s.x.shape
    c = s.cell
    if c == "rnn":
        backend, note = backend_of(torch.empty(T, B, H, device=s.x.device, dtype=s.x.dtype))
    else:
        backend, note = ("torch", s.note) if s.note else ("triton", None)
    r: dict = dict(backend=backend)
    names = [n for n, _ in s.ref.named_parameters()]
    fused_params = dict(s.fused.named_parameters())
    ref_params = dict(s.ref.named_parameters())
    inp1, inp2 = _leaf_input(s), _leaf_input(s)
    h1, h2 = _leaf_h0(s), _leaf_h0(s)
    out1, hn1 = s.fused(inp1, h1)
    out2, hn2 = s.ref(inp2, h2)
    o1, o2 = _data(out1), _data(out2)
    r[f"max_rel_vs_nn_{c}"] = max_rel(o1, o2)
    r[f"hn_max_rel_vs_nn_{c}"] = max(max_rel(a, b) for a, b in zip(_states(hn1), _states(hn2), strict=True))
    g = torch.randn_like(o2)
    gh = tuple(torch.randn_like(h) for h in _states(hn2))
    n_h = len(gh)
    grads1 = torch.autograd.grad(
        (o1, *_states(hn1)), (_data(inp1), *_states(h1), *(fused_params[n] for n in names)), (g, *gh)
    )
    grads2 = torch.autograd.grad(
        (o2, *_states(hn2)), (_data(inp2), *_states(h2), *(ref_params[n] for n in names)), (g, *gh)
    )
    r[f"input_grad_max_rel_vs_nn_{c}"] = max_rel(grads1[0], grads2[0])
    h_pairs = zip(grads1[1 : 1 + n_h], grads2[1 : 1 + n_h], strict=True)
    r[f"h0_grad_max_rel_vs_nn_{c}"] = max(max_rel(a, b) for a, b in h_pairs)
    per_param = {n: max_rel(a, b) for n, a, b in zip(names, grads1[1 + n_h :], grads2[1 + n_h :], strict=True)}
    worst = max(per_param, key=lambda n: per_param[n])
    r[f"param_grad_max_rel_vs_nn_{c}"] = per_param[worst]
    r["param_grad_worst"] = worst
    if note:
        r["backend_note"] = note
    return r


def _fwd(m: torch.nn.Module, inp: torch.Tensor | PackedSequence, h0: torch.Tensor) -> Callable[[], object]:
    """The forward m(inp, h0): inp (T, B, H) or a PackedSequence, h0 (D*L, B, H)."""
    return lambda: m(inp, h0)


def _fwdbwd(m: torch.nn.Module, inp: torch.Tensor | PackedSequence, h0) -> Callable[[], None]:
    """Forward, then backward of the output and h_n (and c_n) with fixed random cotangents (grads accumulate)."""
    out, hn = m(inp, h0)
    g, gh = torch.randn_like(_data(out)), tuple(torch.randn_like(h) for h in _states(hn))

    def step() -> None:
        o, h = m(inp, h0)
        torch.autograd.backward((_data(o), *_states(h)), (g, *gh))

    return step


def run(s: State, ctx: Ctx) -> dict:
    """Median ms of nn.RNN and FusedRNN on the variant's input: forward (no grad), forward + backward.

    "packed" rows also time the padded input x (T, B, H) on both ("*_padded_*_ms") and give the
    ratios "*_packed_over_padded_*" and "fill" = sum(lengths) / (B T).
    """
    r: dict = {}
    nn_ = f"nn_{s.cell}"
    inputs = [("", _leaf_input(s))] + ([("_padded", _leaf_input(s, padded=True))] if s.packed is not None else [])
    h0 = _leaf_h0(s)
    for tag, inp in inputs:
        with torch.no_grad():
            r[f"{nn_}{tag}_fwd_ms"] = ctx.time_ms(_fwd(s.ref, inp, s.h0))
            r[f"fused{tag}_fwd_ms"] = ctx.time_ms(_fwd(s.fused, inp, s.h0))
        r[f"{nn_}{tag}_fwdbwd_ms"] = ctx.time_ms(_fwdbwd(s.ref, inp, h0))
        r[f"fused{tag}_fwdbwd_ms"] = ctx.time_ms(_fwdbwd(s.fused, inp, h0))
    if s.lengths is not None:
        T, B = s.x.shape[:2]
        r["fill"] = s.lengths.sum().item() / (B * T)
        for who in (nn_, "fused"):
            for what in ("fwd", "fwdbwd"):
                r[f"{who}_packed_over_padded_{what}"] = r[f"{who}_{what}_ms"] / r[f"{who}_padded_{what}_ms"]
    return r


def _ratios(who: str) -> Callable[[dict], str]:
    """Cell text "fwd / fwd+bwd" of the packed-over-padded ratios of `who` ("nn_rnn" or "fused"); — elsewhere."""

    def cell(r: dict) -> str:
        if f"{who}_packed_over_padded_fwd" not in r:
            return "—"
        return f"{r[f'{who}_packed_over_padded_fwd']:.2f} / {r[f'{who}_packed_over_padded_fwdbwd']:.2f}"

    return cell


def make_case(cell: str) -> Case:
    """The case of one cell: "rnn" (FusedRNN vs nn.RNN), "lstm" or "gru"."""
    _, fused_cls, label = CELLS[cell]
    fused_name = fused_cls.__name__
    nn_ = f"nn_{cell}"

    def log(r: dict) -> str:
        """Progress text: the variant, and for "packed" the packed-over-padded forward ratios of both."""
        text = variant(r)
        if "fill" in r:
            text += (
                f" (fill {r['fill']:.2f}): packed/padded fwd {label} {r[f'{nn_}_packed_over_padded_fwd']:.2f}, "
                f"{fused_name} {r['fused_packed_over_padded_fwd']:.2f}"
            )
        return text

    #: Over every variant, "packed" (nn's packed path) included.
    fwd = Speedup(
        f"{cell}_fwd_vs_{nn_}",
        f"{nn_}_fwd_ms",
        "fused_fwd_ms",
        f"{fused_name} forward over {label} (all variants)",
        True,
    )
    fwdbwd = Speedup(
        f"{cell}_fwdbwd_vs_{nn_}", f"{nn_}_fwdbwd_ms", "fused_fwdbwd_ms",
        f"{fused_name} fwd+bwd over {label} (all variants)", True,
    )  # fmt: skip
    return Case(
        name=cell,
        title=(
            f"Module: {label} vs {fused_name} (same weights, I = H; packed: ragged PackedSequence, "
            "packed / padded = its time over the padded batch of the same max length)"
        ),
        full=FULL,
        quick=QUICK,
        points=points,
        setup=lambda shape, ctx: setup(shape, ctx, cell),
        check=check,
        run=run,
        columns=(
            *SHAPE_COLUMNS,
            Column("variant", variant),
            column("backend", "backend", "s"),
            Column("rel err", lambda r: f"{worst_error(r):.1e}"),
            column(f"{label} fwd", f"{nn_}_fwd_ms"),
            column("fused fwd", "fused_fwd_ms"),
            speedup_column("x fwd", fwd),
            column(f"{label} fwd+bwd", f"{nn_}_fwdbwd_ms"),
            column("fused fwd+bwd", "fused_fwdbwd_ms"),
            speedup_column("x fwd+bwd", fwdbwd),
            Column("fill", lambda r: f"{r['fill']:.2f}" if "fill" in r else "—"),
            Column(f"packed/padded {label} (fwd / fwd+bwd)", _ratios(nn_)),
            Column("packed/padded fused (fwd / fwd+bwd)", _ratios("fused")),
        ),
        speedups=(fwd, fwdbwd),
        log=log,
    )


CASE = make_case("rnn")
LSTM_CASE = make_case("lstm")
GRU_CASE = make_case("gru")
FWD, FWDBWD = CASE.speedups
