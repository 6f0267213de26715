"""Single-program persistent recurrence: W_h stays on chip for all T steps.

    x_t = h_{t-1} + inp_t
    h_t = tanh(x_t @ W^T + bias)

Dimension legend:
    T   time steps (runtime, never specialised)
    B   batch rows; BB rows per program, grid = cdiv(B, BB)
    H   hidden size; BH = next power of two >= max(H, 16), padded lanes masked

Every tensor is contiguous. Pointers advance by B*H per step, so offsets into
(T, B, H) buffers are 64-bit even when T*B*H passes 2**31 (B*H < 2**31 is
checked by the launcher).
"""

import triton
import triton.language as tl

from .utils import dot_f32, tanh_f32


@triton.jit
def _tile(B, H, BB: tl.constexpr, BH: tl.constexpr):
    """Offsets and masks of this program's [BB, BH] rows and of a whole [BH, BH] matrix."""
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_h = tl.arange(0, BH)
    m_h = o_h < H
    o_bh = o_b[:, None] * H + o_h[None, :]
    m_bh = (o_b < B)[:, None] & m_h[None, :]
    o_hh = o_h[:, None] * H + o_h[None, :]
    m_hh = m_h[:, None] & m_h[None, :]
    return o_h, m_h, o_bh, m_bh, o_hh, m_hh


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_fwd_kernel(
    inp,  # (T, B, H)
    wt,  # (H, H) W^T, contiguous
    bias,  # (H,)
    h0,  # (B, H)
    hs,  # (T, B, H) out
    hn,  # (B, H) out
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    o_h, m_h, o_bh, m_bh, o_hh, m_hh = _tile(B, H, BB, BH)

    # a = x @ W^T: W^T comes in row-major, loaded once and kept for all T
    b_wt = tl.load(wt + o_hh, mask=m_hh, other=0.0)  # [BH, BH]
    b_bias = tl.load(bias + o_h, mask=m_h, other=0.0).to(tl.float32)  # [BH]
    b_h = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]

    p_inp = inp + o_bh
    p_hs = hs + o_bh
    for _ in range(T):
        b_x = b_h + tl.load(p_inp, mask=m_bh, other=0.0).to(tl.float32)
        b_a = dot_f32(b_x, b_wt, DOT_PRECISION)
        b_h = tanh_f32(b_a + b_bias[None, :])
        tl.store(p_hs, b_h.to(hs.dtype.element_ty), mask=m_bh)
        p_inp += B * H
        p_hs += B * H
    tl.store(hn + o_bh, b_h.to(hn.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_bwd_kernel(
    w,  # (H, H)
    hs,  # (T, B, H)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    da,  # (T, B, H) out, storage dtype: dL/d(pre-activation), reduced into dW and db by the caller
    dinp,  # (T, B, H) out
    dh0,  # (B, H) out
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
):
    o_h, m_h, o_bh, m_bh, o_hh, m_hh = _tile(B, H, BB, BH)

    # dx = da @ W, so W is used as stored
    b_w = tl.load(w + o_hh, mask=m_hh, other=0.0)  # [BH, BH]
    b_carry = tl.zeros([BB, BH], dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bh, mask=m_bh, other=0.0).to(tl.float32)

    # start at step T-1 and walk back; (T - 1) * B * H is formed in 64 bits
    o_last = (T - 1).to(tl.int64) * B * H
    p_hs = hs + o_last + o_bh
    p_dhs = dhs + o_last + o_bh
    p_da = da + o_last + o_bh
    p_dinp = dinp + o_last + o_bh
    for _ in range(T):
        b_dh = b_carry
        if HAS_DHS:
            b_dh += tl.load(p_dhs, mask=m_bh, other=0.0).to(tl.float32)
        b_h = tl.load(p_hs, mask=m_bh, other=0.0).to(tl.float32)
        b_da = b_dh * (1.0 - b_h * b_h)
        tl.store(p_da, b_da.to(da.dtype.element_ty), mask=m_bh)
        # the carry into step t is both dL/d inp_t and dL/d h_{t-1}
        b_carry = dot_f32(b_da, b_w, DOT_PRECISION)
        tl.store(p_dinp, b_carry.to(dinp.dtype.element_ty), mask=m_bh)
        p_hs -= B * H
        p_dhs -= B * H
        p_da -= B * H
        p_dinp -= B * H
    tl.store(dh0 + o_bh, b_carry.to(dh0.dtype.element_ty), mask=m_bh)
