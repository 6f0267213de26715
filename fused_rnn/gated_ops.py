"""`lstm_scan` and `gru_scan`: one LSTM / GRU layer and direction given its input half, on the fused kernels.

The kernels (`kernels/gated_recurrent.py`) run only when asked for with ``backend="triton"``, while they are
proven in the interpreter and by the compile gate but not yet on a GPU; ``"auto"`` and ``"torch"`` run
`fused_rnn.reference.gated_scan_reference`. Two modes (`gated_launch`): one program holding every gate's W_hh
(small H), or the split mode, programs owning 16 hidden units each, meeting at a grid barrier between steps where
the whole grid fits the card (`FUSED_RNN_GRID_BARRIER=1`), else one launch per step. The backward is the matching
kernel plus one GEMM for dW_hh over the stored gate values (deterministic, no atomics on weights). Per step the
forward keeps h, LSTM's c, and four H-wide float32 gate values: (2 or 1) * T * B * H elements of the input dtype
plus 4 * T * B * H float32.
"""

from __future__ import annotations

import torch

from . import launch
from .dispatch import dot_kind, dot_precision, padded
from .ops import BACKENDS, _autocast_dtype, _check_lengths, _check_tensor, _valid_steps
from .reference import gated_scan_reference

CELLS = {"lstm": (0, 4), "gru": (1, 3)}  # name -> (kernel CELL, gates G)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GATED_BLOCK_B = 16
#: (backward, dot kind, BH) -> warps per program: per entry the fewest loop instructions among the warp counts
#: that spill nowhere (2, 4, 8 and 16 were built by the compile gate for every card and class; NOTES 16). A BH
#: missing for a kind has no spill-free build: float32 IEEE dots at BH = 64 spill at every count.
GATED_WARPS = {
    (False, "ieee", 16): 4, (False, "ieee", 32): 4,
    (False, "tf32", 16): 8, (False, "tf32", 32): 8, (False, "tf32", 64): 8,
    (False, "half", 16): 8, (False, "half", 32): 8, (False, "half", 64): 16,
    (True, "ieee", 16): 8, (True, "ieee", 32): 4,
    (True, "tf32", 16): 8, (True, "tf32", 32): 8, (True, "tf32", 64): 8,
    (True, "half", 16): 8, (True, "half", 32): 8, (True, "half", 64): 8,
}  # fmt: skip
#: (BH, dot kind) -> shared memory of the larger of the two kernels, bytes: the compile gate's measurement
#: (tests/test_compile_gate.py checks this table against it); a card runs a BH whose entry fits its limit
GATED_SHARED_BYTES = {
    (16, "half"): 12288, (32, "half"): 33792, (64, "half"): 82944,
    (16, "ieee"): 23552, (32, "ieee"): 56320,
    (16, "tf32"): 20480, (32, "tf32"): 56320, (64, "tf32"): 144384,
}  # fmt: skip
#: the largest padded H of a single-program build; past it (and where that build does not fit) the split mode runs
MAX_BLOCK_H = 64
#: Split mode: programs own GATED_BLOCK_N hidden units each, all gates of them (kernels/gated_recurrent.py).
GATED_BLOCK_N = 16
#: the padded H of every split build
SPLIT_BLOCK_H = (64, 128, 256, 512, 1024)
#: (backward, persistent, dot kind, BK) -> warps per program of the split kernels: the step kernels (persistent
#: False) and the grid-barrier ones. Tensor-core dots cut their reduction into one slice per warp (split_k). Per
#: entry the fewest instructions among the warp counts (4, 8, 16) that spill nowhere, on every card, cell and
#: class the compile gate builds (NOTES 17); an entry missing has no spill-free build (float32 IEEE's persistent
#: forward at BK 512 spills at every count), so that BK runs its step kernels only.
GATED_SPLIT_WARPS = {
    (False, False, "ieee", 64): 8,
    (False, False, "ieee", 128): 16,
    (False, False, "ieee", 256): 16,
    (False, False, "ieee", 512): 16,
    (False, False, "tf32", 64): 4,
    (False, False, "tf32", 128): 8,
    (False, False, "tf32", 256): 8,
    (False, False, "tf32", 512): 8,
    (False, False, "half", 128): 8,
    (False, False, "half", 256): 8,
    (False, False, "half", 512): 8,
    (False, False, "half", 1024): 8,
    (False, True, "ieee", 64): 8,
    (False, True, "ieee", 128): 8,
    (False, True, "tf32", 64): 4,
    (False, True, "tf32", 128): 8,
    (False, True, "tf32", 256): 8,
    (False, True, "tf32", 512): 8,
    (False, True, "half", 128): 8,
    (False, True, "half", 256): 8,
    (False, True, "half", 512): 8,
    (False, True, "half", 1024): 8,
    (True, False, "ieee", 64): 16,
    (True, False, "ieee", 128): 8,
    (True, False, "ieee", 256): 16,
    (True, False, "ieee", 512): 8,
    (True, False, "tf32", 64): 4,
    (True, False, "tf32", 128): 8,
    (True, False, "tf32", 256): 8,
    (True, False, "tf32", 512): 16,
    (True, False, "half", 128): 8,
    (True, False, "half", 256): 8,
    (True, False, "half", 512): 4,
    (True, False, "half", 1024): 4,
    (True, True, "ieee", 64): 8,
    (True, True, "ieee", 128): 16,
    (True, True, "ieee", 256): 16,
    (True, True, "tf32", 64): 4,
    (True, True, "tf32", 128): 8,
    (True, True, "tf32", 256): 8,
    (True, True, "tf32", 512): 8,
    (True, True, "half", 128): 4,
    (True, True, "half", 256): 8,
    (True, True, "half", 512): 8,
}  # fmt: skip
#: The kernels (keys as GATED_WARPS's / GATED_SPLIT_WARPS's) launched with `maxnreg = max_registers(warps)`: left
#: to its own cap ptxas spills 8-24 B of them in some class at every count; with the whole register file they
#: build clean (NOTES 17).
GATED_MAXNREG = {(False, "tf32", 32)}
GATED_SPLIT_MAXNREG = {
    (False, True, "half", 512),
    (True, True, "ieee", 128),
    (True, True, "ieee", 256),
}  # fmt: skip
#: GATED_SPLIT_WARPS's keys -> shared memory (bytes) of that kernel, the most the compile gate measured over
#: cells, cards and classes: a card runs a split kernel whose entry fits its limit
GATED_SPLIT_SHARED_BYTES = {
    (False, False, "ieee", 64): 21504,
    (False, False, "ieee", 128): 41984,
    (False, False, "ieee", 256): 82944,
    (False, False, "ieee", 512): 164864,
    (False, False, "tf32", 64): 4096,
    (False, False, "tf32", 128): 9216,
    (False, False, "tf32", 256): 17408,
    (False, False, "tf32", 512): 33792,
    (False, False, "half", 128): 9216,
    (False, False, "half", 256): 9216,
    (False, False, "half", 512): 9216,
    (False, False, "half", 1024): 17408,
    (False, True, "ieee", 64): 21504,
    (False, True, "ieee", 128): 41984,
    (False, True, "tf32", 64): 20480,
    (False, True, "tf32", 128): 41984,
    (False, True, "tf32", 256): 82944,
    (False, True, "tf32", 512): 164864,
    (False, True, "half", 128): 25600,
    (False, True, "half", 256): 41984,
    (False, True, "half", 512): 74752,
    (False, True, "half", 1024): 148480,
    (True, False, "ieee", 64): 9216,
    (True, False, "ieee", 128): 17408,
    (True, False, "ieee", 256): 33792,
    (True, False, "ieee", 512): 33792,
    (True, False, "tf32", 64): 4096,
    (True, False, "tf32", 128): 9216,
    (True, False, "tf32", 256): 17408,
    (True, False, "tf32", 512): 17408,
    (True, False, "half", 128): 9216,
    (True, False, "half", 256): 17408,
    (True, False, "half", 512): 17408,
    (True, False, "half", 1024): 17408,
    (True, True, "ieee", 64): 21504,
    (True, True, "ieee", 128): 41984,
    (True, True, "ieee", 256): 82944,
    (True, True, "tf32", 64): 20480,
    (True, True, "tf32", 128): 41984,
    (True, True, "tf32", 256): 74752,
    (True, True, "tf32", 512): 148480,
    (True, True, "half", 128): 25600,
    (True, True, "half", 256): 50176,
    (True, True, "half", 512): 99328,
}  # fmt: skip


