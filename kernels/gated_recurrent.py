"""LSTM and GRU recurrences: every gate's W_hh stays on chip for all T steps, in one program or split over many.

The input half of every gate is one GEMM over the whole sequence before the loop (u below); the loop does
h_prev @ W_hh^T for each gate and the cell's pointwise math, fused into the step. The cell math is a small
@triton.jit function per cell (`_lstm_cell`, `_gru_cell` and their backward twins); tiling, loads, lengths,
reverse, the time loop and the grid barrier are shared with the Elman kernels. PyTorch's gate order and formulas:

    LSTM (G = 4: i, f, g, o):  a = u_s + h_prev @ W_hh^T
        i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_g);  c = f * c_prev + i * g;  h = o * tanh(c)
    GRU (G = 3: r, z, n):  a_rz = u_rz + h_prev @ W_hrz^T;  l = h_prev @ W_hn^T + b_hn
        r, z = sigmoid(a_r, a_z);  n = tanh(u_n + r * l);  h = (1 - z) * n + z * h_prev

u (T, B, G*H) holds x @ W_ih^T + b_ih (+ b_hh for LSTM, + b_hr, b_hz for GRU; b_hn stays inside r * l).
Forward stores, per step, four H-wide values a backward needs: LSTM i, f, g, o (and c in `cs`); GRU r, z, n, l.
Backward returns da (T, B, 4H): LSTM dL/da for i, f, g, o (= dL/du); GRU dL/da_r, dL/da_z, dL/du_n, dL/dl. The
caller reduces it into dW_hh with one GEMM over the stored steps (deterministic, no atomics).

With HAS_LENGTHS, row b runs only its steps s < lengths[b]; at the others its state stays as it is, as in
`fused_recurrent.py`. A program runs only up to its longest row; the caller masks what lies past it.

Two modes, as for the Elman cell:
  * single program (`gated_recurrent_*`): a program holds all of every gate's W_hh ([BH, BH] per gate);
  * split (`gated_split_*`, as `split_recurrent.py`): program (i_b, i_n) owns hidden units
    o_n = i_n*BN .. and all G gates of them, so the cell's pointwise math (and LSTM's c) stays local; it holds
    W_g^T[:, o_n] (forward) or W_g[:, o_n] (backward) for every gate, [BK, BN] each, and reads the full rows of
    h_prev (forward) or of the gates' da (backward) from global memory, where every program wrote its slice
    before the step's barrier. Persistent kernels loop over T and meet at `grid_barrier`; step kernels run one
    step per launch (the launch boundary is the barrier; the backward takes T + 1 launches) and keep the
    program's own float32 state slices in a scratch buffer between launches, so both run the same numbers.

Dimension legend:
    T   time steps (runtime, never specialised)
    B   batch rows; BB rows per program
    H   hidden size; BH (single) or BK (split) = next power of two >= max(H, 16), padded lanes masked
    BN  hidden units per split program; grid = (cdiv(B, BB), cdiv(H, BN)) in split mode, (cdiv(B, BB),) single
    SK  slices of the split kernels' reduction (`dot_split_k`)
    G   gates: 4 (LSTM) or 3 (GRU); CELL 0 = LSTM, 1 = GRU

Offsets into (T, B, *) buffers are 64-bit.
"""

import triton
import triton.language as tl

from .split_recurrent import _rows, _slab_rows, _tile, _valid
from .utils import block_steps, cast, dot_f32, dot_split_k, grid_barrier, tanh_f32

# CELL values: 0 = LSTM, 1 = GRU (literals in the kernels: a plain module global cannot be read in @jit code,
# and a tl.constexpr global would enter the cache keys unevenly, see utils.interpreted)


