"""`enable()` / `disable()` / `enabled()`: the kernels as PyTorch's own ``aten::rnn_tanh``, ``aten::rnn_relu``,
``aten::lstm`` and ``aten::gru``.

FlagGems' ``enable()`` / ``use_gems()`` convention: while enabled, unmodified code that calls
``torch.nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` (or ``torch._VF.rnn_tanh`` / ``rnn_relu`` / ``lstm`` / ``gru``) on
CUDA runs fused_rnn's kernels, with gradients. (The LSTM / GRU kernels are single-program only: sizes over
their limits, and LSTM's projections, run PyTorch's own kernel.)

How: these ops (overloads ``.input`` for tensors and ``.data`` for PackedSequence) have only a
CompositeImplicitAutograd kernel, which serves every dispatch key.
A ``torch.library.Library("aten", "IMPL")`` registers fused_rnn's Python kernel directly at
``AutogradCUDA`` (the key a CUDA call reaches first when autograd is on, with or without
``requires_grad``) and at ``CUDA`` (reached under ``torch.inference_mode()``, where autograd keys
are skipped). A kernel at an Autograd key runs above autograd: the ops it calls (the input GEMM,
the ``fused_rnn::scan`` custom op with its registered backward) record the graph, so gradients
flow to the input, ``hx`` and every weight. (Registered at ``CUDA`` alone, it would also run with
autograd on, but under the dispatcher's deprecated "autograd kernel was not registered" fallback,
which warns at backward and is to be removed: measured with torch 2.13 on the CPU keys.) Calls
the kernels do not take (another device, float64, H over the kernels' limits, mismatched devices or
dtypes, T = 0, unexpected shapes) run PyTorch's own C++ composite kernel (called at its key: cuDNN
on CUDA, the native loop elsewhere), so they behave, and raise, exactly as without fused_rnn.
`disable()` removes the registrations.

Limits, by PyTorch's dispatcher: the override is per process and per dispatch key, not per
module or thread; it does not reach ``torch.compile``d graphs that dynamo built (dynamo refuses
nn.RNN unless ``torch._dynamo.config.allow_rnn``) or TorchScript; dropout between layers draws
its own masks (``F.dropout``), so training with dropout > 0 is equal in distribution, not in bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .gated_ops import triton_reason as gated_reason
from .ops import triton_reason
from .rnn import rnn_forward

#: op -> the cell rnn_forward runs, and the gates per unit (rows of W_ih / W_hh per hidden unit)
_OPS = {"rnn_tanh": ("tanh", 1), "rnn_relu": ("relu", 1), "lstm": ("lstm", 4), "gru": ("gru", 3)}

_LIB: torch.library.Library | None = None
_OVERLOADS = ("input", "data")


def is_enabled() -> bool:
    """Whether `enable()` is in force."""
    return _LIB is not None


def enable(*, _cpu: bool = False) -> None:
    """Run ``aten::rnn_tanh`` / ``rnn_relu`` / ``lstm`` / ``gru`` (so ``torch.nn.RNN``, ``nn.LSTM``, ``nn.GRU``) on
    fused_rnn's kernels on CUDA.

    Idempotent. ``_cpu`` (tests only): also register for the CPU keys, so that the test suite
    can run the override in Triton's CPU interpreter (``TRITON_INTERPRET=1``).
    """
    global _LIB
    if _LIB is not None:
        return
    lib = torch.library.Library("aten", "IMPL")
    devices = ("CUDA", "CPU") if _cpu else ("CUDA",)
    for name in _OPS:
        for overload in _OVERLOADS:
            kernel = _kernel(name, overload)
            for device in devices:
                for key in (f"Autograd{device}", device):
                    lib.impl(f"{name}.{overload}", kernel, key)
    _LIB = lib


def disable() -> None:
    """Undo `enable()`: PyTorch's own implementation again. Idempotent."""
    global _LIB
    if _LIB is not None:
        _LIB._destroy()
        _LIB = None


@contextlib.contextmanager
def enabled(*, _cpu: bool = False) -> Iterator[None]:
    """``with fused_rnn.enabled():`` enables for the block, and disables after it unless it was enabled before."""
    was = is_enabled()
    enable(_cpu=_cpu)
    try:
        yield
    finally:
        if not was:
            disable()


def _kernel(name: str, overload: str):
    op = getattr(getattr(torch.ops.aten, name), overload)
    cell, gates = _OPS[name]

    def kernel(*args):
        if overload == "input":
            input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
            batch_sizes = None
        else:
            input, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional = args
            batch_first = False
        if not _takes(input, batch_sizes, hx, params, has_biases, num_layers, bidirectional, batch_first, gates):
            # PyTorch's own C++ kernel, as if nothing were registered (not op.decompose(): that
            # prefers the Python decomposition of torch._decomp, a slow loop with other errors)
            return op._op_dk(torch._C.DispatchKey.CompositeImplicitAutograd, *args)
        if cell in ("tanh", "relu"):
            return rnn_forward(
                input, hx, list(params), has_biases, num_layers, dropout, train, bidirectional, batch_first,
                batch_sizes, nonlinearity=cell, backend="triton",
            )  # fmt: skip
        return rnn_forward(
            input, tuple(hx) if cell == "lstm" else hx, list(params), has_biases, num_layers, dropout, train,
            bidirectional, batch_first, batch_sizes, backend="triton", cell=cell,
        )  # fmt: skip

    kernel.__name__ = f"fused_rnn_{name}_{overload}"
    return kernel


def _takes(input, batch_sizes, hx, params, has_biases, num_layers, bidirectional, batch_first, gates=1) -> bool:
    """Whether the kernels run this call: shapes nn would pass, one device and dtype, within their limits.

    gates: 1 (Elman, hx a tensor), 4 (LSTM, hx the list [h, c]; no projections) or 3 (GRU)."""
    if gates == 4:
        if not isinstance(hx, (list, tuple)) or len(hx) != 2 or hx[0].shape != hx[1].shape:
            return False  # proj_size makes h and c of other sizes: PyTorch's own kernel
        c = hx[1]
        hx = hx[0]
        if c.device != hx.device or c.dtype != hx.dtype:
            return False
    if input.dim() != (2 if batch_sizes is not None else 3) or hx.dim() != 3 or num_layers < 1:
        return False
    T = input.shape[1 if batch_first else 0] if batch_sizes is None else batch_sizes.shape[0]
    D = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    L, B, H = hx.shape
    if T == 0 or L != num_layers * D or len(params) != L * per:
        return False
    if batch_sizes is None and input.shape[0 if batch_first else 1] != B:
        return False
    for k in range(L):
        layer_in = input.shape[-1] if k < D else D * H
        G = gates * H
        shapes = [(G, layer_in), (G, H)] + ([(G,), (G,)] if has_biases else [])
        if [tuple(p.shape) for p in params[k * per : (k + 1) * per]] != shapes:
            return False
    if any(t.device != input.device or t.dtype != input.dtype for t in (hx, *params)):
        return False
    reason = triton_reason if gates == 1 else gated_reason
    return reason(B, H, input.dtype, input.device) is None