def gated_warps(backward: bool, dtype: torch.dtype, prec: str, block_h: int) -> int:
    """Warps per program of the single-program forward or backward gated kernel for this dtype, precision and BH."""
    return GATED_WARPS[backward, dot_kind(dtype, prec), block_h]


def _single_fits(capability: tuple[int, int] | None, dtype: torch.dtype, prec: str, block_h: int) -> bool:
    """Whether the gate built this single-program (dtype, precision, BH) spill-free and it fits the card's shared
    memory (a card outside the gate's table gets the smallest limit, as the Elman dispatcher does)."""
    from .dispatch import smem_limit

    key = (block_h, dot_kind(dtype, prec))
    built = all((bwd, key[1], block_h) in GATED_WARPS for bwd in (False, True))
    return built and GATED_SHARED_BYTES.get(key, 1 << 40) <= smem_limit(capability)


def _split_fits(
    capability: tuple[int, int] | None, dtype: torch.dtype, prec: str, block_h: int, backward: bool, persistent: bool
) -> bool:
    """As `_single_fits`, for one split kernel: the forward or backward, step or persistent (grid-barrier) one."""
    from .dispatch import smem_limit

    key = (backward, persistent, dot_kind(dtype, prec), block_h)
    return key in GATED_SPLIT_WARPS and GATED_SPLIT_SHARED_BYTES.get(key, 1 << 40) <= smem_limit(capability)


