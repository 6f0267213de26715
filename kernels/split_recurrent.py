"""Multi-program recurrence: W_h split by output columns over many programs.

    u_t = inp_t @ W^T + bias            (one large GEMM over all steps, by the caller)
    h_t = tanh(h_{t-1} @ W^T + u_t)

Dimension legend:
    T   time steps (runtime, never specialised)
    B   batch rows; BB rows per program
    H   hidden size; BK = next power of two >= max(H, 16): the reduction dim, all of H
    BN  output columns per program; grid = (cdiv(B, BB), cdiv(H, BN))

Program (i_b, i_n) keeps W^T[:, i_n*BN : (i_n+1)*BN] on chip and produces that
slice of h_t for its batch rows. The full h_{t-1} comes back through global
memory (it is hs[t-1], already written for the outputs), so the programs of one
batch block meet once per step:
  * persistent kernels loop over all T steps and meet at `grid_barrier`
    (every program must be resident; the launcher checks that the grid fits);
  * step kernels cover one step (backward: one phase of a step) per launch and
    the launch boundary is the barrier. They run the same per-program helpers,
    so the interpreter proves the math that the persistent kernels run.

Folding inp into u keeps one [BB, BK] operand per step in registers instead of
two. The previous state is read in the storage dtype, which is the dot's operand
dtype anyway. Offsets into (T, B, H) buffers are formed in 64 bits.
"""

import triton
import triton.language as tl

from .utils import dot_f32, grid_barrier, tanh_f32


@triton.jit
def _tile(B, H, BB: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr):
    i_b, i_n = tl.program_id(0), tl.program_id(1)
    o_b = i_b * BB + tl.arange(0, BB)
    o_k = tl.arange(0, BK)
    o_n = i_n * BN + tl.arange(0, BN)
    m_b = o_b < B
    m_k = o_k < H
    m_n = o_n < H
    o_bn = o_b[:, None] * H + o_n[None, :]  # [BB, BN]
    m_bn = m_b[:, None] & m_n[None, :]
    # columns o_n of a row-major (H, H) matrix, as [BK, BN]
    o_kn = o_k[:, None] * H + o_n[None, :]
    m_kn = m_k[:, None] & m_n[None, :]
    return i_b, o_bn, m_bn, o_kn, m_kn


@triton.jit
def _rows(p, i_b, B, H, BB: tl.constexpr, BK: tl.constexpr):
    """Rows i_b*BB.. of a (B, H) slab, all H columns, as a [BB, BK] tile (zero padded).

    A block pointer: its bounds checks cost no [BB, BK] offset or mask tensor
    held across the time loop.
    """
    p_rows = tl.make_block_ptr(p, (B, H), (H, 1), (i_b * BB, 0), (BB, BK), (1, 0))
    # .cg: other programs wrote these rows, so bypass this SM's L1
    return tl.load(p_rows, boundary_check=(0, 1), padding_option="zero", cache_modifier=".cg")


@triton.jit
def _fwd_step(
    p_prev, p_u, p_hs, b_wt, i_b, B, H, o_bn, m_bn, BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr
):
    """One step for one program: full rows of h_{t-1} in, its slice of h_t out."""
    b_x = _rows(p_prev, i_b, B, H, BB, BK)  # [BB, BK]
    b_a = dot_f32(b_x, b_wt, DOT_PRECISION)  # [BB, BN]
    b_h = tanh_f32(b_a + tl.load(p_u + o_bn, mask=m_bn, other=0.0).to(tl.float32))
    tl.store(p_hs + o_bn, b_h.to(p_hs.dtype.element_ty), mask=m_bn)
    return b_h


