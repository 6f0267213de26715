"""Device helpers shared by the recurrence kernels.

Dimension legend: none; these act elementwise or on a scalar counter.
"""

import os

import triton
import triton.language as tl

#: Kernels built for Triton's CPU interpreter (read once, like triton itself does).
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.constexpr_function
def interpreted():
    """_INTERPRET as a compile-time constant.

    Not a module-level tl.constexpr: Triton 3.6 hashes a kernel's global constexprs into its
    cache key only when the helper using one was hashed before, so such a global gave equal
    builds different keys depending on which kernel a process hashed first.
    """
    return _INTERPRET


@triton.jit
def cast(x, dtype: tl.constexpr):
    """x.to(dtype) as the GPU rounds it, compiled or interpreted: every float32 -> bfloat16 cast of the kernels.

    Compiled it is the plain cast (cvt.rn.bf16.f32, round to nearest even): the branch below is
    pruned at compile time, so the machine code is that of `x.to(dtype)`. Triton 3.6's
    interpreter truncates float32 -> bfloat16 instead (round toward zero), which biases every
    rounding of a half-precision state and about doubles a recurrence's bfloat16 error; there
    this rounds to nearest even itself on the bit pattern (NaN stays a quiet NaN).
    """
    if interpreted() and dtype == tl.bfloat16 and x.dtype == tl.float32:
        bits = x.to(tl.uint32, bitcast=True)
        # add half an ulp of bf16 (ties to even), keep the top 16 bits
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = (bits >> 16) | 0x40
        return tl.where(x != x, nan, rounded).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(dtype)


@triton.jit
def dot_f32(a, b, DOT_PRECISION: tl.constexpr):
    """a @ b with float32 accumulation; operands in b's dtype (tensor cores for half / tf32)."""
    a = cast(a, b.dtype)
    if interpreted() and b.dtype == tl.bfloat16:
        # the interpreter multiplies bf16 bit patterns as integers; bf16 products are
        # exact in fp32, so an fp32 dot of the same operands gives the same sums
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PRECISION, out_dtype=tl.float32)


@triton.jit
def dot_split_k(b_x, b_w, DOT_PRECISION: tl.constexpr):
    """[BB, BK] @ [BK, BN] -> [BB, BN] float32 with the reduction cut into SK = b_w.shape[0] slices.

    b_w comes as [SK, BK // SK, BN]. The SK partial dots form one batched dot, whose
    batch dimension Triton spreads over the warps, so each warp runs a 1/SK-long
    chain of mma (or FMA) instead of every warp repeating the whole chain; one
    cross-warp sum then adds the slices.
    """
    SK: tl.constexpr = b_w.shape[0]
    KS: tl.constexpr = b_w.shape[1]
    BB: tl.constexpr = b_x.shape[0]
    if SK == 1:
        return dot_f32(b_x, tl.reshape(b_w, (KS, b_w.shape[2])), DOT_PRECISION)
    b_x3 = tl.permute(tl.reshape(b_x, (BB, SK, KS)), (1, 0, 2))  # [SK, BB, KS]
    return tl.sum(dot_f32(b_x3, b_w, DOT_PRECISION), axis=0)


@triton.jit
def tanh_f32(x):
    """Float32 tanh: within 2 ulp of float64 in the interpreter (1.7 measured), an estimated 5 ulp compiled.

    Core ops only, so the compiled kernel and the interpreter run the same code
    (libdevice is not available in the interpreter). Compiled, tl.exp becomes
    ex2.approx and the division div.full, hence the wider bound (tests/test_tanh.py). Small |x| uses an odd
    polynomial (no cancellation), large |x| uses 1 - 2 / (exp(2|x|) + 1), which
    saturates to exactly +-1 and propagates NaN.
    """
    z = tl.abs(x)
    zz = z * z
    p = -5.70498872745e-3 * zz + 2.06390887954e-2
    p = p * zz - 5.37397155531e-2
    p = p * zz + 1.33314422036e-1
    p = p * zz - 3.33332819422e-1
    small = p * zz * z + z
    big = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)
    r = tl.where(z < 0.625, small, big)
    return tl.where(x < 0, -r, r)


@triton.jit
def act_f32(x, RELU: tl.constexpr):
    """The cell's nonlinearity on float32: relu (NaN kept, as torch.relu) or tanh_f32."""
    if RELU:
        return tl.where(x < 0.0, 0.0, x)
    return tanh_f32(x)


@triton.jit
def act_grad(h, RELU: tl.constexpr):
    """d act / d a, written with the output h = act(a): (h > 0) for relu, 1 - h^2 for tanh."""
    if RELU:
        return tl.where(h > 0.0, 1.0, 0.0)
    return 1.0 - h * h


@triton.jit
def block_steps(lengths, o_b, m_b, T, HAS_LENGTHS: tl.constexpr):
    """Steps a program's rows run: T, or with lengths the longest of its rows (at most T).

    Every step past it is padding for all of the program's rows, so it is skipped: its
    states, outputs and gradients are left unwritten, and the caller masks them.
    """
    if HAS_LENGTHS:
        return tl.minimum(tl.max(tl.load(lengths + o_b, mask=m_b, other=0), axis=0), T)
    return T


@triton.jit
def grid_barrier(p_count, target):
    """Wait until `target` arrivals are counted at `p_count` (int32, global memory).

    Every program of the group calls this once per phase with target = phase * n.
    The CTA barrier makes all of this program's stores happen before the release
    arrival; the acquire poll orders the loads that follow after every other
    program's release. Needs every program of the group resident at once.
    """
    tl.debug_barrier()
    tl.atomic_add(p_count, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(p_count, 0, sem="acquire", scope="gpu")
    while arrived < target:
        arrived = tl.atomic_add(p_count, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()
