"""Single-program persistent LSTM and GRU recurrences: every gate's W_hh stays on chip for all T steps.

The input half of every gate is one GEMM over the whole sequence before the loop (u below); the loop does
h_prev @ W_hh^T for each gate and the cell's pointwise math, fused into the step. The cell math is a small
@triton.jit function per cell (`_lstm_step`, `_gru_step` and their backward twins); tiling, loads, lengths,
reverse and the time loop are shared. PyTorch's gate order and formulas:

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

Dimension legend:
    T   time steps (runtime, never specialised)
    B   batch rows; BB rows per program, grid = cdiv(B, BB)
    H   hidden size; BH = next power of two >= max(H, 16), padded lanes masked
    G   gates: 4 (LSTM) or 3 (GRU); CELL 0 = LSTM, 1 = GRU

Offsets into (T, B, *) buffers are 64-bit.
"""

import triton
import triton.language as tl

from .utils import block_steps, cast, dot_f32, tanh_f32

# CELL values: 0 = LSTM, 1 = GRU (literals in the kernels: a plain module global cannot be read in @jit code,
# and a tl.constexpr global would enter the cache keys unevenly, see utils.interpreted)


@triton.jit
def _sigmoid(x):
    """Float32 logistic: exp of a large -x gives inf and 1 / inf = 0, so it saturates cleanly."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _gate_t(w, g, H, o_h, m_hh):
    """W_hh[g*H:(g+1)*H, :]^T as a [BH(k), BH(n)] tile: element [k, n] = W_hh[g*H + n, k]."""
    return tl.load(w + (g * H + o_h[None, :]).to(tl.int64) * H + o_h[:, None], mask=m_hh, other=0.0)


@triton.jit
def _gate(w, g, H, o_h, m_hh):
    """W_hh[g*H:(g+1)*H, :] as stored, [BH(n), BH(k)]: the backward's dh_prev = da_g @ W_g."""
    return tl.load(w + (g * H + o_h[:, None]).to(tl.int64) * H + o_h[None, :], mask=m_hh, other=0.0)


@triton.jit
def _lstm_step(b_h, b_c, b_u0, b_u1, b_u2, b_u3, b_w0, b_w1, b_w2, b_w3, m_bh, DOT_PRECISION: tl.constexpr):
    """One LSTM step on [BB, BH] tiles: (h, c, i, f, g, o)."""
    b_i = _sigmoid(tl.where(m_bh, dot_f32(b_h, b_w0, DOT_PRECISION), 0.0) + b_u0)
    b_f = _sigmoid(tl.where(m_bh, dot_f32(b_h, b_w1, DOT_PRECISION), 0.0) + b_u1)
    b_g = tanh_f32(tl.where(m_bh, dot_f32(b_h, b_w2, DOT_PRECISION), 0.0) + b_u2)
    b_o = _sigmoid(tl.where(m_bh, dot_f32(b_h, b_w3, DOT_PRECISION), 0.0) + b_u3)
    b_c = b_f * b_c + b_i * b_g
    return b_o * tanh_f32(b_c), b_c, b_i, b_f, b_g, b_o


