"""Multi-program recurrence: W_hh split by output columns over many programs.

    h_s = act(h_prev @ W^T + u_s)          u = inp @ W_ih^T + biases, one GEMM by the caller
    h_prev = h_{s-1} (h_{s+1} when REVERSE), h0 at the first processed step

With HAS_LENGTHS, row b runs only its steps s < lengths[b] and keeps its state
at the others (hs[s] = h_prev), and a batch block runs only up to its longest
row (`block_steps`), as in the single-program kernels.

Dimension legend:
    T   time steps (runtime, never specialised); i counts processed steps, s is the time index
    B   batch rows; BB rows per program
    H   hidden size; BK = next power of two >= max(H, 16): the reduction dim, all of H
    BN  output columns per program; grid = (cdiv(B, BB), cdiv(H, BN))
    SK  slices of the reduction (`dot_split_k`): 1, or the program's warp count for tensor-core
        dots, so that each warp runs BK / SK of the mma chain instead of repeating all of it

Program (i_b, i_n) keeps W^T[:, i_n*BN : (i_n+1)*BN] on chip and produces that
slice of h_s for its batch rows. The full h_prev comes back through global
memory (it is hs at the previous step, already written for the outputs), so
the programs of one batch block meet once per step:
  * persistent kernels loop over all T steps and meet at `grid_barrier`
    (every program must be resident; the launcher checks that the grid fits);
  * step kernels cover one step per launch and the launch boundary is the
    barrier (the backward's launch i finishes step i-1 and starts step i, so
    T steps take T + 1 launches). They run the same per-program helpers, so
    the interpreter proves the math that the persistent kernels run.

The previous state is read in the storage dtype, which is the dot's operand
dtype anyway. Offsets into (T, B, H) buffers are formed in 64 bits.
"""

import triton
import triton.language as tl

from .utils import act_f32, act_grad, block_steps, cast, dot_split_k, grid_barrier


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
    return i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn


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
def _slab_rows(p, i_b, k0, B, H, stride, BB: tl.constexpr, BK: tl.constexpr):
    """As `_rows`, for columns k0 .. k0 + BK of a (B, H) slab whose rows lie `stride` elements apart (one gate's
    slot of a (B, 4H) buffer)."""
    p_rows = tl.make_block_ptr(p, (B, H), (stride, 1), (i_b * BB, k0), (BB, BK), (1, 0))
    return tl.load(p_rows, boundary_check=(0, 1), padding_option="zero", cache_modifier=".cg")