def gated_launch(
    H: int, dtype: torch.dtype, prec: str, capability: tuple[int, int] | None, backward: bool = False
) -> launch.GatedLaunch | None:
    """The forward's (or `backward`'s) launch for hidden size H: one program where both directions' builds fit the
    card, else the split mode where both directions' step kernels do, with this direction's persistent
    (grid-barrier) kernel where it built clean and fits (num_warps_persistent 0 where not); None when neither
    mode fits. `capability` None: the interpreter, which takes sm_90's table."""
    bh = padded(H)
    kind = dot_kind(dtype, prec)
    if bh <= MAX_BLOCK_H and _single_fits(capability, dtype, prec, bh):
        maxnreg = ("step",) if (backward, kind, bh) in GATED_MAXNREG else ()
        return launch.GatedLaunch("single", GATED_BLOCK_B, bh, prec, gated_warps(backward, dtype, prec, bh),
                                  maxnreg=maxnreg)  # fmt: skip
    if bh in SPLIT_BLOCK_H and all(_split_fits(capability, dtype, prec, bh, bwd, False) for bwd in (False, True)):
        persistent = _split_fits(capability, dtype, prec, bh, backward, True)
        maxnreg = tuple(name for name, pers in (("step", False), ("persistent", True))
                        if (backward, pers, kind, bh) in GATED_SPLIT_MAXNREG and (persistent or not pers))  # fmt: skip
        return launch.GatedLaunch(
            "split", GATED_BLOCK_B, bh, prec, GATED_SPLIT_WARPS[backward, False, kind, bh], GATED_BLOCK_N,
            GATED_SPLIT_WARPS[backward, True, kind, bh] if persistent else 0, split_k=kind != "ieee", maxnreg=maxnreg,
        )  # fmt: skip
    return None


def all_gated_configs() -> list[tuple[tuple[int, int], torch.dtype, str, launch.GatedLaunch, launch.GatedLaunch]]:
    """(capability, dtype, dot precision, forward launch, backward launch) of every gated build the runtime can
    launch: what the compile gate builds."""
    from .dispatch import SMEM_LIMIT

    out = []
    for cap in SMEM_LIMIT:
        for dtype, prec in _PRECISIONS:
            seen = set()
            for bh in _SIZES:
                fwd = gated_launch(bh, dtype, prec, cap)
                if fwd is not None and fwd not in seen:
                    seen.add(fwd)
                    out.append((cap, dtype, prec, fwd, gated_launch(bh, dtype, prec, cap, backward=True)))
    return out


