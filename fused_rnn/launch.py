"""Launchers: allocate outputs, pick grids, call the kernels. No autograd here.

Every tensor handed to a kernel is contiguous and already validated by
`fused_rnn.ops`; the launchers only check what depends on the device.
"""

from __future__ import annotations

import functools
import os

import torch

from .dispatch import KernelConfig

try:
    import triton

    from . import kernels as K

    _IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - exercised only where triton is missing
    triton = None
    K = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

#: Persistent split kernels synchronise with a spin barrier across programs.
#: Off by default until proven on a GPU; the per-step launches are always correct.
GRID_BARRIER_ENV = "FUSED_RNN_GRID_BARRIER"


def interpreted() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    if K is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(K.fused_recurrent_fwd_kernel, InterpretedFunction)


def unavailable_reason(device: torch.device) -> str | None:
    """Why the triton backend cannot run on `device`, or None when it can."""
    if K is None:
        return f"triton could not be imported ({_IMPORT_ERROR})"
    if device.type == "cuda":
        if interpreted():
            return "TRITON_INTERPRET=1 was set when fused_rnn was imported, so CUDA tensors cannot be used"
        return None
    if device.type == "cpu":
        if interpreted():
            return None
        return "CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing fused_rnn"
    return f"device type {device.type!r} is not supported (CUDA, or CPU under TRITON_INTERPRET=1)"


@functools.cache
def device_key(device: torch.device) -> tuple[tuple[int, int] | None, int | None]:
    """(compute capability, SM count) of a CUDA device; (None, None) under the interpreter."""
    if device.type != "cuda":
        return None, None
    props = torch.cuda.get_device_properties(device)
    return (props.major, props.minor), props.multi_processor_count


#: Tests set this to fill every output buffer with NaN before a launch, so that an
#: element a kernel fails to write cannot pass a comparison.
POISON = False


def _empty(like: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    out = torch.empty(like.shape if shape is None else shape, dtype=like.dtype, device=like.device)
    return out.fill_(float("nan")) if POISON else out


def _grid_barrier_enabled() -> bool:
    return os.environ.get(GRID_BARRIER_ENV, "0") == "1"


def _persistent_fits(kernel, args: tuple, kwargs: dict, grid: tuple[int, int], device: torch.device) -> bool:
    """Whether every program of `grid` can be resident at once (a spin barrier needs that)."""
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    compiled._init_handles()
    props = triton.runtime.driver.active.utils.get_device_properties(device.index)
    threads = 32 * compiled.metadata.num_warps
    per_sm = 64 * 1024 // max(1, compiled.n_regs * threads)
    if compiled.metadata.shared:
        per_sm = min(per_sm, props["max_shared_mem"] // compiled.metadata.shared)
    return grid[0] * grid[1] <= per_sm * props["multiprocessor_count"]


def forward(
    inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, h0: torch.Tensor, cfg: KernelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """hs (T, B, H) and h_n (B, H) in inp's dtype. T >= 1 and B >= 1."""
    T, B, H = inp.shape
    hs = _empty(inp)
    hn = _empty(h0)
    n_b = triton.cdiv(B, cfg.block_b)
    wt = weight.t().contiguous()
    if cfg.mode == "single":
        K.fused_recurrent_fwd_kernel[(n_b,)](
            inp, wt, bias, h0, hs, hn, T, B, H,
            BB=cfg.block_b, BH=cfg.block_h, DOT_PRECISION=cfg.dot_precision, num_warps=cfg.num_warps,
        )  # fmt: skip
        return hs, hn
    # the input half of every step in one GEMM: u_t = inp_t @ W^T + bias
    u = torch.addmm(bias, inp.view(T * B, H), wt).view(T, B, H)
    grid = (n_b, triton.cdiv(H, cfg.block_n))
    meta = dict(
        BB=cfg.block_b, BK=cfg.block_h, BN=cfg.block_n, DOT_PRECISION=cfg.dot_precision, num_warps=cfg.num_warps
    )
    if inp.is_cuda and _grid_barrier_enabled():
        count = torch.zeros(n_b, dtype=torch.int32, device=inp.device)
        args = (u, wt, h0, hs, hn, count, T, B, H)
        # a cooperative launch makes the driver refuse a grid that cannot be co-resident
        kw = dict(meta, launch_cooperative_grid=True)
        if _persistent_fits(K.split_recurrent_fwd_kernel, args, kw, grid, inp.device):
            K.split_recurrent_fwd_kernel[grid](*args, **kw)
            return hs, hn
    for t in range(T):
        K.split_recurrent_fwd_step_kernel[grid](u, wt, h0, hs, hn, t, T, B, H, **meta)
    return hs, hn


def backward(
    weight: torch.Tensor,
    hs: torch.Tensor,
    dhs: torch.Tensor | None,
    dhn: torch.Tensor | None,
    cfg: KernelConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """da (T, B, H), d inp (T, B, H) and d h0 (B, H), all in hs's dtype.

    da is dL/d(pre-activation); the caller reduces it into dW and db.
    """
    T, B, H = hs.shape
    da = _empty(hs)
    dinp = _empty(hs)
    dh0 = _empty(hs, (B, H))
    # a pointer the kernel never reads when its HAS_* flag is off
    dhs_arg = hs if dhs is None else dhs
    n_b = triton.cdiv(B, cfg.block_b)
    if cfg.mode == "single":
        K.fused_recurrent_bwd_kernel[(n_b,)](
            weight, hs, dhs_arg, hs if dhn is None else dhn, da, dinp, dh0, T, B, H,
            BB=cfg.block_b, BH=cfg.block_h, DOT_PRECISION=cfg.dot_precision,
            HAS_DHS=dhs is not None, HAS_DHN=dhn is not None, num_warps=cfg.num_warps_bwd,
        )  # fmt: skip
        return da, dinp, dh0
    grid = (n_b, triton.cdiv(H, cfg.block_n))
    meta = dict(BB=cfg.block_b, BK=cfg.block_h, BN=cfg.block_n, DOT_PRECISION=cfg.dot_precision)
    meta.update(num_warps=cfg.num_warps_bwd)
    if hs.is_cuda and _grid_barrier_enabled():
        count = torch.zeros(n_b, dtype=torch.int32, device=hs.device)
        args = (weight, hs, dhs_arg, hs if dhn is None else dhn, da, dinp, dh0, count, T, B, H)
        kw = dict(meta, HAS_DHS=dhs is not None, HAS_DHN=dhn is not None, launch_cooperative_grid=True)
        if _persistent_fits(K.split_recurrent_bwd_kernel, args, kw, grid, hs.device):
            K.split_recurrent_bwd_kernel[grid](*args, **kw)
            return da, dinp, dh0
    carry = (
        torch.zeros(B, H, dtype=torch.float32, device=hs.device) if dhn is None else dhn.to(torch.float32, copy=True)
    )
    for t in range(T - 1, -1, -1):
        for phase in (0, 1):
            K.split_recurrent_bwd_step_kernel[grid](
                weight, hs, dhs_arg, carry, da, dinp, dh0, t, B, H,
                **meta, HAS_DHS=dhs is not None, PHASE=phase,
            )  # fmt: skip
    return da, dinp, dh0