@triton.jit
def _gru_step(b_h, b_u0, b_u1, b_u2, b_bn, b_w0, b_w1, b_w2, m_bh, DOT_PRECISION: tl.constexpr):
    """One GRU step on [BB, BH] tiles: (h, r, z, n, l) with l = h_prev @ W_hn^T + b_hn."""
    b_r = _sigmoid(tl.where(m_bh, dot_f32(b_h, b_w0, DOT_PRECISION), 0.0) + b_u0)
    b_z = _sigmoid(tl.where(m_bh, dot_f32(b_h, b_w1, DOT_PRECISION), 0.0) + b_u1)
    b_l = tl.where(m_bh, dot_f32(b_h, b_w2, DOT_PRECISION), 0.0) + b_bn
    b_n = tanh_f32(b_u2 + b_r * b_l)
    return (1.0 - b_z) * b_n + b_z * b_h, b_r, b_z, b_n, b_l


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
    b_w0 = _gate_t(w, 0, H, o_h, m_hh)  # [BH, BH]
    b_w1 = _gate_t(w, 1, H, o_h, m_hh)
    b_w2 = _gate_t(w, 2, H, o_h, m_hh)
    if CELL == 0:
        b_w3 = _gate_t(w, 3, H, o_h, m_hh)
        b_c = tl.load(c0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    else:
        b_bn = tl.load(b_hn + o_h, mask=m_h, other=0.0).to(tl.float32)[None, :]  # [1, BH]
    b_h = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)  # [BB]
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)

    for i in range(n):
        s = n - 1 - i if REVERSE else i
        o_s = s.to(tl.int64) * B  # rows before step s
        p_u = u + o_s * (G * H) + o_bg
        b_u0 = tl.load(p_u, mask=m_bh, other=0.0).to(tl.float32)
        b_u1 = tl.load(p_u + H, mask=m_bh, other=0.0).to(tl.float32)
        b_u2 = tl.load(p_u + 2 * H, mask=m_bh, other=0.0).to(tl.float32)
        p_g = gates + o_s * (4 * H) + o_b4
        if CELL == 0:
            b_u3 = tl.load(p_u + 3 * H, mask=m_bh, other=0.0).to(tl.float32)
            h_new, c_new, b_q0, b_q1, b_q2, b_q3 = _lstm_step(
                b_h, b_c, b_u0, b_u1, b_u2, b_u3, b_w0, b_w1, b_w2, b_w3, m_bh, DOT_PRECISION
            )
        else:
            h_new, b_q0, b_q1, b_q2, b_q3 = _gru_step(
                b_h, b_u0, b_u1, b_u2, b_bn, b_w0, b_w1, b_w2, m_bh, DOT_PRECISION
            )
        if HAS_LENGTHS:
            m_v = (s < b_len)[:, None]  # a padded step keeps the state
            b_h = tl.where(m_v, h_new, b_h)
            if CELL == 0:
                b_c = tl.where(m_v, c_new, b_c)
        else:
            b_h = h_new
            if CELL == 0:
                b_c = c_new
        tl.store(hs + o_s * H + o_bh, cast(b_h, hs.dtype.element_ty), mask=m_bh)
        if CELL == 0:
            tl.store(cs + o_s * H + o_bh, cast(b_c, cs.dtype.element_ty), mask=m_bh)
        tl.store(p_g, b_q0, mask=m_bh)  # gates stay float32: the backward's derivatives read them
        tl.store(p_g + H, b_q1, mask=m_bh)
        tl.store(p_g + 2 * H, b_q2, mask=m_bh)
        tl.store(p_g + 3 * H, b_q3, mask=m_bh)
    tl.store(hn + o_bh, cast(b_h, hn.dtype.element_ty), mask=m_bh)
    if CELL == 0:
        tl.store(cn + o_bh, cast(b_c, cn.dtype.element_ty), mask=m_bh)


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
    b_w0 = _gate(w, 0, H, o_h, m_hh)
    b_w1 = _gate(w, 1, H, o_h, m_hh)
    b_w2 = _gate(w, 2, H, o_h, m_hh)
    if CELL == 0:
        b_w3 = _gate(w, 3, H, o_h, m_hh)
        b_c0 = tl.load(c0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        b_dc = tl.zeros([BB, BH], dtype=tl.float32)
        if HAS_DCN:
            b_dc += tl.load(dcn + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    b_h0 = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)
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
        first = i == 0  # the forward's first step starts from h0 / c0
        s_prev = s + 1 if REVERSE else s - 1
        o_s = s.to(tl.int64) * B
        o_p = s_prev.to(tl.int64) * B
        b_dh = b_carry
        if HAS_DHS:
            b_dh += tl.load(dhs + o_s * H + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        p_g = gates + o_s * (4 * H) + o_b4
        b_q0 = tl.load(p_g, mask=m_bh, other=0.0)
        b_q1 = tl.load(p_g + H, mask=m_bh, other=0.0)
        b_q2 = tl.load(p_g + 2 * H, mask=m_bh, other=0.0)
        b_q3 = tl.load(p_g + 3 * H, mask=m_bh, other=0.0)
        if CELL == 0:
            b_c = tl.load(cs + o_s * H + o_bh, mask=m_bh, other=0.0).to(tl.float32)
            b_cp = tl.load(cs + o_p * H + o_bh, mask=m_bh & (i > 0), other=0.0).to(tl.float32)
            b_cp = tl.where(first, b_c0, b_cp)
            b_da0, b_da1, b_da2, b_da3, b_dcp = _lstm_step_bwd(b_dh, b_dc, b_c, b_cp, b_q0, b_q1, b_q2, b_q3)
            b_dhp = dot_f32(b_da0, b_w0, DOT_PRECISION) + dot_f32(b_da1, b_w1, DOT_PRECISION)
            b_dhp += dot_f32(b_da2, b_w2, DOT_PRECISION) + dot_f32(b_da3, b_w3, DOT_PRECISION)
        else:
            b_hp = tl.load(hs + o_p * H + o_bh, mask=m_bh & (i > 0), other=0.0).to(tl.float32)
            b_hp = tl.where(first, b_h0, b_hp)
            b_da0, b_da1, b_da2, b_da3, b_direct = _gru_step_bwd(b_dh, b_hp, b_q0, b_q1, b_q2, b_q3)
            b_dhp = dot_f32(b_da0, b_w0, DOT_PRECISION) + dot_f32(b_da1, b_w1, DOT_PRECISION)
            b_dhp += dot_f32(b_da3, b_w2, DOT_PRECISION) + b_direct
        if HAS_LENGTHS:
            # a padded step copied the state: its gradients pass straight to the previous state
            m_v = (s < b_len)[:, None]
            b_da0 = tl.where(m_v, b_da0, 0.0)
            b_da1 = tl.where(m_v, b_da1, 0.0)
            b_da2 = tl.where(m_v, b_da2, 0.0)
            b_da3 = tl.where(m_v, b_da3, 0.0)
            b_carry = tl.where(m_v, b_dhp, b_dh)
            if CELL == 0:
                b_dc = tl.where(m_v, b_dcp, b_dc)
        else:
            b_carry = b_dhp
            if CELL == 0:
                b_dc = b_dcp
        p_d = da + o_s * (4 * H) + o_b4
        tl.store(p_d, cast(b_da0, da.dtype.element_ty), mask=m_bh)
        tl.store(p_d + H, cast(b_da1, da.dtype.element_ty), mask=m_bh)
        tl.store(p_d + 2 * H, cast(b_da2, da.dtype.element_ty), mask=m_bh)
        tl.store(p_d + 3 * H, cast(b_da3, da.dtype.element_ty), mask=m_bh)
    tl.store(dh0 + o_bh, cast(b_carry, dh0.dtype.element_ty), mask=m_bh)
    if CELL == 0:
        tl.store(dc0 + o_bh, cast(b_dc, dc0.dtype.element_ty), mask=m_bh)
