"""Launchers: allocate outputs, pick grids, call the kernels. No autograd here.

Every tensor handed to a kernel is contiguous and already validated by
`fused_rnn.ops`; the launchers only check what depends on the device.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import warnings
from dataclasses import dataclass

import torch

from .dispatch import KernelConfig, max_registers

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
#: "1": float32 at "highest" matmul precision runs Triton's tf32x3 dots (off until measured on a GPU).
TF32X3_ENV = "FUSED_RNN_TF32X3"


def _interpreted() -> bool:
    if K is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(K.fused_recurrent_fwd_kernel, InterpretedFunction)


#: Whether the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import):
#: fixed at import, so backend choice under torch.compile reads a constant.
INTERPRETED = _interpreted()


def interpreted() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return INTERPRETED


def unavailable_reason(device: torch.device) -> str | None:
    """Why the triton backend cannot run on `device`, or None when it can."""
    if K is None:
        return f"triton could not be imported ({_IMPORT_ERROR})"
    if device.type == "cuda":
        if interpreted():
            return "TRITON_INTERPRET=1 was set when fused_rnn was imported, so CUDA tensors cannot be used"
        return None
    if device.type == "meta":  # the custom ops' fake kernels propagate shapes; nothing launches
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


#: Calls of `forward` and `backward` (each launches one kernel, or one per step) since import: tests
#: read it to see whether the kernels ran (fused_rnn.enable() among others).
LAUNCHER_CALLS = {"forward": 0, "backward": 0}
#: the same for the LSTM / GRU kernels
GATED_CALLS = {"forward": 0, "backward": 0}

#: Tests set this to fill every output buffer with NaN before a launch, so that an
#: element a kernel fails to write cannot pass a comparison.
POISON = False


def _empty(like: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    out = torch.empty(like.shape if shape is None else shape, dtype=like.dtype, device=like.device)
    return out.fill_(float("nan")) if POISON else out


def _grid_barrier_enabled() -> bool:
    return os.environ.get(GRID_BARRIER_ENV, "0") == "1"


def _persistent_wanted(device: torch.device) -> bool:
    """Whether to try the grid-barrier kernels: on CUDA with FUSED_RNN_GRID_BARRIER=1 (bench/triton_cache.py's
    recorder answers yes under the interpreter too, to record the launches a card makes)."""
    return device.type == "cuda" and _grid_barrier_enabled()


def tf32x3_enabled() -> bool:
    return os.environ.get(TF32X3_ENV, "0") == "1"


@functools.cache
def _libcuda():
    return ctypes.CDLL("libcuda.so.1")


def _blocks_per_sm(kernel, args: tuple, kwargs: dict, grid: tuple[int, int]) -> int:
    """How many programs of `kernel` one SM holds at once, from the driver
    (cuOccupancyMaxActiveBlocksPerMultiprocessor on the compiled kernel, its block size and
    dynamic shared memory: it counts the register allocation granularity and the shared memory
    the driver reserves per block); 0 when the driver cannot say."""
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    compiled._init_handles()
    blocks = ctypes.c_int(0)
    err = _libcuda().cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(blocks),
        ctypes.c_void_p(compiled.function),
        ctypes.c_int(32 * compiled.metadata.num_warps),
        ctypes.c_size_t(compiled.metadata.shared),
    )
    return blocks.value if err == 0 else 0


#: (kernel, its constexprs and options, device index) -> programs per SM: the fit check runs
#: the compile-cache lookup and the occupancy query once per config and device, not per launch
_BLOCKS_PER_SM: dict[tuple, int] = {}


def _persistent_fits(kernel, args: tuple, kwargs: dict, grid: tuple[int, int], device: torch.device) -> bool:
    """Whether every program of `grid` can be resident at once (a spin barrier needs that).

    The occupancy is the same for every launch of one config on one device (the argument
    specialisations it could vary with are B = 1 and alignment, which do not change a
    program's registers or shared memory in the gate's builds); should one ever differ,
    the cooperative launch makes the driver refuse a grid that cannot be co-resident, and
    `_launch_persistent` falls back to step mode.
    """
    key = (kernel.fn.__name__, tuple(sorted(kwargs.items())), device.index)
    blocks = _BLOCKS_PER_SM.get(key)
    if blocks is None:
        blocks = _BLOCKS_PER_SM[key] = _blocks_per_sm(kernel, args, kwargs, grid)
    return grid[0] * grid[1] <= blocks * device_key(device)[1]


def _launch_persistent(kernel, grid: tuple[int, int], args: tuple, kwargs: dict, device: torch.device) -> bool:
    """Launch `kernel` cooperatively when the whole grid fits; False (nothing ran) when it does not."""
    if not _persistent_fits(kernel, args, kwargs, grid, device):
        return False
    try:
        kernel[grid](*args, **kwargs)
    except RuntimeError as exc:  # the driver refused the cooperative launch: nothing ran
        if "cooperative" not in str(exc).lower():
            raise
        key = (kernel.fn.__name__, grid)
        if key not in _refused:
            _refused.add(key)
            warnings.warn(f"fused_rnn: {exc}; running {grid} with one launch per step instead", stacklevel=4)
        return False
    return True


_refused: set[tuple] = set()


def _no_launch_hooks() -> bool:
    """Whether no profiler hooks into launches (Triton 3.6 keeps them in HookChains, empty by default)."""
    hooks = (triton.knobs.runtime.launch_enter_hook, triton.knobs.runtime.launch_exit_hook)
    return all(h is None or not getattr(h, "calls", True) for h in hooks)


def _launch_steps(kernel, grid: tuple[int, int], args: tuple, meta: dict, steps: int, step_arg: str = "i") -> None:
    """Launch `kernel` on `grid` once per step s = 0 .. steps - 1, passing s as `step_arg`.

    The first launch goes through the JIT (which compiles or finds the kernel and binds the
    arguments); on CUDA the others call that compiled kernel directly with the same bound
    arguments and only the step changed, skipping the JIT's per-call binder, specialisation
    and cache lookup (`step_arg` is in the kernel's do_not_specialize, so every step runs the
    very same binary). Launch hooks (profilers) keep the JIT path for every launch.
    """
    names = kernel.arg_names
    pos = names.index(step_arg)
    call_args = list(args)
    call_args[pos] = 0
    compiled = kernel[grid](*call_args, **meta)
    direct = steps > 1 and not INTERPRETED and hasattr(compiled, "packed_metadata") and _no_launch_hooks()
    if not direct:
        for s in range(1, steps):
            call_args[pos] = s
            kernel[grid](*call_args, **meta)
        return
    # every parameter in signature order (constexprs and defaults included), as the JIT passes them
    values = dict(zip(names, call_args, strict=False)) | {k: v for k, v in meta.items() if k in names}
    bound = [values[n] if n in values else p.default for n, p in zip(names, kernel.params, strict=True)]
    run, function, packed = compiled.run, compiled.function, compiled.packed_metadata
    stream = torch.cuda.current_stream().cuda_stream
    g0, g1 = grid
    for s in range(1, steps):
        bound[pos] = s
        run(g0, g1, 1, stream, function, packed, None, None, None, *bound)


def _guard(device: torch.device):
    """Launch on the tensors' device, not the current one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def forward(
    u: torch.Tensor,
    weight: torch.Tensor,
    h0: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
    relu: bool,
    cfg: KernelConfig,
    wt: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """States hs (T, B, H) and h_n (B, H) in u's dtype. T >= 1 and B >= 1; every tensor contiguous.

    wt: weight.t().contiguous() (H, H), from a caller that launches many T = 1 calls with one weight
    (generation's per-step path), so that it is made once, not per call.
    """
    LAUNCHER_CALLS["forward"] += 1
    T, B, H = u.shape
    hs = _empty(u)
    hn = _empty(h0)
    n_b = triton.cdiv(B, cfg.block_b)
    wt = weight.t().contiguous() if wt is None else wt
    flags = dict(RELU=relu, REVERSE=reverse, HAS_LENGTHS=lengths is not None)
    lengths_arg = h0 if lengths is None else lengths  # a pointer the kernel never reads without HAS_LENGTHS
    with _guard(u.device):
        if cfg.mode == "single":
            K.fused_recurrent_fwd_kernel[(n_b,)](
                u, wt, h0, lengths_arg, hs, hn, T, B, H,
                BB=cfg.block_b, BH=cfg.block_h, DOT_PRECISION=cfg.dot_precision, **flags,
                **cfg.launch_options(backward=False, persistent=False),
            )  # fmt: skip
            return hs, hn
        grid = (n_b, triton.cdiv(H, cfg.block_n))
        meta = dict(BB=cfg.block_b, BK=cfg.block_h, BN=cfg.block_n, DOT_PRECISION=cfg.dot_precision, **flags)
        if _persistent_wanted(u.device):
            count = torch.zeros(n_b, dtype=torch.int32, device=u.device)
            args = (u, wt, h0, lengths_arg, hs, hn, count, T, B, H)
            # a cooperative launch makes the driver refuse a grid that cannot be co-resident
            kw = dict(meta, **cfg.launch_options(backward=False, persistent=True), launch_cooperative_grid=True)
            if _launch_persistent(K.split_recurrent_fwd_kernel, grid, args, kw, u.device):
                return hs, hn
        meta.update(cfg.launch_options(backward=False, persistent=False))  # built once, not per launch
        _launch_steps(K.split_recurrent_fwd_step_kernel, grid, (u, wt, h0, lengths_arg, hs, hn, 0, T, B, H), meta, T)
    return hs, hn


