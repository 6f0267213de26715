"""The functional ops: `rnn_scan` (the recurrence in input-projected form) and `fused_recurrence`.

The kernels run behind two `torch.library` custom ops, ``fused_rnn::scan`` and
``fused_rnn::scan_backward``, with fake (meta) implementations and a registered
autograd formula, so `torch.compile(fullgraph=True)`, `torch.export` and
FakeTensor shape propagation see one opaque op per direction and layer. The
torch path is plain PyTorch ops (`fused_rnn.reference.scan_reference`).
Nothing here reads a tensor's values on the host: the backend is chosen from
device, dtype and shape alone.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from . import launch
from .dispatch import SUPPORTED_DTYPES, KernelConfig, dot_precision, select_config, unsupported_reason
from .reference import scan_reference

BACKENDS = ("auto", "triton", "torch")
NONLINEARITIES = ("tanh", "relu")
_warned: set[tuple] = set()


def _check_tensor(name: str, x, shape: str, ndim: int, floating: bool = True) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(x.shape)} ({x.dim()}-D)")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_like(ref_name: str, ref: torch.Tensor, named: list[tuple[str, torch.Tensor]]) -> None:
    for name, x in named:
        if x.device != ref.device:
            raise ValueError(f"{name}: expected device {ref.device} ({ref_name}'s), got {x.device}")
        if x.dtype != ref.dtype:
            raise TypeError(f"{name}: expected dtype {ref.dtype} ({ref_name}'s), got {x.dtype}")


def _check_shapes(x_name: str, x, w_name: str, w, h0) -> tuple[int, int, int]:
    """x (T, B, H), w (H, H) and h0 (B, H) or None: ranks and shapes, named; returns (T, B, H)."""
    _check_tensor(x_name, x, "(T, B, H)", 3)
    T, B, H = x.shape
    _check_tensor(w_name, w, f"(H, H) = ({H}, {H})", 2)
    if tuple(w.shape) != (H, H):
        raise ValueError(
            f"{w_name}: expected shape (H, H) = ({H}, {H}) to match {x_name} (T, B, H) = {tuple(x.shape)}, "
            f"got {tuple(w.shape)}"
        )
    if h0 is not None:
        _check_tensor("h0", h0, f"(B, H) = ({B}, {H})", 2)
        if tuple(h0.shape) != (B, H):
            raise ValueError(f"h0: expected shape (B, H) = ({B}, {H}), got {tuple(h0.shape)}")
    return T, B, H


def _check_lengths(lengths, T: int, B: int, device: torch.device) -> None:
    _check_tensor("lengths", lengths, f"(B,) = ({B},)", 1, floating=False)
    if lengths.shape[0] != B:
        raise ValueError(f"lengths: expected shape (B,) = ({B},), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got {lengths.dtype}")
    if lengths.device != device:
        raise ValueError(f"lengths: expected device {device} (u's), got {lengths.device}")
    if _host_readable(lengths) and lengths.numel():
        lo, hi = torch.aminmax(lengths)
        if int(lo) < 0 or int(hi) > T:
            raise ValueError(f"lengths: every length must lie in [0, T] = [0, {T}], got {int(lo)}..{int(hi)}")


def _host_readable(x: torch.Tensor) -> bool:
    """True when x's values can be read without a device sync or a graph break: eager, plain, on the CPU."""
    return (
        x.device.type == "cpu"
        and type(x) is torch.Tensor
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


def _triton_reason(u: torch.Tensor) -> str | None:
    """Why the triton kernels cannot run u (T, B, H), or None when they can. Shapes and metadata only."""
    return triton_reason(u.shape[1], u.shape[2], u.dtype, u.device)


def triton_reason(B: int, H: int, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why the triton kernels cannot run a (B, H) recurrence of `dtype` on `device`, or None when they can."""
    reason = launch.unavailable_reason(device)
    if reason is not None:
        return reason
    if dtype not in SUPPORTED_DTYPES:
        return f"{dtype} runs on the torch path (the kernels take float32, float16 and bfloat16)"
    if B * H >= 2**31:
        return f"B * H = {B * H} is over the kernels' limit of 2**31 - 1 elements per step"
    # the card's shared memory decides; under torch.compile no device property is read and the
    # largest card's table (sm_90's) applies: `_config` raises this reason at run time on a smaller card
    capability = None if torch.compiler.is_compiling() else launch.device_key(device)[0]
    return unsupported_reason(H, dtype, capability)


def _config(x: torch.Tensor, key: str) -> KernelConfig:
    """The forced config `key`, or the dispatcher's for x (T, B, H) on its device at the current precision."""
    if key:
        return KernelConfig.from_key(key)
    _, B, H = x.shape
    capability, sm_count = launch.device_key(x.device)
    prec = dot_precision(x.dtype, torch.get_float32_matmul_precision(), launch.tf32x3_enabled())
    cfg = select_config(B, H, x.dtype, prec, capability, sm_count)
    if cfg is None:  # eager _triton_reason routes these to the torch path first; compiled code gets here
        reason = unsupported_reason(H, x.dtype, capability) or "no kernel covers it"
        raise ValueError(f"no triton config for B = {B}, H = {H}, {x.dtype}: {reason}")
    return cfg


@torch.library.custom_op(
    "fused_rnn::scan",
    mutates_args=(),
    schema="(Tensor u, Tensor w_hh, Tensor h0, Tensor? lengths, bool reverse, bool relu, str config) -> "
    "(Tensor, Tensor)",
)
def _scan(u, w_hh, h0, lengths, reverse, relu, config):
    """Kernel forward: states hs (T, B, H) and h_n (B, H). `config` "" lets the dispatcher choose."""
    T, B, H = u.shape
    if T == 0 or B == 0:
        return u.new_empty(u.shape), h0.clone()
    cfg = _config(u, config)
    lengths = None if lengths is None else lengths.contiguous()
    return launch.forward(u.contiguous(), w_hh.contiguous(), h0.contiguous(), lengths, reverse, relu, cfg)


@_scan.register_fake
def _(u, w_hh, h0, lengths, reverse, relu, config):
    return torch.empty_like(u, memory_format=torch.contiguous_format), torch.empty_like(h0)


@torch.library.custom_op(
    "fused_rnn::scan_backward",
    mutates_args=(),
    schema="(Tensor w_hh, Tensor hs, Tensor? dhs, Tensor? dhn, Tensor? lengths, bool reverse, bool relu, str config)"
    " -> (Tensor, Tensor)",
)
def _scan_backward(w_hh, hs, dhs, dhn, lengths, reverse, relu, config):
    """Kernel backward: da = dL/du (T, B, H) and dL/dh0 (B, H)."""
    T, B, H = hs.shape
    if T == 0 or B == 0:
        dh0 = hs.new_zeros(B, H) if dhn is None else dhn.clone()
        return hs.new_zeros(hs.shape), dh0
    cfg = _config(hs, config)
    dhs = None if dhs is None else dhs.contiguous()
    dhn = None if dhn is None else dhn.contiguous()
    lengths = None if lengths is None else lengths.contiguous()
    return launch.backward(w_hh.contiguous(), hs, dhs, dhn, lengths, reverse, relu, cfg)


@_scan_backward.register_fake
def _(w_hh, hs, dhs, dhn, lengths, reverse, relu, config):
    B, H = hs.shape[1], hs.shape[2]
    return torch.empty_like(hs, memory_format=torch.contiguous_format), hs.new_empty(B, H)


def _setup_context(ctx, inputs, output):
    u, w_hh, h0, lengths, reverse, relu, config = inputs
    ctx.save_for_backward(w_hh, h0, output[0], lengths)
    ctx.flags = (reverse, relu, config)


def _backward(ctx, dhs, dhn):
    w_hh, h0, hs, lengths = ctx.saved_tensors
    reverse, relu, config = ctx.flags
    da, dh0 = torch.ops.fused_rnn.scan_backward(w_hh, hs, dhs, dhn, lengths, reverse, relu, config)
    # dW_hh = sum_s da_s^T h_prev(s): one GEMM after the loop, no atomics
    h_prev = torch.cat([hs, h0[None]])[1:] if reverse else torch.cat([h0[None], hs])[:-1]
    if lengths is not None:
        # the kernels skip a batch block's steps past its longest row and leave them unwritten:
        # padded steps get da = 0, and a reverse row starts from h0 at its own last step
        valid = _valid_steps(hs.shape[0], lengths)
        da = torch.where(valid, da, 0)
        if reverse:
            h_prev = torch.where(_valid_steps(hs.shape[0], lengths, shift=1), h_prev, h0)
        h_prev = torch.where(valid, h_prev, 0)
    dw = da.flatten(0, 1).t().mm(h_prev.flatten(0, 1))
    return da, dw, dh0, None, None, None, None


def _valid_steps(T: int, lengths: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """(T, B, 1) bool: step s + shift lies within its row's length."""
    steps = torch.arange(shift, T + shift, device=lengths.device)
    return (steps[:, None] < lengths[None, :]).unsqueeze(-1)


torch.library.register_autograd("fused_rnn::scan", _backward, setup_context=_setup_context)


def resolve_backend(x: torch.Tensor, backend: str) -> tuple[str, KernelConfig | None]:
    """The backend ("triton" or "torch") that runs a (T, B, H) input x, and the config the kernels would use.

    Raises ValueError for backend="triton" where the kernels cannot run x. Reads
    the device's properties for the config: call it outside compiled code.
    """
    name = _choose_backend(x, backend)
    return name, (_config(x, "") if name == "triton" else None)


def _choose_backend(x: torch.Tensor, backend: str) -> str:
    return choose_backend(x.shape[1], x.shape[2], x.dtype, x.device, backend, stacklevel=5)


def choose_backend(B: int, H: int, dtype: torch.dtype, device: torch.device, backend: str, stacklevel: int = 4) -> str:
    """The backend, "triton" or "torch", for a (B, H) recurrence of `dtype` on `device` under `backend`.

    "auto" falls back to "torch" where the kernels cannot run (with a one-time warning per size
    over their limits); "triton" raises ValueError saying why. Metadata only, no device sync.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    reason = triton_reason(B, H, dtype, device)
    if reason is None:
        return "triton"
    if backend == "triton":
        raise ValueError(f"backend='triton' cannot run this input: {reason}")
    if reason.startswith(("H =", "B * H")) and not torch.compiler.is_compiling():
        key = (dtype, (B, H) if reason.startswith("B") else H)
        if key not in _warned:  # a size over the kernels' limits: say so once per size
            _warned.add(key)
            warnings.warn(f"fused_rnn: {reason}; falling back to the torch path", stacklevel=stacklevel)
    return "torch"


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype nn.RNN runs in under an active autocast on `device` (float16 on CUDA, bfloat16 on CPU
    by default), or None when autocast is off there."""
    if device.type in ("cuda", "cpu") and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def rnn_scan(
    u: torch.Tensor,
    weight_hh: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Elman RNN layer and direction, given its input half: ``h_s = act(h_prev @ weight_hh.T + u[s])``.

    Args:
        u: (T, B, H) the input half of every step, ``inp @ W_ih^T + b_ih + b_hh`` (one GEMM).
        weight_hh: (H, H).
        h0: (B, H) initial state; None for zeros.
        lengths: (B,) integer tensor on u's device, or None (every row runs T steps). Row b
            runs steps s < lengths[b] only: its outputs past them are 0 and its h_n is the
            state after its last valid step; gradients past them are 0.
        reverse: walk s = T-1 .. 0 (each row from its own last valid step), as nn.RNN's
            reverse direction does.
        nonlinearity: "tanh" or "relu".
        backend: "triton" (the fused kernels; CUDA tensors, or CPU tensors under
            TRITON_INTERPRET=1; raises ValueError where they cannot run), "torch" (plain
            PyTorch ops), or "auto" (triton where it can run, else torch).
        config: force a kernel configuration (testing and tuning); implies triton.

    Returns:
        output (T, B, H) and h_n (B, H), differentiable with respect to u, weight_hh and h0.
        Under autocast, float32 inputs run in the autocast dtype, as nn.RNN does.

    float32 uses IEEE dots unless ``torch.get_float32_matmul_precision()`` allows TF32
    (read when the kernels run; ``FUSED_RNN_TF32X3=1`` runs IEEE-precision float32 as three
    TF32 tensor-core products instead, see README); float16 and bfloat16 accumulate in float32
    and round the dot operands (the state and da) to their own dtype.
    """
    T, B, H = _check_shapes("u", u, "weight_hh", weight_hh, h0)
    if lengths is not None:
        _check_lengths(lengths, T, B, u.device)
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return _scan_checked(u, weight_hh, h0, lengths, reverse, nonlinearity == "relu", backend, config, "u")


def _scan_checked(u, weight_hh, h0, lengths, reverse, relu, backend, config, check_as: str | None):
    """rnn_scan after the shape checks: autocast, dtypes and devices (named after `check_as`'s
    arguments, unless None), backend, output masking."""
    dtype = _autocast_dtype(u.device)
    if dtype is not None:  # float32 tensors run in the autocast dtype, as nn.RNN's do
        u, weight_hh, h0 = (x if x is None or x.dtype != torch.float32 else x.to(dtype) for x in (u, weight_hh, h0))
    if check_as is not None:
        _check_like(check_as, u, [("weight_hh", weight_hh)] + ([] if h0 is None else [("h0", h0)]))
    if h0 is None:
        h0 = u.new_zeros(u.shape[1], u.shape[2])
    if config is not None:
        reason = _triton_reason(u)
        if reason is not None and not reason.startswith("H ="):
            raise ValueError(f"config: the triton backend cannot run this input: {reason}")
        if config.block_h < u.shape[2]:
            raise ValueError(f"config: block_h = {config.block_h} is smaller than H = {u.shape[2]}")
        if (problem := config.problem()) is not None:
            raise ValueError(f"config: {problem}")
        name = "triton"
    else:
        name = _choose_backend(u, backend)
    if name == "torch":
        hs, hn = scan_reference(u, weight_hh, h0, lengths, reverse, relu)
    else:
        key = "" if config is None else config.key()
        lens = None if lengths is None else lengths.to(torch.int32)  # one kernel variant for every integer dtype
        hs, hn = torch.ops.fused_rnn.scan(u, weight_hh, h0, lens, reverse, relu, key)
    if lengths is not None:  # outputs past a row's length are 0 (the kernels may leave them unwritten)
        hs = torch.where(_valid_steps(u.shape[0], lengths), hs, 0)
    return hs, hn


def fused_recurrence(
    inp: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the char cell ``hs[t] = tanh((hs[t-1] + inp[t]) @ weight.T + bias)`` over all T steps.

    The tied-weight special case of `rnn_scan`: ``u = inp @ weight.T + bias`` (one GEMM), then
    ``hs[t] = tanh(hs[t-1] @ weight.T + u[t])``.

    Args:
        inp: (T, B, H) per-step input (for the char model, ``relu(l_in(e(c_t)))``).
        weight: (H, H), ``l_hidden.weight``.
        bias: (H,), ``l_hidden.bias``; None for no bias.
        h0: (B, H) initial state; None for zeros.
        backend, config: as for `rnn_scan`.

    Returns:
        hs (T, B, H) and h_n (B, H), in inp's dtype, differentiable with respect
        to inp, weight, bias and h0.
    """
    T, B, H = _check_shapes("inp", inp, "weight", weight, h0)
    named = [("weight", weight)]
    if bias is not None:
        _check_tensor("bias", bias, f"(H,) = ({H},)", 1)
        if bias.shape[0] != H:
            raise ValueError(f"bias: expected shape (H,) = ({H},), got {tuple(bias.shape)}")
        named.append(("bias", bias))
    if h0 is not None:
        named.append(("h0", h0))
    _check_like("inp", inp, named)
    if config is None:
        _choose_backend(inp, backend)  # a bad backend name fails here, before any work
    u = F.linear(inp, weight, bias)  # (T, B, H): the input half of every step in one GEMM
    return _scan_checked(u, weight, h0, None, False, False, backend, config, None)