@triton.jit
def _valid(s, lengths, o_b, m_b, BB: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """[BB, 1]: which rows run step s (all of them without lengths)."""
    if HAS_LENGTHS:
        return (s < tl.load(lengths + o_b, mask=m_b, other=0))[:, None]
    return tl.full([BB, 1], 1, tl.int1)


@triton.jit
def _fwd_step(
    p_prev, p_u, p_hs, b_wt, m_v, i_b, B, H, o_bn, m_bn,
    BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr, RELU: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """One step for one program: full rows of h_prev in, its slice of h_s out."""
    b_x = _rows(p_prev, i_b, B, H, BB, BK)  # [BB, BK]
    b_a = dot_split_k(b_x, b_wt, DOT_PRECISION)  # [BB, BN]
    b_h = act_f32(b_a + tl.load(p_u + o_bn, mask=m_bn, other=0.0).to(tl.float32), RELU)
    if HAS_LENGTHS:
        # rows past their length copy h_prev; the masked load reads nothing for the others
        b_keep = tl.load(p_prev + o_bn, mask=m_bn & ~m_v, other=0.0).to(tl.float32)
        b_h = tl.where(m_v, b_h, b_keep)
    tl.store(p_hs + o_bn, cast(b_h, p_hs.dtype.element_ty), mask=m_bn)
    return b_h


@triton.jit
def _bwd_da(
    b_carry, p_hs, p_dhs, p_da, m_v, o_bn, m_bn, RELU: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_DHS: tl.constexpr
):
    """dh_s = carry + dhs_s and da_s = dh_s * act'(h_s) (0 on padded rows) on this program's slice."""
    b_dh = b_carry
    if HAS_DHS:
        b_dh += tl.load(p_dhs + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    b_h = tl.load(p_hs + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    b_da = b_dh * act_grad(b_h, RELU)
    if HAS_LENGTHS:
        b_da = tl.where(m_v, b_da, 0.0)
    tl.store(p_da + o_bn, cast(b_da, p_da.dtype.element_ty), mask=m_bn)
    return b_dh


@triton.jit
def _bwd_carry(
    p_da, b_dh, b_w, m_v, i_b, B, H,
    BB: tl.constexpr, BK: tl.constexpr, DOT_PRECISION: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """dL/dh_prev on the slice: da_s (all columns) @ W[:, slice]; padded rows pass dh_s through."""
    b_da = _rows(p_da, i_b, B, H, BB, BK)  # [BB, BK]
    b_carry = dot_split_k(b_da, b_w, DOT_PRECISION)  # [BB, BN]
    if HAS_LENGTHS:
        b_carry = tl.where(m_v, b_carry, b_dh)
    return b_carry


@triton.jit(do_not_specialize=["T"])
def split_recurrent_fwd_kernel(
    u,  # (T, B, H): inp @ W_ih^T + biases
    wt,  # (H, H): W_hh^T, contiguous
    h0,  # (B, H)
    lengths,  # (B,) int, read only when HAS_LENGTHS
    hs,  # (T, B, H) out
    hn,  # (B, H) out
    count,  # (cdiv(B, BB),) int32 zeros: barrier counter per batch block
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    n_prog = tl.num_programs(1)
    # [SK, BK / SK, BN], kept for all T
    b_wt = tl.reshape(tl.load(wt + o_kn, mask=m_kn, other=0.0), (SK, BK // SK, BN))
    # a block whose rows all have length 0 keeps h0
    b_h = tl.load(h0 + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    p_prev = h0
    # every program of a batch block computes the same n, so they meet at the same barriers
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    o_t = (n - 1).to(tl.int64) * B * H if REVERSE else tl.zeros([], dtype=tl.int64)
    d_t = -B * H if REVERSE else B * H
    for i in range(n):
        m_v = _valid(n - 1 - i if REVERSE else i, lengths, o_b, m_b, BB, HAS_LENGTHS)
        b_h = _fwd_step(
            p_prev, u + o_t, hs + o_t, b_wt, m_v, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION, RELU, HAS_LENGTHS
        )
        grid_barrier(count + i_b, (i + 1) * n_prog)
        p_prev = hs + o_t
        o_t += d_t
    tl.store(hn + o_bn, cast(b_h, hn.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["i", "T"])
def split_recurrent_fwd_step_kernel(
    u,  # (T, B, H): inp @ W_ih^T + biases
    wt,  # (H, H): W_hh^T, contiguous
    h0,  # (B, H)
    lengths,  # (B,) int, read only when HAS_LENGTHS
    hs,  # (T, B, H) out
    hn,  # (B, H) out, written at the last step
    i,  # processed steps so far: this launch runs time index s = i (n - 1 - i when REVERSE), n = block_steps
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    if i < n:
        b_wt = tl.reshape(tl.load(wt + o_kn, mask=m_kn, other=0.0), (SK, BK // SK, BN))
        s = n - 1 - i if REVERSE else i
        o_t = s.to(tl.int64) * B * H
        p_prev = h0
        if i > 0:
            p_prev = hs + (o_t + B * H if REVERSE else o_t - B * H)
        m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
        b_h = _fwd_step(
            p_prev, u + o_t, hs + o_t, b_wt, m_v, i_b, B, H, o_bn, m_bn, BB, BK, DOT_PRECISION, RELU, HAS_LENGTHS
        )
        if i == n - 1:
            tl.store(hn + o_bn, cast(b_h, hn.dtype.element_ty), mask=m_bn)
    elif i == 0:  # every row of the block has length 0: h_n is h0
        tl.store(hn + o_bn, tl.load(h0 + o_bn, mask=m_bn, other=0.0), mask=m_bn)


@triton.jit(do_not_specialize=["T"])
def split_recurrent_bwd_kernel(
    w,  # (H, H): W_hh
    hs,  # (T, B, H)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    lengths,  # (B,) int, read only when HAS_LENGTHS
    da,  # (T, B, H) out: dL/d(pre-activation) = dL/du; the caller reduces it into dW_hh
    dh0,  # (B, H) out
    count,  # (cdiv(B, BB),) int32 zeros
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
):
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    n_prog = tl.num_programs(1)
    # [SK, BK / SK, BN], kept for all T
    b_w = tl.reshape(tl.load(w + o_kn, mask=m_kn, other=0.0), (SK, BK // SK, BN))
    b_carry = tl.zeros([BB, BN], dtype=tl.float32)
    if HAS_DHN:
        b_carry += tl.load(dhn + o_bn, mask=m_bn, other=0.0).to(tl.float32)
    # the forward's steps in the opposite order
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    o_t = tl.zeros([], dtype=tl.int64) if REVERSE else (n - 1).to(tl.int64) * B * H
    d_t = B * H if REVERSE else -B * H
    for i in range(n):
        m_v = _valid(i if REVERSE else n - 1 - i, lengths, o_b, m_b, BB, HAS_LENGTHS)
        b_dh = _bwd_da(b_carry, hs + o_t, dhs + o_t, da + o_t, m_v, o_bn, m_bn, RELU, HAS_LENGTHS, HAS_DHS)
        grid_barrier(count + i_b, (i + 1) * n_prog)
        b_carry = _bwd_carry(da + o_t, b_dh, b_w, m_v, i_b, B, H, BB, BK, DOT_PRECISION, HAS_LENGTHS)
        o_t += d_t
    tl.store(dh0 + o_bn, cast(b_carry, dh0.dtype.element_ty), mask=m_bn)


@triton.jit(do_not_specialize=["i", "T"])
def split_recurrent_bwd_step_kernel(
    w,  # (H, H): W_hh
    hs,  # (T, B, H)
    dhs,  # (T, B, H), read only when HAS_DHS
    dhn,  # (B, H), read only when HAS_DHN
    lengths,  # (B,) int, read only when HAS_LENGTHS
    dh,  # (B, H) fp32 scratch: dh of the step the previous launch ran (padded rows pass it on)
    da,  # (T, B, H) out: dL/d(pre-activation) = dL/du
    dh0,  # (B, H) out, written by the last launch (i == T)
    i,  # launch 0..T: finishes processed step i - 1 (i > 0), then runs step i (i < n = block_steps)
    T,
    B,
    H,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    RELU: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_DHS: tl.constexpr,
    HAS_DHN: tl.constexpr,
):
    i_b, o_b, m_b, o_bn, m_bn, o_kn, m_kn = _tile(B, H, BB, BK, BN)
    # processed step i is time index n - 1 - i walking back (i when the forward ran REVERSE)
    n = block_steps(lengths, o_b, m_b, T, HAS_LENGTHS)
    if i <= n:
        b_carry = tl.zeros([BB, BN], dtype=tl.float32)
        if i == 0:
            if HAS_DHN:
                b_carry += tl.load(dhn + o_bn, mask=m_bn, other=0.0).to(tl.float32)
        else:
            s_prev = i - 1 if REVERSE else n - i
            b_w = tl.reshape(tl.load(w + o_kn, mask=m_kn, other=0.0), (SK, BK // SK, BN))
            b_dh = tl.zeros([BB, BN], dtype=tl.float32)
            if HAS_LENGTHS:
                b_dh = tl.load(dh + o_bn, mask=m_bn, other=0.0)
            m_v = _valid(s_prev, lengths, o_b, m_b, BB, HAS_LENGTHS)
            p_da = da + s_prev.to(tl.int64) * B * H
            b_carry = _bwd_carry(p_da, b_dh, b_w, m_v, i_b, B, H, BB, BK, DOT_PRECISION, HAS_LENGTHS)
        if i == n:
            tl.store(dh0 + o_bn, cast(b_carry, dh0.dtype.element_ty), mask=m_bn)
        else:
            s = i if REVERSE else n - 1 - i
            o_t = s.to(tl.int64) * B * H
            m_v = _valid(s, lengths, o_b, m_b, BB, HAS_LENGTHS)
            b_dh = _bwd_da(b_carry, hs + o_t, dhs + o_t, da + o_t, m_v, o_bn, m_bn, RELU, HAS_LENGTHS, HAS_DHS)
            if HAS_LENGTHS:
                tl.store(dh + o_bn, b_dh, mask=m_bn)