def backward(
    weight: torch.Tensor,
    hs: torch.Tensor,
    dhs: torch.Tensor | None,
    dhn: torch.Tensor | None,
    lengths: torch.Tensor | None,
    reverse: bool,
    relu: bool,
    cfg: KernelConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """da (T, B, H) and d h0 (B, H), in hs's dtype.

    da is dL/d(pre-activation), which is dL/du; the caller reduces it into dW_hh.
    """
    LAUNCHER_CALLS["backward"] += 1
    T, B, H = hs.shape
    da = _empty(hs)
    dh0 = _empty(hs, (B, H))
    # pointers the kernel never reads when the matching HAS_* flag is off
    dhs_arg = hs if dhs is None else dhs
    dhn_arg = hs if dhn is None else dhn
    lengths_arg = hs if lengths is None else lengths
    flags = dict(RELU=relu, REVERSE=reverse, HAS_LENGTHS=lengths is not None)
    flags.update(HAS_DHS=dhs is not None, HAS_DHN=dhn is not None)
    n_b = triton.cdiv(B, cfg.block_b)
    with _guard(hs.device):
        if cfg.mode == "single":
            K.fused_recurrent_bwd_kernel[(n_b,)](
                weight, hs, dhs_arg, dhn_arg, lengths_arg, da, dh0, T, B, H,
                BB=cfg.block_b, BH=cfg.block_h, DOT_PRECISION=cfg.dot_precision, **flags,
                **cfg.launch_options(backward=True, persistent=False),
            )  # fmt: skip
            return da, dh0
        grid = (n_b, triton.cdiv(H, cfg.block_n))
        meta = dict(BB=cfg.block_b, BK=cfg.block_h, BN=cfg.block_n, DOT_PRECISION=cfg.dot_precision, **flags)
        if _persistent_wanted(hs.device):
            count = torch.zeros(n_b, dtype=torch.int32, device=hs.device)
            args = (weight, hs, dhs_arg, dhn_arg, lengths_arg, da, dh0, count, T, B, H)
            kw = dict(meta, **cfg.launch_options(backward=True, persistent=True), launch_cooperative_grid=True)
            if _launch_persistent(K.split_recurrent_bwd_kernel, grid, args, kw, hs.device):
                return da, dh0
        # dh of the previous launch's step, for rows that pass it through (lengths only)
        dh = torch.empty(B, H, dtype=torch.float32, device=hs.device) if lengths is not None else da
        meta.update(cfg.launch_options(backward=True, persistent=False))
        # launch i finishes step i - 1 and runs step i
        args = (weight, hs, dhs_arg, dhn_arg, lengths_arg, dh, da, dh0, 0, T, B, H)
        _launch_steps(K.split_recurrent_bwd_step_kernel, grid, args, meta, T + 1)
    return da, dh0


@dataclass(frozen=True)
class GatedLaunch:
    """How the LSTM / GRU kernels run one (dtype, dot precision, padded H) (`fused_rnn.gated_ops.gated_launch`).

    mode "single": one program per BB rows holds every gate's W_hh ([block_h, block_h] each), `num_warps`.
    mode "split": programs own `block_n` hidden units each (grid (cdiv(B, BB), cdiv(H, block_n))); the step
    kernels run `num_warps`, the persistent (grid-barrier) ones `num_warps_persistent` (0: no persistent build
    fits this card); with `split_k` a tensor-core dot cuts its reduction into one slice per warp
    (`kernels.utils.dot_split_k`).
    """

    mode: str
    block_b: int
    block_h: int
    dot_precision: str
    num_warps: int
    block_n: int = 0
    num_warps_persistent: int = 0
    split_k: bool = False
    #: the kernel may use the whole register file (`maxnreg`): "step" (the step or single-program kernel),
    #: "persistent", both or neither, as the gate's tables say
    maxnreg: tuple[str, ...] = ()

    def warps(self, persistent: bool) -> dict:
        """num_warps (and SK of the split kernels, maxnreg where set) of the step / single kernel or of the
        persistent one."""
        w = self.num_warps_persistent if persistent else self.num_warps
        out = {"num_warps": w} if self.mode == "single" else {"num_warps": w, "SK": w if self.split_k else 1}
        if ("persistent" if persistent else "step") in self.maxnreg:
            out["maxnreg"] = max_registers(w)
        return out


def gated_forward(
    cell: int,
    u: torch.Tensor,
    weight: torch.Tensor,
    b_hn: torch.Tensor | None,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
    lengths: torch.Tensor | None,
    reverse: bool,
    cfg: GatedLaunch,
) -> tuple[torch.Tensor, ...]:
    """LSTM (cell 0) or GRU (cell 1): hs, cs (LSTM; else an empty tensor), gates (T, B, 4H) float32, h_n, c_n
    (LSTM; else empty). T >= 1 and B >= 1; every tensor contiguous."""
    GATED_CALLS["forward"] += 1
    T, B, _ = u.shape
    H = h0.shape[1]
    hs = _empty(u, (T, B, H))
    lstm = cell == 0
    cs = _empty(u, (T, B, H)) if lstm else u.new_empty(0)
    gates = torch.empty(T, B, 4 * H, dtype=torch.float32, device=u.device)
    if POISON:
        gates.fill_(float("nan"))
    hn = _empty(h0)
    cn = _empty(h0) if lstm else u.new_empty(0)
    # pointers a kernel never reads for this cell or without lengths
    args = (u, weight, h0 if b_hn is None else b_hn, h0, h0 if c0 is None else c0, h0 if lengths is None else lengths,
            hs, hs if not lstm else cs, gates, hn, hn if not lstm else cn)  # fmt: skip
    meta = dict(BB=cfg.block_b, DOT_PRECISION=cfg.dot_precision, CELL=cell, REVERSE=reverse,
                HAS_LENGTHS=lengths is not None)  # fmt: skip
    n_b = triton.cdiv(B, cfg.block_b)
    with _guard(u.device):
        if cfg.mode == "single":
            K.gated_recurrent_fwd_kernel[(n_b,)](*args, T, B, H, BH=cfg.block_h, **meta, **cfg.warps(False))
            return hs, cs, gates, hn, cn
        grid = (n_b, triton.cdiv(H, cfg.block_n))
        meta.update(BK=cfg.block_h, BN=cfg.block_n)
        if cfg.num_warps_persistent and _persistent_wanted(u.device):
            count = torch.zeros(n_b, dtype=torch.int32, device=u.device)
            kw = dict(meta, **cfg.warps(True), launch_cooperative_grid=True)
            if _launch_persistent(K.gated_split_fwd_kernel, grid, (*args, count, T, B, H), kw, u.device):
                return hs, cs, gates, hn, cn
        state = torch.empty(2, B, H, dtype=torch.float32, device=u.device)
        meta.update(cfg.warps(False))
        _launch_steps(K.gated_split_fwd_step_kernel, grid, (*args, state, 0, T, B, H), meta, T)
    return hs, cs, gates, hn, cn


def gated_backward(
    cell: int,
    weight: torch.Tensor,
    hs: torch.Tensor,
    cs: torch.Tensor | None,
    gates: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
    dhs: torch.Tensor | None,
    dhn: torch.Tensor | None,
    dcn: torch.Tensor | None,
    lengths: torch.Tensor | None,
    reverse: bool,
    cfg: GatedLaunch,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """da (T, B, 4H) float32 (see kernels/gated_recurrent.py), d h0 and d c0 (LSTM; else empty), in hs's dtype."""
    GATED_CALLS["backward"] += 1
    T, B, H = hs.shape
    da = torch.empty(T, B, 4 * H, dtype=torch.float32, device=hs.device)
    if POISON:
        da.fill_(float("nan"))
    dh0 = _empty(hs, (B, H))
    dc0 = _empty(hs, (B, H)) if cell == 0 else hs.new_empty(0)
    head = (weight, hs, hs if cs is None else cs, gates, h0, h0 if c0 is None else c0, hs if dhs is None else dhs,
            hs if dhn is None else dhn, hs if dcn is None else dcn, hs if lengths is None else lengths)  # fmt: skip
    tail = (da, dh0, dh0 if dc0.numel() == 0 else dc0)
    meta = dict(BB=cfg.block_b, DOT_PRECISION=cfg.dot_precision, CELL=cell, REVERSE=reverse,
                HAS_LENGTHS=lengths is not None, HAS_DHS=dhs is not None, HAS_DHN=dhn is not None,
                HAS_DCN=dcn is not None)  # fmt: skip
    n_b = triton.cdiv(B, cfg.block_b)
    with _guard(hs.device):
        if cfg.mode == "single":
            K.gated_recurrent_bwd_kernel[(n_b,)](*head, *tail, T, B, H, BH=cfg.block_h, **meta, **cfg.warps(False))
            return da, dh0, dc0
        grid = (n_b, triton.cdiv(H, cfg.block_n))
        meta.update(BK=cfg.block_h, BN=cfg.block_n)
        if cfg.num_warps_persistent and _persistent_wanted(hs.device):
            count = torch.zeros(n_b, dtype=torch.int32, device=hs.device)
            kw = dict(meta, **cfg.warps(True), launch_cooperative_grid=True)
            if _launch_persistent(K.gated_split_bwd_kernel, grid, (*head, *tail, count, T, B, H), kw, hs.device):
                return da, dh0, dc0
        state = torch.empty(2, B, H, dtype=torch.float32, device=hs.device)
        meta.update(cfg.warps(False))
        # launch i finishes backward step i - 1 and runs step i
        _launch_steps(K.gated_split_bwd_step_kernel, grid, (*head, state, *tail, 0, T, B, H), meta, T + 1)
    return da, dh0, dc0
