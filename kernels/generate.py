"""Generation: the char model's sampling loop on chip, `L` characters per launch.

Per step, for each of a program's BB streams (h = the state after the prime at step 0):

    logits = h @ W_out^T + b_out                          [BB, BV]
    logp   = logits - logsumexp(logits)                   written when RETURN_LOGP
    token  = argmax(logits / T + g) over the top k        greedy (no g, no T) unless SAMPLE
    h      = tanh(h @ W_h^T + table[token])               the next step's state

with g = -log(-log(u)) (the Gumbel-max trick), u from Triton's Philox (tl.rand4x: word w of the
counter stream * 2**32 + step * ceil(V / 4) + j is character 4j + w): the counter names the draw,
not the program or launch that makes it, so a stream's text does not depend on the grid, on B or
on the path (`fused_rnn.reference.gumbel_noise` is the same function in PyTorch). Top-k keeps
every character whose logit is at least the k-th largest (ties at the k-th all kept).

`generate_kernel` holds W_h^T and W_out^T on chip for all L steps (H <= 128: one program per
BB streams). `generate_draw_step_kernel` is one step's projection and draw for any H (the
reduction over H in BK-wide chunks), for the per-step path of larger models, whose recurrence
step is `rnn_scan`.

Dimension legend:
    L   characters to generate (runtime, never specialised); i the step
    B   streams; BB per program, grid = cdiv(B, BB)
    H   hidden size; BH >= H, a power of two (the config's, `fused_rnn.generate.GEN_CONFIGS`);
        BK the draw step's reduction chunk
    V   vocabulary size; BV >= V, a power of two >= 128 (the config's), padded lanes masked

Offsets into (B, L) and (B, L, V) outputs are 64-bit.
"""

import triton
import triton.language as tl

from .utils import dot_f32, tanh_f32


@triton.jit
def _kth_largest_key(b_key, m_v, k):
    """[BB] the k-th largest key of each row's valid lanes, repeats counted (1 <= k < V).

    A binary search on the threshold t: the largest t with at least k valid keys >= t is the
    k-th largest key. 32 halvings of the int32 range, each one [BB, BV] compare and sum.
    """
    BB: tl.constexpr = b_key.shape[0]
    b_lo = tl.full([BB], -(2**31), dtype=tl.int64)
    b_hi = tl.full([BB], 2**31 - 1, dtype=tl.int64)
    for _ in range(32):
        b_mid = (b_lo + b_hi + 1) >> 1  # int64: the sum passes 2**31
        b_ge = (b_key >= b_mid.to(tl.int32)[:, None]) & m_v[None, :]
        b_ok = tl.sum(b_ge.to(tl.int32), axis=1) >= k
        b_lo = tl.where(b_ok, b_mid, b_lo)
        b_hi = tl.where(b_ok, b_hi, b_mid - 1)
    return b_lo.to(tl.int32)


