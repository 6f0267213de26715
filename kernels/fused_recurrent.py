"""Single-program persistent recurrence: W_hh stays on chip for all T steps.

    h_s = act(h_prev @ W^T + u_s)          act: tanh, or relu when RELU
    h_prev = h_{s-1} (h_{s+1} when REVERSE), h0 at the first processed step

With HAS_LENGTHS, row b runs only its steps s < lengths[b]; at the others its
state stays as it is (hs[s] = h_prev), so the last state is the one after the
row's last valid step in either direction. A program runs only up to its
longest row (`block_steps`): past it nothing is written, and the caller masks
padded outputs and gradients.

Dimension legend:
    T   time steps (runtime, never specialised)
    B   batch rows; BB rows per program, grid = cdiv(B, BB)
    H   hidden size; BH = next power of two >= max(H, 16), padded lanes masked

Every tensor is contiguous. Offsets into (T, B, H) buffers are 64-bit, so
T*B*H may pass 2**31 (B*H < 2**31 is checked by the launcher).
"""

import triton
import triton.language as tl

from .utils import act_f32, act_grad, block_steps, cast, dot_f32


@triton.jit
def _tile(B, H, BB: tl.constexpr, BH: tl.constexpr):
    """Offsets and masks of this program's [BB, BH] rows and of a whole [BH, BH] matrix."""
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_h = tl.arange(0, BH)
    m_b = o_b < B
    m_h = o_h < H
    o_bh = o_b[:, None] * H + o_h[None, :]
    m_bh = m_b[:, None] & m_h[None, :]
    o_hh = o_h[:, None] * H + o_h[None, :]
    m_hh = m_h[:, None] & m_h[None, :]
    return o_b, m_b, o_bh, m_bh, o_hh, m_hh


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_fwd_kernel(
    u,  # (T, B, H): the input half of every step, inp @ W_ih^T + biases
    wt,  # (H, H): W_hh^T, contiguous
    h0,  # (B, H)
    lengths,  # (B,) int: valid steps per row, read only when HAS_LENGTHS
    hs,  # (T, B, H) out: the state after every step
    hn,  # (B, H) out
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    o_b, m_b, o_bh, m_bh, o_hh, m_hh = _tile(B, H, BB, BH)

    # a = h @ W^T: W^T comes in row-major, loaded once and kept for all T
    b_wt = tl.load(wt + o_hh, mask=m_hh, other=0.0)  # [BH, BH]
    b_h = tl.load(h0 + o_bh, mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)  # [BB]
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)

    # first processed step: 0, or n-1 walking back; (n - 1) * B * H is formed in 64 bits
    o_t = (n - 1).to(tl.int64) * B * H if REVERSE else tl.zeros([], dtype=tl.int64)
    d_t = -B * H if REVERSE else B * H
    for i in range(n):
        # the where keeps u out of the dot's accumulator: with it there, ptxas spills the fp32 FMA dot
        b_a = tl.where(m_bh, dot_f32(b_h, b_wt, DOT_PRECISION), 0.0)
        b_a += tl.load(u + o_t + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        if HAS_LENGTHS:
            s = n - 1 - i if REVERSE else i
            b_h = tl.where((s < b_len)[:, None], act_f32(b_a, RELU), b_h)
        else:
            b_h = act_f32(b_a, RELU)
        tl.store(hs + o_t + o_bh, cast(b_h, hs.dtype.element_ty), mask=m_bh)
        o_t += d_t
    tl.store(hn + o_bh, cast(b_h, hn.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_bwd_kernel(
    w,  # (H, H): W_hh
    hs,  # (T, B, H): the forward's states
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    lengths,  # (B,) int, read only when HAS_LENGTHS
    da,  # (T, B, H) out: dL/d(pre-activation) = dL/du; the caller reduces it into dW_hh
    dh0,  # (B, H) out
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
):
    o_b, m_b, o_bh, m_bh, o_hh, m_hh = _tile(B, H, BB, BH)

    # dh_prev = da @ W, so W is used as stored
    b_w = tl.load(w + o_hh, mask=m_hh, other=0.0)  # [BH, BH]
    b_carry = tl.zeros([BB, BH], dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)

    # the forward's steps in the opposite order
    o_t = tl.zeros([], dtype=tl.int64) if REVERSE else (n - 1).to(tl.int64) * B * H
    d_t = B * H if REVERSE else -B * H
    for i in range(n):
        b_dh = b_carry
        if HAS_DHS:
            b_dh += tl.load(dhs + o_t + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        b_h = tl.load(hs + o_t + o_bh, mask=m_bh, other=0.0).to(tl.float32)
        b_da = b_dh * act_grad(b_h, RELU)
        if HAS_LENGTHS:
            # a padded step copied the state: its gradient passes straight to h_prev
            m_v = ((i if REVERSE else n - 1 - i) < b_len)[:, None]
            b_da = tl.where(m_v, b_da, 0.0)
            b_carry = tl.where(m_v, dot_f32(b_da, b_w, DOT_PRECISION), b_dh)
        else:
            b_carry = dot_f32(b_da, b_w, DOT_PRECISION)
        tl.store(da + o_t + o_bh, cast(b_da, da.dtype.element_ty), mask=m_bh)
        o_t += d_t
    tl.store(dh0 + o_bh, cast(b_carry, dh0.dtype.element_ty), mask=m_bh)