@triton.jit
def _bwd_da(b_carry, p_hs, p_dhs, p_da, o_bn, m_bn, HAS_DHS: tl.constexpr):
    """da_t = (dh_t + carry) * (1 - h_t^2) on this program's column slice."""
    b_dh = b_carry
    if HAS_DHS:
        b_dh += tl.load(p_dhs + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    b_h = tl.load(p_hs + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    tl.store(p_da + o_bn, (b_dh * (1.0 - b_h * b_h)).to(p_da.dtype.element_ty), mask=m_bn)


@triton.jit
def _bwd_carry(
    p_da, p_dinp, b_w, i_b, B, H, o_bn, m_bn, BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr
):
    """carry slice = da_t (all columns) @ W[:, slice]: it is dL/d inp_t and dL/d h_{t-1}."""
    b_da = _rows(p_da, i_b, B, H, BB, BK)  # [BB, BK]
    b_carry = dot_f32(b_da, b_w, DOT_PRECISION)  # [BB, BN]
    tl.store(p_dinp + o_bn, b_carry.to(p_dinp.dtype.element_ty), mask=m_bn)
    return b_carry


@triton.jit(do_not_specialize=["T"])
def split_recurrent_fwd_kernel(
    u,  # (T, B, H): inp @ W^T + bias
    wt,  # (H, H): W^T, contiguous
    h0,  # (B, H)
    hs,  # (T, B, H) out
    hn,  # (B, H) out
    count,  # (cdiv(B, BB),) int32 zeros: barrier counter per batch block
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    n_prog = tl.num_programs(1)
    b_wt = tl.load(wt + o_kn, mask=m_kn, other=0.0)  # [BK, BN], kept for all T
    b_h = tl.zeros([BB, BN], dtype=tl.float32)
    p_prev = h0
    p_u = u
    p_hs = hs
    for t in range(T):
        b_h = _fwd_step(p_prev, p_u, p_hs, b_wt, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION)
        grid_barrier(count + i_b, (t + 1) * n_prog)
        p_prev = p_hs
        p_u += B * H
        p_hs += B * H
    tl.store(hn + o_bn, b_h.to(hn.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["t"])
def split_recurrent_fwd_step_kernel(
    u,  # (T, B, H): inp @ W^T + bias
    wt,  # (H, H): W^T, contiguous
    h0,  # (B, H)
    hs,  # (T, B, H) out
    hn,  # (B, H) out, written at the last step
    t,
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    b_wt = tl.load(wt + o_kn, mask=m_kn, other=0.0)
    o_t = t.to(tl.int64) * B * H
    p_prev = h0
    if t > 0:
        p_prev = hs + o_t - B * H
    b_h = _fwd_step(p_prev, u + o_t, hs + o_t, b_wt, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION)
    if t == T - 1:
        tl.store(hn + o_bn, b_h.to(hn.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["T"])
def split_recurrent_bwd_kernel(
    w,  # (H, H)
    hs,  # (T, B, H)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    da,  # (T, B, H) out, storage dtype: dL/d(pre-activation), reduced into dW and db by the caller
    dinp,  # (T, B, H) out
    dh0,  # (B, H) out
    count,  # (cdiv(B, BB),) int32 zeros
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
):
    i_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    n_prog = tl.num_programs(1)
    b_w = tl.load(w + o_kn, mask=m_kn, other=0.0)  # [BK, BN], kept for all T
    b_carry = tl.zeros([BB, BN], dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    o_t = (T - 1).to(tl.int64) * B * H
    for i in range(T):
        _bwd_da(b_carry, hs + o_t, dhs + o_t, da + o_t, o_bn, m_bn, HAS_DHS)
        grid_barrier(count + i_b, (i + 1) * n_prog)
        b_carry = _bwd_carry(da + o_t, dinp + o_t, b_w, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION)
        o_t -= B * H
    tl.store(dh0 + o_bn, b_carry.to(dh0.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["t"])
def split_recurrent_bwd_step_kernel(
    w,  # (H, H)
    hs,  # (T, B, H)
    dhs,  # (T, B, H), read only when HAS_DHS
    carry,  # (B, H) fp32: dhn (or zeros) before the first phase, then the running carry
    da,  # (T, B, H) out, storage dtype: dL/d(pre-activation), reduced into dW and db by the caller
    dinp,  # (T, B, H) out
    dh0,  # (B, H) out, written at t == 0
    t,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_DHS: tl.constexpr,
    PHASE: tl.constexpr,
):
    i_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    o_t = t.to(tl.int64) * B * H
    if PHASE == 0:
        b_carry = tl.load(carry + o_bn, mask=m_bn, other=0.0)
        _bwd_da(b_carry, hs + o_t, dhs + o_t, da + o_t, o_bn, m_bn, HAS_DHS)
    else:
        b_w = tl.load(w + o_kn, mask=m_kn, other=0.0)
        b_carry = _bwd_carry(da + o_t, dinp + o_t, b_w, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION)
        tl.store(carry + o_bn, b_carry, mask=m_bn)
        if t == 0:
            tl.store(dh0 + o_bn, b_carry.to(dh0.dtype.element_ty), mask=m_bn)