@triton.jit
def _draw(
    b_logits,  # [BB, BV] float32
    o_b,  # [BB] stream index
    m_b,
    o_v,  # [BV]
    m_v,
    i,  # the step: column i of the outputs
    S0,  # the first step's counter index (a continued stream's steps so far)
    seed,  # int64 scalar
    tokens,
    logp,
    L,
    V,
    inv_temp,
    top_k,
    SAMPLE: tl.constexpr,
    HAS_TOP_K: tl.constexpr,
    RETURN_LOGP: tl.constexpr,
):
    """Write step i's token (and log-probabilities) of every stream; returns the tokens [BB] (int32, < V)."""
    b_x = tl.where(m_v[None, :], b_logits, float("-inf"))  # [BB, BV]
    i64 = tl.zeros([], dtype=tl.int64) + i  # the step in 64 bits: step * V may pass 2**31
    o_bl = o_b.to(tl.int64) * L + i64  # [BB]: (stream, step) in the (B, L) outputs
    if RETURN_LOGP:
        b_m = tl.max(b_x, axis=1)
        b_lse = b_m + tl.log(tl.sum(tl.exp(b_x - b_m[:, None]), axis=1))
        tl.store(logp + o_bl[:, None] * V + o_v[None, :], b_x - b_lse[:, None], mask=m_b[:, None] & m_v[None, :])
    if SAMPLE:
        if HAS_TOP_K:
            # logits as int32 keys of the same order (negative floats: magnitude bits flipped)
            b_bits = b_x.to(tl.int32, bitcast=True)
            b_key = tl.where(b_bits < 0, b_bits ^ 0x7FFFFFFF, b_bits)
            b_kth = _kth_largest_key(b_key, m_v, top_k)
            b_x = tl.where(b_key >= b_kth[:, None], b_x, float("-inf"))
        # the draw's own counters: stream * 2**32 + step * G + j, G = ceil(V / 4); Philox gives 4 words
        # per counter, word w for character 4j + w (a quarter of the rounds and registers of one per lane)
        BB: tl.constexpr = b_x.shape[0]
        BV: tl.constexpr = b_x.shape[1]
        o_j = tl.arange(0, BV // 4)
        o_r = (o_b.to(tl.int64)[:, None] << 32) + ((i64 + S0) * ((V + 3) // 4) + o_j[None, :])  # [BB, BV / 4]
        b_u0, b_u1, b_u2, b_u3 = tl.rand4x(seed, o_r)
        b_u = tl.reshape(tl.join(tl.join(b_u0, b_u2), tl.join(b_u1, b_u3)), (BB, BV))  # [j, a, b] -> 4j + 2a + b
        b_g = -tl.log(-tl.log(b_u))
        b_x = b_x * inv_temp + b_g
    # first index of the largest, as torch.argmax; the clamp keeps a NaN row's gather in bounds
    b_tok = tl.minimum(tl.argmax(b_x, axis=1), V - 1)  # [BB]
    tl.store(tokens + o_bl, b_tok.to(tl.int64), mask=m_b)
    return b_tok


@triton.jit(do_not_specialize=["L", "S0", "top_k"])
def generate_kernel(
    table,  # (V, H): the input half of every character, relu(l_in(e)) @ W_h^T + b_h
    wt,  # (H, H): W_h^T, contiguous
    wot,  # (H, V): W_out^T, contiguous
    bo,  # (V,): b_out
    h0,  # (B, H): the state after the prime
    seed,  # (1,) int64
    tokens,  # (B, L) int64 out
    logp,  # (B, L, V) float32 out, written only when RETURN_LOGP
    hn,  # (B, H) out: the state after the last token, to continue from
    L,
    S0,  # the counter index of step 0 (0 for a fresh stream)
    B,
    H,
    V,
    inv_temp,  # float32: 1 / temperature, read when SAMPLE
    top_k,  # 1 <= top_k < V, read when HAS_TOP_K
    BB: tl.constexpr,
    BH: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    SAMPLE: tl.constexpr,
    HAS_TOP_K: tl.constexpr,
    RETURN_LOGP: tl.constexpr,
):
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_h = tl.arange(0, BH)
    o_v = tl.arange(0, BV)
    m_b, m_h, m_v = o_b < B, o_h < H, o_v < V
    m_bh = m_b[:, None] & m_h[None, :]

    # both matrices are loop-invariant: loaded once, kept on chip for all L steps
    b_wt = tl.load(wt + o_h[:, None] * H + o_h[None, :], mask=m_h[:, None] & m_h[None, :], other=0.0)  # [BH, BH]
    b_wo = tl.load(wot + o_h[:, None] * V + o_v[None, :], mask=m_h[:, None] & m_v[None, :], other=0.0)  # [BH, BV]
    b_bo = tl.load(bo + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
    b_h = tl.load(h0 + o_b[:, None] * H + o_h[None, :], mask=m_bh, other=0.0).to(tl.float32)  # [BB, BH]
    b_seed = tl.load(seed)
    for i in range(L):
        b_logits = dot_f32(b_h, b_wo, DOT_PRECISION) + b_bo[None, :]  # [BB, BV]
        b_tok = _draw(
            b_logits, o_b, m_b, o_v, m_v, i, S0, b_seed, tokens, logp, L, V, inv_temp, top_k,
            SAMPLE, HAS_TOP_K, RETURN_LOGP,
        )  # fmt: skip
        # the drawn characters' table rows: one gathered [BB, BH] load from L2
        b_u = tl.load(table + b_tok.to(tl.int64)[:, None] * H + o_h[None, :], mask=m_bh, other=0.0)
        # the where keeps u out of the dot's accumulator (as in fused_recurrent_fwd_kernel)
        b_a = tl.where(m_bh, dot_f32(b_h, b_wt, DOT_PRECISION), 0.0) + b_u.to(tl.float32)
        b_h = tanh_f32(b_a)
    tl.store(hn + o_b[:, None] * H + o_h[None, :], b_h.to(hn.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["i", "L", "S0", "top_k"])
def generate_draw_step_kernel(
    h,  # (B, H): the state after step i's recurrence (the prime's last state at i = 0)
    wot,  # (H, V): W_out^T, contiguous
    bo,  # (V,)
    seed,  # (1,) int64
    tokens,  # (B, L) int64 out: column i written
    logp,  # (B, L, V) float32 out: [:, i] written when RETURN_LOGP
    i,
    L,
    S0,
    B,
    H,
    V,
    inv_temp,
    top_k,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    SAMPLE: tl.constexpr,
    HAS_TOP_K: tl.constexpr,
    RETURN_LOGP: tl.constexpr,
):
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    o_v = tl.arange(0, BV)
    m_b, m_v = o_b < B, o_v < V
    b_logits = tl.zeros([BB, BV], dtype=tl.float32)
    for k0 in range(0, H, BK):  # logits = h @ W_out^T, BK rows of W_out^T at a time
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < H
        b_hk = tl.load(h + o_b[:, None] * H + o_k[None, :], mask=m_b[:, None] & m_k[None, :], other=0.0)  # [BB, BK]
        b_w = tl.load(wot + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)  # [BK, BV]
        b_logits += dot_f32(b_hk, b_w, DOT_PRECISION)
    b_logits += tl.load(bo + o_v, mask=m_v, other=0.0).to(tl.float32)[None, :]
    _draw(
        b_logits, o_b, m_b, o_v, m_v, i, S0, tl.load(seed), tokens, logp, L, V, inv_temp, top_k,
        SAMPLE, HAS_TOP_K, RETURN_LOGP,
    )  # fmt: skip