@triton.jit
def _sigmoid(x):
    """Float32 logistic: exp of a large -x gives inf and 1 / inf = 0, so it saturates cleanly."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _gate_tile(w, g, H, o_k, o_n, m_kn, TRANSPOSED: tl.constexpr):
    """Gate g's block of W_hh (G*H, H) as a [len(o_k), len(o_n)] tile over reduction k and output n.

    TRANSPOSED (the forward's h_prev @ W_g^T): element [k, n] = W_hh[g*H + n, k].
    Otherwise (the backward's dh_prev = da_g @ W_g): element [k, n] = W_hh[g*H + k, n].
    """
    if TRANSPOSED:
        o = (g * H + o_n[None, :]).to(tl.int64) * H + o_k[:, None]
    else:
        o = (g * H + o_k[:, None]).to(tl.int64) * H + o_n[None, :]
    return tl.load(w + o, mask=m_kn, other=0.0)


@triton.jit
def _lstm_cell(b_c, a_i, a_f, a_g, a_o):
    """LSTM pointwise on pre-activations: (h, c, i, f, g, o)."""
    b_i = _sigmoid(a_i)
    b_f = _sigmoid(a_f)
    b_g = tanh_f32(a_g)
    b_o = _sigmoid(a_o)
    b_c = b_f * b_c + b_i * b_g
    return b_o * tanh_f32(b_c), b_c, b_i, b_f, b_g, b_o


@triton.jit
def _gru_cell(b_h, a_r, a_z, u_n, b_l):
    """GRU pointwise: (h, r, z, n, l) with l = h_prev @ W_hn^T + b_hn."""
    b_r = _sigmoid(a_r)
    b_z = _sigmoid(a_z)
    b_n = tanh_f32(u_n + b_r * b_l)
    return (1.0 - b_z) * b_n + b_z * b_h, b_r, b_z, b_n, b_l


@triton.jit
def _advance(b_h, b_c, h_new, c_new, m_v, CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """The state after a step: a padded step (m_v false) keeps it. GRU passes its h as c (unused)."""
    if HAS_LENGTHS:
        b_h = tl.where(m_v, h_new, b_h)
        if CELL == 0:
            b_c = tl.where(m_v, c_new, b_c)
    else:
        b_h = h_new
        if CELL == 0:
            b_c = c_new
    return b_h, b_c


@triton.jit
def _store_step(p_hs, p_cs, p_g, o_x, o_g, m, b_h, b_c, b_q0, b_q1, b_q2, b_q3, H, CELL: tl.constexpr):
    """h (and LSTM's c) at o_x of a (B, H) slab, the four stored gate values at o_g of a (B, 4H) slab."""
    tl.store(p_hs + o_x, cast(b_h, p_hs.dtype.element_ty), mask=m)
    if CELL == 0:
        tl.store(p_cs + o_x, cast(b_c, p_cs.dtype.element_ty), mask=m)
    tl.store(p_g + o_g, b_q0, mask=m)  # gates stay float32: the backward's derivatives read them
    tl.store(p_g + o_g + H, b_q1, mask=m)
    tl.store(p_g + o_g + 2 * H, b_q2, mask=m)
    tl.store(p_g + o_g + 3 * H, b_q3, mask=m)


@triton.jit
def _lstm_step_bwd(b_dh, b_dc, b_c, b_cp, b_i, b_f, b_g, b_o):
    """dL/da of the four gates, and dL/dc_prev through the cell state (before the W_hh half of dh_prev)."""
    b_tc = tanh_f32(b_c)
    b_dc = b_dc + b_dh * b_o * (1.0 - b_tc * b_tc)
    b_da0 = b_dc * b_g * b_i * (1.0 - b_i)
    b_da1 = b_dc * b_cp * b_f * (1.0 - b_f)
    b_da2 = b_dc * b_i * (1.0 - b_g * b_g)
    b_da3 = b_dh * b_tc * b_o * (1.0 - b_o)
    return b_da0, b_da1, b_da2, b_da3, b_dc * b_f


@triton.jit
def _gru_step_bwd(b_dh, b_hp, b_r, b_z, b_n, b_l):
    """dL/da_r, dL/da_z, dL/du_n, dL/dl and the direct part of dL/dh_prev (z * dh)."""
    b_dn = b_dh * (1.0 - b_z) * (1.0 - b_n * b_n)
    b_da1 = b_dh * (b_hp - b_n) * b_z * (1.0 - b_z)
    b_da0 = b_dn * b_l * b_r * (1.0 - b_r)
    return b_da0, b_da1, b_dn, b_dn * b_r, b_dh * b_z


@triton.jit
def _bwd_local(
    b_dh, b_dc, b_first, b_c0, b_h0, p_g, p_da, p_x, p_xp, o_x, o_g, m, m_first, m_v, H,
    CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """The pointwise half of one backward step on a [rows, units] slice: stores da (4 slots at o_g of a (B, 4H)
    slab) and returns (dc, part): LSTM's carried dL/dc, and what dh_prev gets besides the W_hh dots (GRU's
    z * dh; a padded row's whole dh, its da being 0).

    b_dh: dL/dh at this step. p_x / p_xp: this / the previous step's slab of c (LSTM) or h (GRU, the previous
    only); `b_first` (a scalar) says the previous state is h0 / c0 (b_h0, b_c0), m_first masks the load then.
    """
    b_q0 = tl.load(p_g + o_g, mask=m, other=0.0)
    b_q1 = tl.load(p_g + o_g + H, mask=m, other=0.0)
    b_q2 = tl.load(p_g + o_g + 2 * H, mask=m, other=0.0)
    b_q3 = tl.load(p_g + o_g + 3 * H, mask=m, other=0.0)
    if CELL == 0:
        b_c = tl.load(p_x + o_x, mask=m, other=0.0).to(tl.float32)
        b_cp = tl.load(p_xp + o_x, mask=m_first, other=0.0).to(tl.float32)
        b_cp = tl.where(b_first, b_c0, b_cp)
        b_da0, b_da1, b_da2, b_da3, b_dcp = _lstm_step_bwd(b_dh, b_dc, b_c, b_cp, b_q0, b_q1, b_q2, b_q3)
        b_part = tl.zeros_like(b_dh)
    else:
        b_hp = tl.load(p_xp + o_x, mask=m_first, other=0.0).to(tl.float32)
        b_hp = tl.where(b_first, b_h0, b_hp)
        b_da0, b_da1, b_da2, b_da3, b_part = _gru_step_bwd(b_dh, b_hp, b_q0, b_q1, b_q2, b_q3)
        b_dcp = b_dc
    if HAS_LENGTHS:
        # a padded step copied the state: its gradients pass straight to the previous state
        b_da0 = tl.where(m_v, b_da0, 0.0)
        b_da1 = tl.where(m_v, b_da1, 0.0)
        b_da2 = tl.where(m_v, b_da2, 0.0)
        b_da3 = tl.where(m_v, b_da3, 0.0)
        b_part = tl.where(m_v, b_part, b_dh)
        b_dcp = tl.where(m_v, b_dcp, b_dc)
    tl.store(p_da + o_g, cast(b_da0, p_da.dtype.element_ty), mask=m)
    tl.store(p_da + o_g + H, cast(b_da1, p_da.dtype.element_ty), mask=m)
    tl.store(p_da + o_g + 2 * H, cast(b_da2, p_da.dtype.element_ty), mask=m)
    tl.store(p_da + o_g + 3 * H, cast(b_da3, p_da.dtype.element_ty), mask=m)
    return b_da0, b_da1, b_da2, b_da3, b_dcp, b_part


# ------------------------------------------------------------------------------------------------ single program


@triton.jit(do_not_specialize=["T"])
def gated_recurrent_fwd_kernel(
    u,  # (T, B, G*H): the input half of every gate
    w,  # (G*H, H): W_hh as nn.LSTM / nn.GRU store it
    b_hn,  # (H,): GRU's b_hn, read only when CELL == 1
    h0,  # (B, H)
    c0,  # (B, H): LSTM's c_0, read only when CELL == 0
    lengths,  # (B,) int: valid steps per row, read only when HAS_LENGTHS
    hs,  # (T, B, H) out: h after every step
    cs,  # (T, B, H) out: LSTM's c after every step (not written for GRU)
    gates,  # (T, B, 4H) out: what the backward needs (see the module docstring)
    hn,  # (B, H) out
    cn,  # (B, H) out: LSTM's c_n
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_h = tl.arange(0, BH)
    m_b = o_b < B
    m_h = o_h < H
    m_bh = m_b[:, None] & m_h[None, :]
    m_hh = m_h[:, None] & m_h[None, :]
    o_bh = o_b[:, None] * H + o_h[None, :]  # [BB, BH] into (B, H)
    o_bg = o_b[:, None].to(tl.int64) * (G * H) + o_h[None, :]  # [BB, BH] into (B, G*H), gate 0
    o_b4 = o_b[:, None].to(tl.int64) * (4 * H) + o_h[None, :]  # [BB, BH] into (B, 4H), slot 0

    # every gate's W_hh^T, loaded once and kept for all T
    b_w0 = _gate_tile(w, 0, H, o_h, o_h, m_hh, True)  # [BH, BH]
    b_w1 = _gate_tile(w, 1, H, o_h, o_h, m_hh, True)
    b_w2 = _gate_tile(w, 2, H, o_h, o_h, m_hh, True)
    b_h = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    if CELL == 0:
        b_w3 = _gate_tile(w, 3, H, o_h, o_h, m_hh, True)
        b_c = tl.load(c0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    else:
        b_bn = tl.load(b_hn + o_h, mask=m_h, other=0.0).to(tl.float32)[None, :]  # [1, BH]
        b_c = b_h  # GRU has no c: a stand-in the helpers pass along unused
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)  # [BB]
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)

    for i in range(n):
        s = n - 1 - i if REVERSE else i
        o_s = s.to(tl.int64) * B  # rows before step s
        p_u = u + o_s * (G * H) + o_bg
        # the where keeps u out of the dot's accumulator (with it there, ptxas spills the fp32 FMA dot)
        a0 = tl.where(m_bh, dot_f32(b_h, b_w0, DOT_PRECISION), 0.0) + tl.load(p_u, mask=m_bh, other=0.0).to(tl.float32)
        a1 = tl.where(m_bh, dot_f32(b_h, b_w1, DOT_PRECISION), 0.0)
        a1 += tl.load(p_u + H, mask=m_bh, other=0.0).to(tl.float32)
        a2 = tl.where(m_bh, dot_f32(b_h, b_w2, DOT_PRECISION), 0.0)
        b_u2 = tl.load(p_u + 2 * H, mask=m_bh, other=0.0).to(tl.float32)
        if CELL == 0:
            a3 = tl.where(m_bh, dot_f32(b_h, b_w3, DOT_PRECISION), 0.0)
            a3 += tl.load(p_u + 3 * H, mask=m_bh, other=0.0).to(tl.float32)
            h_new, c_new, b_q0, b_q1, b_q2, b_q3 = _lstm_cell(b_c, a0, a1, a2 + b_u2, a3)
        else:
            h_new, b_q0, b_q1, b_q2, b_q3 = _gru_cell(b_h, a0, a1, b_u2, a2 + b_bn)
            c_new = h_new
        if HAS_LENGTHS:
            m_v = (s < b_len)[:, None]  # a padded step keeps the state
        else:
            m_v = tl.full([BB, 1], 1, tl.int1)
        b_h, b_c = _advance(b_h, b_c, h_new, c_new, m_v, CELL, HAS_LENGTHS)
        _store_step(hs + o_s * H, cs + o_s * H, gates + o_s * (4 * H), o_bh, o_b4, m_bh, b_h, b_c,
                    b_q0, b_q1, b_q2, b_q3, H, CELL)  # fmt: skip
    tl.store(hn + o_bh, cast(b_h, hn.dtype.element_ty), mask=m_bh)
    if CELL == 0:
        tl.store(cn + o_bh, cast(b_c, cn.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["T"])
def gated_recurrent_bwd_kernel(
    w,  # (G*H, H): W_hh
    hs,  # (T, B, H): the forward's h
    cs,  # (T, B, H): the forward's c (LSTM)
    gates,  # (T, B, 4H): the forward's stored gate values
    h0,  # (B, H)
    c0,  # (B, H) (LSTM)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    dcn,  # (B, H), read only when HAS_DCN (LSTM)
    lengths,  # (B,) int, read only when HAS_LENGTHS
    da,  # (T, B, 4H) out: see the module docstring
    dh0,  # (B, H) out
    dc0,  # (B, H) out (LSTM)
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
    HAS_DCN: tl.constexpr,
):
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_h = tl.arange(0, BH)
    m_b = o_b < B
    m_h = o_h < H
    m_bh = m_b[:, None] & m_h[None, :]
    m_hh = m_h[:, None] & m_h[None, :]
    o_bh = o_b[:, None] * H + o_h[None, :]
    o_b4 = o_b[:, None].to(tl.int64) * (4 * H) + o_h[None, :]

    # dh_prev = sum over gates of da_g @ W_g: W as stored
    b_w0 = _gate_tile(w, 0, H, o_h, o_h, m_hh, False)
    b_w1 = _gate_tile(w, 1, H, o_h, o_h, m_hh, False)
    b_w2 = _gate_tile(w, 2, H, o_h, o_h, m_hh, False)
    b_dc = tl.zeros([BB, BH], dtype=tl.float32)
    if CELL == 0:
        b_w3 = _gate_tile(w, 3, H, o_h, o_h, m_hh, False)
        b_c0 = tl.load(c0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        if HAS_DCN:
            b_dc += tl.load(dcn + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        b_h0 = b_c0  # unused by LSTM
    else:
        b_h0 = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        b_c0 = b_h0  # unused by GRU
    b_carry = tl.zeros([BB, BH], dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)

    # the forward's steps in the opposite order; "prev" is the step the forward ran before s
    for j in range(n):
        i = n - 1 - j  # the forward's loop index of this step
        s = n - 1 - i if REVERSE else i
        s_prev = s + 1 if REVERSE else s - 1
        o_s = s.to(tl.int64) * B
        o_p = s_prev.to(tl.int64) * B
        b_dh = b_carry
        if HAS_DHS:
            b_dh += tl.load(dhs + o_s * H + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        if HAS_LENGTHS:
            m_v = (s < b_len)[:, None]
        else:
            m_v = tl.full([BB, 1], 1, tl.int1)
        p_x = cs + o_s * H if CELL == 0 else hs
        p_xp = (cs if CELL == 0 else hs) + o_p * H
        b_da0, b_da1, b_da2, b_da3, b_dc, b_part = _bwd_local(
            b_dh, b_dc, i == 0, b_c0, b_h0, gates + o_s * (4 * H), da + o_s * (4 * H), p_x, p_xp, o_bh, o_b4,
            m_bh, m_bh & (i > 0), m_v, H, CELL, HAS_LENGTHS,
        )  # fmt: skip
        # dh_prev = the W_hh dots of the (masked) da and the pointwise part; a GRU's W_hn pairs with dl (slot 3)
        b_dhp = dot_f32(b_da0, b_w0, DOT_PRECISION) + dot_f32(b_da1, b_w1, DOT_PRECISION)
        if CELL == 0:
            b_dhp += dot_f32(b_da2, b_w2, DOT_PRECISION) + dot_f32(b_da3, b_w3, DOT_PRECISION)
        else:
            b_dhp += dot_f32(b_da3, b_w2, DOT_PRECISION)
        b_carry = b_dhp + b_part
    tl.store(dh0 + o_bh, cast(b_carry, dh0.dtype.element_ty), mask=m_bh)
    if CELL == 0:
        tl.store(dc0 + o_bh, cast(b_dc, dc0.dtype.element_ty), mask=m_bh)


# ------------------------------------------------------------------------------------------------ split over units


@triton.jit
def _split_gate(w, g, H, o_n, m_kn, BK: tl.constexpr, BN: tl.constexpr, SK: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Gate g's [BK, BN] tile for this program's units (`_gate_tile`), as [SK, BK / SK, BN] for `dot_split_k`."""
    return tl.reshape(_gate_tile(w, g, H, tl.arange(0, BK), o_n, m_kn, TRANSPOSED), (SK, BK // SK, BN))


@triton.jit
def _split_weights(w, H, o_n, m_kn, BK: tl.constexpr, BN: tl.constexpr, SK: tl.constexpr, CELL: tl.constexpr,
                   TRANSPOSED: tl.constexpr):  # fmt: skip
    """Every gate's `_split_gate` tile (GRU repeats gate 2 as the 4th), loaded once to be kept for all T."""
    b_w0 = _split_gate(w, 0, H, o_n, m_kn, BK, BN, SK, TRANSPOSED)
    b_w1 = _split_gate(w, 1, H, o_n, m_kn, BK, BN, SK, TRANSPOSED)
    b_w2 = _split_gate(w, 2, H, o_n, m_kn, BK, BN, SK, TRANSPOSED)
    if CELL == 0:
        b_w3 = _split_gate(w, 3, H, o_n, m_kn, BK, BN, SK, TRANSPOSED)
    else:
        b_w3 = b_w2
    return b_w0, b_w1, b_w2, b_w3


@triton.jit
def _split_fwd_step(
    p_prev, p_u, p_hs, p_cs, p_g, b_h, b_c, b_bn, b_w0, b_w1, b_w2, b_w3, m_v, i_b, B, H, o_bn, o_gn, o_4n, m_bn,
    BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr, CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """One step for one program: every unit of h_prev in, all gates of its units out; returns its (h, c)."""
    b_x = _rows(p_prev, i_b, B, H, BB, BK)  # [BB, BK]: h_prev, written by every program before the barrier
    a0 = dot_split_k(b_x, b_w0, DOT_PRECISION) + tl.load(p_u + o_gn, mask=m_bn, other=0.0).to(tl.float32)
    a1 = dot_split_k(b_x, b_w1, DOT_PRECISION) + tl.load(p_u + o_gn + H, mask=m_bn, other=0.0).to(tl.float32)
    a2 = dot_split_k(b_x, b_w2, DOT_PRECISION)
    b_u2 = tl.load(p_u + o_gn + 2 * H, mask=m_bn, other=0.0).to(tl.float32)
    if CELL == 0:
        a3 = dot_split_k(b_x, b_w3, DOT_PRECISION) + tl.load(p_u + o_gn + 3 * H, mask=m_bn, other=0.0).to(tl.float32)
        h_new, c_new, b_q0, b_q1, b_q2, b_q3 = _lstm_cell(b_c, a0, a1, a2 + b_u2, a3)
    else:
        h_new, b_q0, b_q1, b_q2, b_q3 = _gru_cell(b_h, a0, a1, b_u2, a2 + b_bn)
        c_new = h_new
    b_h, b_c = _advance(b_h, b_c, h_new, c_new, m_v, CELL, HAS_LENGTHS)
    _store_step(p_hs, p_cs, p_g, o_bn, o_4n, m_bn, b_h, b_c, b_q0, b_q1, b_q2, b_q3, H, CELL)
    return b_h, b_c


@triton.jit
def _carry_gate(p_da, g, b_w, i_b, B, H, BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """da's slot g (every unit, written by all programs before the barrier) @ that gate's W_g[:, units]."""
    return dot_split_k(_slab_rows(p_da + g * H, i_b, 0, B, H, 4 * H, BB, BK), b_w, DOT_PRECISION)


@triton.jit
def _split_carry(p_da, b_w0, b_w1, b_w2, b_w3, i_b, B, H, BB: tl.constexpr, BK: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, CELL: tl.constexpr):  # fmt: skip
    """The W_hh half of dh_prev on this program's units, sum over gates of da_g @ W_g[:, units], with the
    gates' tiles held on chip; p_da is one step's (B, 4H) slab of da. GRU's W_hn pairs with dl (slot 3)."""
    b_dhp = _carry_gate(p_da, 0, b_w0, i_b, B, H, BB, BK, DOT_PRECISION)
    b_dhp += _carry_gate(p_da, 1, b_w1, i_b, B, H, BB, BK, DOT_PRECISION)
    if CELL == 0:
        b_dhp += _carry_gate(p_da, 2, b_w2, i_b, B, H, BB, BK, DOT_PRECISION)
        b_dhp += _carry_gate(p_da, 3, b_w3, i_b, B, H, BB, BK, DOT_PRECISION)
    else:
        b_dhp += _carry_gate(p_da, 3, b_w2, i_b, B, H, BB, BK, DOT_PRECISION)
    return b_dhp


@triton.jit
def _split_carry_chunked(
    p_da, w, H, o_n, i_b, B, BB: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, SK: tl.constexpr,
    KC: tl.constexpr, DOT_PRECISION: tl.constexpr, CELL: tl.constexpr,
):  # fmt: skip
    """As `_split_carry`, loading each gate's W_g[:, units] here, KC reduction rows at a time: the step kernels
    keep nothing across launches, and one [BB, KC] slice of da and [KC, BN] of W per turn of a loop the compiler
    keeps (not unrolled, not multi-buffered) hold the registers that the whole [BB, BK] rows of four gates spill.
    The SK slices' partial sums stay apart until the end (one cross-warp sum, as `dot_split_k` does once)."""
    NC: tl.constexpr = BK // KC
    if SK == 1:
        b_acc = tl.zeros([BB, BN], dtype=tl.float32)
    else:
        b_acc = tl.zeros([SK, BB, BN], dtype=tl.float32)
    for c in tl.range((4 if CELL == 0 else 3) * NC, num_stages=1):
        g = c // NC
        k0 = (c % NC) * KC
        slot = g + g // 2 if CELL == 1 else g  # GRU's W_hn (gate 2) pairs with dl (slot 3)
        o_k = k0 + tl.arange(0, KC)
        m_kn = (o_k < H)[:, None] & (o_n < H)[None, :]
        b_w = tl.reshape(_gate_tile(w, g, H, o_k, o_n, m_kn, False), (SK, KC // SK, BN))
        b_x = _slab_rows(p_da + slot * H, i_b, k0, B, H, 4 * H, BB, KC)  # [BB, KC]
        if SK == 1:
            b_acc += dot_f32(b_x, tl.reshape(b_w, (KC, BN)), DOT_PRECISION)
        else:
            b_acc += dot_f32(tl.permute(tl.reshape(b_x, (BB, SK, KC // SK)), (1, 0, 2)), b_w, DOT_PRECISION)
    if SK == 1:
        b_out = b_acc
    else:
        b_out = tl.sum(b_acc, axis=0)
    return b_out


@triton.jit
def _split_offsets(B, H, BB: tl.constexpr, BN: tl.constexpr, CELL: tl.constexpr):
    """This program's units o_n, and its [BB, BN] offsets into (B, G*H) (gate 0) and (B, 4H) (slot 0)."""
    G: tl.constexpr = 4 if CELL == 0 else 3
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_n = tl.program_id(1) * BN + tl.arange(0, BN)
    o_gn = o_b[:, None].to(tl.int64) * (G * H) + o_n[None, :]
    o_4n = o_b[:, None].to(tl.int64) * (4 * H) + o_n[None, :]
    return o_n, o_gn, o_4n


@triton.jit(do_not_specialize=["T"])
def gated_split_fwd_kernel(
    u,  # (T, B, G*H)
    w,  # (G*H, H): W_hh
    b_hn,  # (H,): GRU's b_hn
    h0,  # (B, H)
    c0,  # (B, H): LSTM's c_0
    lengths,  # (B,) int, read only when HAS_LENGTHS
    hs,  # (T, B, H) out
    cs,  # (T, B, H) out (LSTM)
    gates,  # (T, B, 4H) float32 out
    hn,  # (B, H) out
    cn,  # (B, H) out (LSTM)
    count,  # (cdiv(B, BB),) int32 zeros: barrier counter per batch block
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    o_n, o_gn, o_4n = _split_offsets(B, H, BB, BN, CELL)
    n_prog = tl.num_programs(1)
    # [SK, BK / SK, BN] per gate, kept for all T
    b_w0, b_w1, b_w2, b_w3 = _split_weights(w, H, o_n, m_kn, BK, BN, SK, CELL, True)
    b_h = tl.load(h0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)  # [BB, BN]: this program's units, float32
    if CELL == 0:
        b_c = tl.load(c0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)
        b_bn = b_c  # unused by LSTM
    else:
        b_c = b_h  # unused by GRU
        b_bn = tl.load(b_hn + o_n, mask=o_n < H, other=0.0).to(tl.float32)[None, :]  # [1, BN]
    p_prev = h0
    # every program of a batch block computes the same n, so they meet at the same barriers
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    for i in range(n):
        s = n - 1 - i if REVERSE else i
        o_s = s.to(tl.int64) * B
        m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
        b_h, b_c = _split_fwd_step(
            p_prev, u + o_s * (G * H), hs + o_s * H, cs + o_s * H, gates + o_s * (4 * H), b_h, b_c, b_bn,
            b_w0, b_w1, b_w2, b_w3, m_v, i_b, B, H, o_bn, o_gn, o_4n, m_bn, BB, BK, DOT_PRECISION, CELL, HAS_LENGTHS,
        )  # fmt: skip
        grid_barrier(count + i_b, (i + 1) * n_prog)
        p_prev = hs + o_s * H
    tl.store(hn + o_bn, cast(b_h, hn.dtype.element_ty), mask=m_bn)
    if CELL == 0:
        tl.store(cn + o_bn, cast(b_c, cn.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["i", "T"])
def gated_split_fwd_step_kernel(
    u,  # (T, B, G*H)
    w,  # (G*H, H): W_hh
    b_hn,  # (H,): GRU's b_hn
    h0,  # (B, H)
    c0,  # (B, H): LSTM's c_0
    lengths,  # (B,) int, read only when HAS_LENGTHS
    hs,  # (T, B, H) out
    cs,  # (T, B, H) out (LSTM)
    gates,  # (T, B, 4H) float32 out
    hn,  # (B, H) out, written at the last step
    cn,  # (B, H) out (LSTM)
    state,  # (2, B, H) float32 scratch: h and LSTM's c of each program's units between launches
    i,  # processed steps so far: this launch runs time index s = i (n - 1 - i when REVERSE), n = block_steps
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    o_n, o_gn, o_4n = _split_offsets(B, H, BB, BN, CELL)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    if i < n:
        b_w0, b_w1, b_w2, b_w3 = _split_weights(w, H, o_n, m_kn, BK, BN, SK, CELL, True)
        s = n - 1 - i if REVERSE else i
        o_s = s.to(tl.int64) * B
        if i == 0:
            p_prev = h0
            b_h = tl.load(h0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)
            b_c = tl.load(c0 + o_bn, mask=m_bn, other=0.0).to(tl.float32) if CELL == 0 else b_h
        else:
            p_prev = hs + (o_s + B if REVERSE else o_s - B) * H
            b_h = tl.load(state + o_bn, mask=m_bn, other=0.0)
            b_c = tl.load(state + B * H + o_bn, mask=m_bn, other=0.0) if CELL == 0 else b_h
        if CELL == 0:
            b_bn = b_c
        else:
            b_bn = tl.load(b_hn + o_n, mask=o_n < H, other=0.0).to(tl.float32)[None, :]
        m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
        b_h, b_c = _split_fwd_step(
            p_prev, u + o_s * (G * H), hs + o_s * H, cs + o_s * H, gates + o_s * (4 * H), b_h, b_c, b_bn,
            b_w0, b_w1, b_w2, b_w3, m_v, i_b, B, H, o_bn, o_gn, o_4n, m_bn, BB, BK, DOT_PRECISION, CELL, HAS_LENGTHS,
        )  # fmt: skip
        if i == n - 1:
            tl.store(hn + o_bn, cast(b_h, hn.dtype.element_ty), mask=m_bn)
            if CELL == 0:
                tl.store(cn + o_bn, cast(b_c, cn.dtype.element_ty), mask=m_bn)
        else:
            tl.store(state + o_bn, b_h, mask=m_bn)
            if CELL == 0:
                tl.store(state + B * H + o_bn, b_c, mask=m_bn)
    elif i == 0:  # every row of the block has length 0: the state is h0 / c0
        tl.store(hn + o_bn, tl.load(h0 + o_bn, mask=m_bn, other=0.0), mask=m_bn)
        if CELL == 0:
            tl.store(cn + o_bn, tl.load(c0 + o_bn, mask=m_bn, other=0.0), mask=m_bn)


@triton.jit
def _split_bwd_init(h0, c0, dhn, dcn, o_bn, m_bn, CELL: tl.constexpr, HAS_DHN: tl.constexpr, HAS_DCN: tl.constexpr):
    """This program's slices of h0 (GRU) / c0 (LSTM), and the carried dh and dc at the last step."""
    b_carry = tl.zeros(o_bn.shape, dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    b_dc = tl.zeros(o_bn.shape, dtype=tl.float32)
    if CELL == 0:
        if HAS_DCN:
            b_dc += tl.load(dcn + o_bn, mask=m_bn, other=0.0).to(tl.float32)
        b_x0 = tl.load(c0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    else:
        b_x0 = tl.load(h0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    return b_x0, b_carry, b_dc


@triton.jit(do_not_specialize=["T"])
def gated_split_bwd_kernel(
    w,  # (G*H, H): W_hh
    hs,  # (T, B, H)
    cs,  # (T, B, H) (LSTM)
    gates,  # (T, B, 4H)
    h0,  # (B, H)
    c0,  # (B, H) (LSTM)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    dcn,  # (B, H), read only when HAS_DCN (LSTM)
    lengths,  # (B,) int, read only when HAS_LENGTHS
    da,  # (T, B, 4H) float32 out
    dh0,  # (B, H) out
    dc0,  # (B, H) out (LSTM)
    count,  # (cdiv(B, BB),) int32 zeros
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
    HAS_DCN: tl.constexpr,
):
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    o_n, o_gn, o_4n = _split_offsets(B, H, BB, BN, CELL)
    n_prog = tl.num_programs(1)
    b_w0, b_w1, b_w2, b_w3 = _split_weights(w, H, o_n, m_kn, BK, BN, SK, CELL, False)
    b_x0, b_carry, b_dc = _split_bwd_init(h0, c0, dhn, dcn, o_bn, m_bn, CELL, HAS_DHN, HAS_DCN)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    for j in range(n):
        # the forward's loop index n - 1 - j; "prev" is the step the forward ran before s
        s = j if REVERSE else n - 1 - j
        s_prev = s + 1 if REVERSE else s - 1
        o_s = s.to(tl.int64) * B
        b_dh = b_carry
        if HAS_DHS:
            b_dh += tl.load(dhs + o_s * H + o_bn, mask=m_bn, other=0.0).to(tl.float32)
        m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
        p_x = cs + o_s * H if CELL == 0 else hs
        p_xp = (cs if CELL == 0 else hs) + s_prev.to(tl.int64) * B * H
        first = j == n - 1
        _, _, _, _, b_dc, b_part = _bwd_local(
            b_dh, b_dc, first, b_x0, b_x0, gates + o_s * (4 * H), da + o_s * (4 * H), p_x, p_xp, o_bn, o_4n,
            m_bn, m_bn & (j < n - 1), m_v, H, CELL, HAS_LENGTHS,
        )  # fmt: skip
        grid_barrier(count + i_b, (j + 1) * n_prog)
        b_carry = b_part + _split_carry(da + o_s * (4 * H), b_w0, b_w1, b_w2, b_w3, i_b, B, H, BB, BK,
                                        DOT_PRECISION, CELL)  # fmt: skip
    tl.store(dh0 + o_bn, cast(b_carry, dh0.dtype.element_ty), mask=m_bn)
    if CELL == 0:
        tl.store(dc0 + o_bn, cast(b_dc, dc0.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["i", "T"])
def gated_split_bwd_step_kernel(
    w,  # (G*H, H): W_hh
    hs,  # (T, B, H)
    cs,  # (T, B, H) (LSTM)
    gates,  # (T, B, 4H)
    h0,  # (B, H)
    c0,  # (B, H) (LSTM)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    dcn,  # (B, H), read only when HAS_DCN (LSTM)
    lengths,  # (B,) int, read only when HAS_LENGTHS
    state,  # (2, B, H) float32 scratch: each program's `part` of dh_prev and LSTM's dc between launches
    da,  # (T, B, 4H) float32 out
    dh0,  # (B, H) out, written by the last launch (i == n)
    dc0,  # (B, H) out (LSTM)
    i,  # launch 0..T: finishes backward step i - 1 (i > 0), then runs step i (i < n = block_steps)
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
    HAS_DCN: tl.constexpr,
):
    KC: tl.constexpr = 256 if BK > 256 else BK  # the carry's reduction rows per turn (`_split_carry_chunked`)
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    o_n, o_gn, o_4n = _split_offsets(B, H, BB, BN, CELL)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    if i <= n:
        b_x0, b_carry, b_dc = _split_bwd_init(h0, c0, dhn, dcn, o_bn, m_bn, CELL, HAS_DHN, HAS_DCN)
        if i > 0:
            # backward step i - 1 ran time index s_last; its da (every unit) is now written
            s_last = i - 1 if REVERSE else n - i
            p_da = da + s_last.to(tl.int64) * B * (4 * H)
            b_carry = tl.load(state + o_bn, mask=m_bn, other=0.0)
            b_carry += _split_carry_chunked(p_da, w, H, o_n, i_b, B, BB, BK, BN, SK, KC, DOT_PRECISION, CELL)
            if CELL == 0:
                b_dc = tl.load(state + B * H + o_bn, mask=m_bn, other=0.0)
        if i == n:
            tl.store(dh0 + o_bn, cast(b_carry, dh0.dtype.element_ty), mask=m_bn)
            if CELL == 0:
                tl.store(dc0 + o_bn, cast(b_dc, dc0.dtype.element_ty), mask=m_bn)
        else:
            s = i if REVERSE else n - 1 - i
            s_prev = s + 1 if REVERSE else s - 1
            o_s = s.to(tl.int64) * B
            b_dh = b_carry
            if HAS_DHS:
                b_dh += tl.load(dhs + o_s * H + o_bn, mask=m_bn, other=0.0).to(tl.float32)
            m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
            p_x = cs + o_s * H if CELL == 0 else hs
            p_xp = (cs if CELL == 0 else hs) + s_prev.to(tl.int64) * B * H
            first = i == n - 1
            _, _, _, _, b_dc, b_part = _bwd_local(
                b_dh, b_dc, first, b_x0, b_x0, gates + o_s * (4 * H), da + o_s * (4 * H), p_x, p_xp, o_bn, o_4n,
                m_bn, m_bn & (i < n - 1), m_v, H, CELL, HAS_LENGTHS,
            )  # fmt: skip
            tl.store(state + o_bn, b_part, mask=m_bn)
            if CELL == 0:
                tl.store(state + B * H + o_bn, b_dc, mask=m_bn)