_PRECISIONS = ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"), (torch.bfloat16, "ieee"))
_SIZES = tuple(sorted({16, 32, *SPLIT_BLOCK_H}))


def max_hidden(dtype: torch.dtype, prec: str, capability: tuple[int, int] | None) -> int:
    """The largest H the gated kernels take for (dtype, dot precision) on a card, 0 if none; every smaller H runs
    too (tests/test_compile_gate.py checks there is no gap)."""
    return max((bh for bh in _SIZES if gated_launch(bh, dtype, prec, capability) is not None), default=0)


def triton_reason(B: int, H: int, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why the gated kernels cannot run a (B, H) recurrence of `dtype` on `device`, or None. Metadata only."""
    from .dispatch import DEFAULT_CAPABILITY, MIN_CAPABILITY

    reason = launch.unavailable_reason(device)
    if reason is not None:
        return reason
    if dtype not in _DTYPES:
        return f"{dtype} runs on the torch path (the kernels take float32, float16 and bfloat16)"
    if B * 4 * H >= 2**31:
        return f"B * 4H = {B * 4 * H} is over the kernels' limit of 2**31 - 1 elements per step"
    # under torch.compile no device property or precision setting is read: sm_90's table and the widest
    # precision; the op itself raises at run time for what its kernels then cannot take (`_kernel_launch`)
    compiling = torch.compiler.is_compiling()
    capability = (None if compiling else launch.device_key(device)[0]) or DEFAULT_CAPABILITY
    if tuple(capability) < MIN_CAPABILITY:
        return f"sm_{capability[0]}{capability[1]} is older than sm_{MIN_CAPABILITY[0]}{MIN_CAPABILITY[1]}"
    prec = dot_precision(dtype, "high" if compiling else torch.get_float32_matmul_precision())
    if gated_launch(H, dtype, prec, capability) is None:
        return (
            f"H = {H} is over the gated kernels' limit of {max_hidden(dtype, prec, capability)} for {dtype} "
            f"({prec} dots) on sm_{capability[0]}{capability[1]}"
        )
    return None


def _kernel_launch(u: torch.Tensor, H: int, backward: bool) -> launch.GatedLaunch:
    """The launch of the forward or backward kernels: from shapes, the matmul precision and the card, read at run
    time inside the op (also under torch.compile)."""
    prec = dot_precision(u.dtype, torch.get_float32_matmul_precision())
    cfg = gated_launch(H, u.dtype, prec, launch.device_key(u.device)[0], backward)
    if cfg is None:
        raise ValueError(
            f"no gated kernel build for H = {H} with {u.dtype} ({prec} dots) on this card; allow TF32 "
            "(torch.set_float32_matmul_precision('high')) where that helps, or use backend='torch'"
        )
    return cfg


@torch.library.custom_op(
    "fused_rnn::gated_scan",
    mutates_args=(),
    schema="(int cell, Tensor u, Tensor w_hh, Tensor? b_hn, Tensor h0, Tensor? c0, Tensor? lengths, bool reverse) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _gated_scan(cell, u, w_hh, b_hn, h0, c0, lengths, reverse):
    """Kernel forward (cell 0 LSTM, 1 GRU): hs (T, B, H) as the kernel leaves them, cs (LSTM, else (0,)),
    gates (T, B, 4H) float32, h_n, c_n (LSTM, else (0,))."""
    T, B, _ = u.shape
    H = h0.shape[1]
    if T == 0 or B == 0:
        lstm = cell == 0
        return (u.new_empty(T, B, H), u.new_empty((T, B, H) if lstm else (0,)),
                u.new_empty(T, B, 4 * H, dtype=torch.float32), h0.clone(),
                c0.clone() if lstm else u.new_empty(0))  # fmt: skip
    cfg = _kernel_launch(u, H, False)
    if cell == 1 and b_hn is None:  # the kernel reads b_hn (GRU) and c0 (LSTM): zeros, never a stand-in
        b_hn = u.new_zeros(H)
    if cell == 0 and c0 is None:
        c0 = torch.zeros_like(h0)
    return launch.gated_forward(
        cell, u.contiguous(), w_hh.contiguous(), None if b_hn is None else b_hn.contiguous(), h0.contiguous(),
        None if c0 is None else c0.contiguous(), None if lengths is None else lengths.contiguous(), reverse, cfg,
    )  # fmt: skip


@_gated_scan.register_fake
def _(cell, u, w_hh, b_hn, h0, c0, lengths, reverse):
    T, B, _ = u.shape
    H = h0.shape[1]
    lstm = cell == 0
    return (u.new_empty(T, B, H), u.new_empty((T, B, H) if lstm else (0,)),
            u.new_empty(T, B, 4 * H, dtype=torch.float32), torch.empty_like(h0),
            torch.empty_like(h0) if lstm else u.new_empty(0))  # fmt: skip


@torch.library.custom_op(
    "fused_rnn::gated_scan_backward",
    mutates_args=(),
    schema="(int cell, Tensor w_hh, Tensor hs, Tensor cs, Tensor gates, Tensor h0, Tensor? c0, Tensor? dhs, "
    "Tensor? dhn, Tensor? dcn, Tensor? lengths, bool reverse) -> (Tensor, Tensor, Tensor)",
)
def _gated_scan_backward(cell, w_hh, hs, cs, gates, h0, c0, dhs, dhn, dcn, lengths, reverse):
    """Kernel backward: da (T, B, 4H) float32 (kernels/gated_recurrent.py), d h0, d c0 (LSTM, else (0,))."""
    T, B, H = hs.shape
    if T == 0 or B == 0:
        dh0 = hs.new_zeros(B, H) if dhn is None else dhn.clone()
        dc0 = (hs.new_zeros(B, H) if dcn is None else dcn.clone()) if cell == 0 else hs.new_empty(0)
        return hs.new_zeros(T, B, 4 * H, dtype=torch.float32), dh0, dc0
    cfg = _kernel_launch(hs, H, True)
    if cell == 0 and c0 is None:
        c0 = torch.zeros_like(h0)

    def c(x):
        return None if x is None else x.contiguous()

    return launch.gated_backward(
        cell, w_hh.contiguous(), hs.contiguous(), cs.contiguous() if cell == 0 else None, gates.contiguous(),
        h0.contiguous(), c(c0), c(dhs), c(dhn), c(dcn) if cell == 0 else None, c(lengths), reverse, cfg,
    )  # fmt: skip


@_gated_scan_backward.register_fake
def _(cell, w_hh, hs, cs, gates, h0, c0, dhs, dhn, dcn, lengths, reverse):
    T, B, H = hs.shape
    return (hs.new_empty(T, B, 4 * H, dtype=torch.float32), torch.empty_like(h0),
            torch.empty_like(h0) if cell == 0 else hs.new_empty(0))  # fmt: skip


def _setup_context(ctx, inputs, output):
    cell, u, w_hh, b_hn, h0, c0, lengths, reverse = inputs
    hs, cs, gates, _, _ = output
    ctx.save_for_backward(w_hh, h0, c0, hs, cs, gates, lengths)
    ctx.flags = (cell, reverse, b_hn is not None)


def _backward(ctx, dhs, dcs, dgates, dhn, dcn):
    w_hh, h0, c0, hs, cs, gates, lengths = ctx.saved_tensors
    cell, reverse, has_bhn = ctx.flags
    T, B, H = hs.shape
    lstm = cell == 0
    da, dh0, dc0 = torch.ops.fused_rnn.gated_scan_backward(
        cell, w_hh, hs, cs, gates, h0, c0, dhs, dhn, dcn if lstm else None, lengths, reverse
    )
    h_prev = torch.cat([hs, h0[None]])[1:] if reverse else torch.cat([h0[None], hs])[:-1]
    if lengths is not None:
        valid = _valid_steps(T, lengths)
        da = torch.where(valid, da, 0)  # a block's steps past its longest row are left unwritten
        if reverse:  # a reverse row starts from h0 at its own last step
            h_prev = torch.where(_valid_steps(T, lengths, shift=1), h_prev, h0)
        h_prev = torch.where(valid, h_prev, 0)
    if lstm:
        du, dpre = da, da
    else:  # GRU: u's gradient is (r, z, n); W_hh's pre-activations are (r, z, l)
        du = da[..., : 3 * H]
        dpre = torch.cat([da[..., : 2 * H], da[..., 3 * H :]], dim=-1)
    # dW_hh = sum_s dpre_s^T h_prev(s): one GEMM after the loop, no atomics
    dw = dpre.flatten(0, 1).t().mm(h_prev.to(dpre.dtype).flatten(0, 1))
    db_hn = da[..., 3 * H :].sum((0, 1)).to(hs.dtype) if has_bhn else None
    return None, du.to(hs.dtype), dw.to(w_hh.dtype), db_hn, dh0, dc0 if lstm else None, None, None


torch.library.register_autograd("fused_rnn::gated_scan", _backward, setup_context=_setup_context)


def _check(cell: str, u, w_hh, h0, c0, b_hn, lengths) -> tuple[int, int, int]:
    G = CELLS[cell][1]
    _check_tensor("u", u, f"(T, B, {G}H)", 3)
    T, B, GH = u.shape
    if GH % G:
        raise ValueError(f"u: expected a last dimension of {G} * H, got {GH}")
    H = GH // G
    _check_tensor("weight_hh", w_hh, f"({G}H, H) = ({GH}, {H})", 2)
    if tuple(w_hh.shape) != (GH, H):
        raise ValueError(f"weight_hh: expected shape ({G}H, H) = ({GH}, {H}) to match u {tuple(u.shape)}, got "
                         f"{tuple(w_hh.shape)}")  # fmt: skip
    for name, x, shape in (("h0", h0, (B, H)), ("c0", c0, (B, H)), ("b_hn", b_hn, (H,))):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:  # the message is built only to raise
            want = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
            _check_tensor(name, x, want, len(shape))
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    for name, x in (("weight_hh", w_hh), ("h0", h0), ("c0", c0), ("b_hn", b_hn)):
        if x is not None and (x.device != u.device or x.dtype != u.dtype):
            raise ValueError(f"{name}: expected {u.dtype} on {u.device} (u's), got {x.dtype} on {x.device}")
    if lengths is not None:
        _check_lengths(lengths, T, B, u.device)
    return T, B, H


def _autocast(u, *rest):
    """Under autocast, float32 tensors run in the autocast dtype, as nn.LSTM / nn.GRU's do."""
    dtype = _autocast_dtype(u.device)
    if dtype is None:
        return (u, *rest)
    return tuple(x if x is None or x.dtype != torch.float32 else x.to(dtype) for x in (u, *rest))


def _run(cell, u, w_hh, b_hn, h0, c0, lengths, reverse, backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    T, B, H = u.shape[0], u.shape[1], h0.shape[1]
    if backend == "triton":
        reason = triton_reason(B, H, u.dtype, u.device)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run this input: {reason}")
        kcell = CELLS[cell][0]
        lens = None if lengths is None else lengths.to(torch.int32)  # one kernel variant for every integer dtype
        hs, _, _, hn, cn = torch.ops.fused_rnn.gated_scan(kcell, u, w_hh, b_hn, h0, c0, lens, reverse)
        if lengths is not None:  # a block stops at its longest row: what lies past a row's length is 0
            hs = torch.where(_valid_steps(T, lengths), hs, 0)
        return hs, hn, (cn if cell == "lstm" else None)
    hs, hn, cn = gated_scan_reference(cell, u, w_hh, h0, c0, b_hn, lengths, reverse)
    if lengths is not None:
        hs = torch.where(_valid_steps(T, lengths), hs, 0)
    return hs, hn, cn


def lstm_scan(
    u: torch.Tensor,
    weight_hh: torch.Tensor,
    h0: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer and direction given its input half ``u = x @ W_ih^T + b_ih + b_hh`` (gates i, f, g, o).

    Args:
        u: (T, B, 4H). weight_hh: (4H, H). h0, c0: (B, H) or None for zeros.
        lengths: (B,) integers on u's device, or None; row b runs steps s < lengths[b] only (outputs past them
            are 0, h_n / c_n are the states after its last valid step). reverse: walk s = T-1 .. 0.
        backend: "triton" (the fused kernels), "torch" or "auto" (torch until the kernels are gate-checked).

    Returns:
        output (T, B, H), h_n (B, H), c_n (B, H), differentiable in u, weight_hh, h0 and c0.
    """
    u, weight_hh, h0, c0 = _autocast(u, weight_hh, h0, c0)
    T, B, H = _check("lstm", u, weight_hh, h0, c0, None, lengths)
    h0 = u.new_zeros(B, H) if h0 is None else h0
    c0 = u.new_zeros(B, H) if c0 is None else c0
    return _run("lstm", u, weight_hh, None, h0, c0, lengths, reverse, backend)


def gru_scan(
    u: torch.Tensor,
    weight_hh: torch.Tensor,
    b_hn: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer and direction given its input half ``u = x @ W_ih^T + b_ih + (b_hr, b_hz, 0)`` (gates r, z,
    n); b_hn stays inside the reset product, ``n = tanh(u_n + r * (h W_hn^T + b_hn))``, as nn.GRU computes it.

    Args:
        u: (T, B, 3H). weight_hh: (3H, H). b_hn: (H,) or None for zeros. h0: (B, H) or None for zeros.
        lengths, reverse, backend: as `lstm_scan`.

    Returns:
        output (T, B, H) and h_n (B, H), differentiable in u, weight_hh, b_hn and h0.
    """
    u, weight_hh, b_hn, h0 = _autocast(u, weight_hh, b_hn, h0)
    T, B, H = _check("gru", u, weight_hh, h0, None, b_hn, lengths)
    h0 = u.new_zeros(B, H) if h0 is None else h0
    b_hn = u.new_zeros(H) if b_hn is None else b_hn
    hs, hn, _ = _run("gru", u, weight_hh, b_hn, h0, None, lengths, reverse, backend)
    return hs, hn


def limits_table() -> str:
    """The README's table of the largest H the gated kernels take, per dot kind and card (from the gate's tables)."""
    from .dispatch import SMEM_LIMIT

    kinds = {"ieee": "float32, IEEE dots (matmul precision 'highest')", "tf32": "float32, TF32 dots ('high')",
             "half": "float16 / bfloat16"}  # fmt: skip
    dtype_of = {"ieee": (torch.float32, "ieee"), "tf32": (torch.float32, "tf32"), "half": (torch.float16, "ieee")}
    caps = sorted(SMEM_LIMIT)
    lines = ["| | " + " | ".join(f"sm_{a}{b}" for a, b in caps) + " |", "|---" * (len(caps) + 1) + "|"]
    for kind, label in kinds.items():
        dtype, prec = dtype_of[kind]
        cells = []
        for cap in caps:
            cfgs = {b: gated_launch(b, dtype, prec, cap) for b in _SIZES}
            top = max((b for b, c in cfgs.items() if c is not None), default=0)
            single = max((b for b, c in cfgs.items() if c is not None and c.mode == "single"), default=0)
            barrier = max((b for b, c in cfgs.items() if c is not None and c.num_warps_persistent), default=0)
            back = max((b for b in _SIZES if (c := gated_launch(b, dtype, prec, cap, True)) and c.num_warps_persistent),
                       default=0)  # fmt: skip
            barrier_text = (
                f"grid barrier ≤ {barrier}"
                if back == barrier
                else f"grid barrier ≤ {barrier} forward, ≤ {back} backward"
            )
            parts = [f"one program ≤ {single}" if single else "", barrier_text if barrier else ""]
            parts = "; ".join(p for p in parts if p)
            cells.append(f"H ≤ {top} ({parts})" if top else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
