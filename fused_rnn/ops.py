"""The functional op `fused_recurrence`: validation, backend choice, autograd."""

from __future__ import annotations

import warnings

import torch

from . import launch
from .dispatch import SUPPORTED_DTYPES, KernelConfig, dot_precision, max_hidden, select_config
from .reference import recurrence_reference

BACKENDS = ("auto", "triton", "torch")
_warned: set[tuple] = set()


def _check_tensor(name: str, x, shape: str, ndim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(x.shape)} ({x.dim()}-D)")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _validate(inp, weight, bias, h0) -> None:
    _check_tensor("inp", inp, "(T, B, H)", 3)
    T, B, H = inp.shape
    _check_tensor("weight", weight, f"(H, H) = ({H}, {H})", 2)
    if tuple(weight.shape) != (H, H):
        raise ValueError(
            f"weight: expected shape (H, H) = ({H}, {H}) to match inp (T, B, H) = {tuple(inp.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    named = [("weight", weight)]
    if bias is not None:
        _check_tensor("bias", bias, f"(H,) = ({H},)", 1)
        if bias.shape[0] != H:
            raise ValueError(f"bias: expected shape (H,) = ({H},), got {tuple(bias.shape)}")
        named.append(("bias", bias))
    if h0 is not None:
        _check_tensor("h0", h0, f"(B, H) = ({B}, {H})", 2)
        if tuple(h0.shape) != (B, H):
            raise ValueError(f"h0: expected shape (B, H) = ({B}, {H}), got {tuple(h0.shape)}")
        named.append(("h0", h0))
    for name, x in named:
        if x.device != inp.device:
            raise ValueError(f"{name}: expected device {inp.device} (inp's), got {x.device}")
        if x.dtype != inp.dtype:
            raise TypeError(f"{name}: expected dtype {inp.dtype} (inp's), got {x.dtype}")


def _triton_plan(inp: torch.Tensor) -> tuple[KernelConfig | None, str | None]:
    """(config, None) when the triton kernels can run this input, else (None, reason)."""
    T, B, H = inp.shape
    reason = launch.unavailable_reason(inp.device)
    if reason is not None:
        return None, reason
    if inp.dtype not in SUPPORTED_DTYPES:
        return None, f"{inp.dtype} runs on the torch path (the kernels take float32, float16 and bfloat16)"
    if B * H >= 2**31:
        return None, f"B * H = {B * H} is over the kernels' limit of 2**31 - 1 elements per step"
    capability, sm_count = launch.device_key(inp.device)
    prec = dot_precision(inp.dtype, torch.get_float32_matmul_precision())
    cfg = select_config(B, H, inp.dtype, prec, capability, sm_count)
    if cfg is None:
        return None, f"H = {H} is over the triton limit of H <= {max_hidden(inp.dtype)} for {inp.dtype}"
    return cfg, None


class FusedRecurrence(torch.autograd.Function):
    """Triton forward and backward of the recurrence; saves only the inputs and hs."""

    @staticmethod
    def forward(ctx, inp, weight, bias, h0, cfg: KernelConfig):
        inp, weight, bias, h0 = (x.contiguous() for x in (inp, weight, bias, h0))
        hs, hn = launch.forward(inp, weight, bias, h0, cfg)
        ctx.save_for_backward(inp, weight, h0, hs)
        ctx.cfg = cfg
        return hs, hn

    @staticmethod
    def backward(ctx, dhs, dhn):
        inp, weight, h0, hs = ctx.saved_tensors
        need_inp, need_w, need_b, need_h0, _ = ctx.needs_input_grad
        dhs = None if dhs is None else dhs.contiguous()
        dhn = None if dhn is None else dhn.contiguous()
        da, dinp, dh0 = launch.backward(weight, hs, dhs, dhn, ctx.cfg)
        T, B, H = hs.shape
        dw = db = None
        if need_w:
            # dW = sum_t da_t^T (h_{t-1} + inp_t): one large GEMM after the loop, no atomics
            x = torch.cat([h0[None], hs[:-1]]) + inp
            dw = da.view(T * B, H).t().mm(x.view(T * B, H))
        if need_b:
            db = da.sum((0, 1), dtype=torch.float32).to(da.dtype)
        return (dinp if need_inp else None), dw, db, (dh0 if need_h0 else None), None


def resolve_backend(inp: torch.Tensor, backend: str) -> tuple[str, KernelConfig | None]:
    """The backend that `fused_recurrence` will run for `inp`, and its kernel config."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch", None
    cfg, reason = _triton_plan(inp)
    if cfg is not None:
        return "triton", cfg
    if backend == "triton":
        raise ValueError(f"backend='triton' cannot run this input: {reason}")
    if reason.startswith(("H =", "B * H")):  # a size over the kernels' limits: say so once per size
        key = (inp.dtype, tuple(inp.shape[1:]) if reason.startswith("B") else inp.shape[2])
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"fused_recurrence: {reason}; falling back to the torch path", stacklevel=3)
    return "torch", None


def fused_recurrence(
    inp: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``hs[t] = tanh((hs[t-1] + inp[t]) @ weight.T + bias)`` over all T steps.

    Args:
        inp: (T, B, H) per-step input (for the char model, ``relu(l_in(e(c_t)))``).
        weight: (H, H), ``l_hidden.weight``.
        bias: (H,), ``l_hidden.bias``; None for no bias.
        h0: (B, H) initial state; None for zeros.
        backend: "triton" (the fused kernels; CUDA tensors, or CPU tensors under
            TRITON_INTERPRET=1; raises ValueError where they cannot run), "torch"
            (a plain PyTorch loop), or "auto" (triton where it can run, else torch).
        config: force a kernel configuration (testing and tuning); implies triton.

    Returns:
        hs (T, B, H) and h_n (B, H), in inp's dtype, differentiable with respect
        to inp, weight, bias and h0.

    float32 uses IEEE dots unless ``torch.get_float32_matmul_precision()`` allows
    TF32; float16 and bfloat16 accumulate and keep the state in float32.
    """
    _validate(inp, weight, bias, h0)
    T, B, H = inp.shape
    if config is not None:
        name = "triton"
        _, reason = _triton_plan(inp)
        if reason is not None and not reason.startswith("H ="):
            raise ValueError(f"config: the triton backend cannot run this input: {reason}")
        if config.block_h < H:
            raise ValueError(f"config: block_h = {config.block_h} is smaller than H = {H}")
    else:
        name, config = resolve_backend(inp, backend)
    if name == "torch" or T == 0 or B == 0:
        return recurrence_reference(inp, weight, bias, h0)
    if bias is None:
        bias = inp.new_zeros(H)
    if h0 is None:
        h0 = inp.new_zeros(B, H)
    return FusedRecurrence.apply(inp, weight, bias, h0, config)
