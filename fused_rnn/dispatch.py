"""Kernel configuration: a pure function of (B, H, dtype, precision, device capability, SM count).

The limits and the configs below are the ones the GPU compile gate
(tests/compile_gate.py, checked by tests/test_compile_gate.py) builds for every card
in `SMEM_LIMIT` and every specialisation Triton's JIT can make of the launches,
and checks for shared memory, register spills and tensor-core instructions.
Change them together.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import torch

#: Per-block opt-in shared memory (bytes; cudaDevAttrMaxSharedMemoryPerBlockOptin) of each card
#: the dispatcher is built and gated for. sm_80 and sm_90 are the values Triton's driver reports
#: for the A100 and H100 (torch.testing._internal.inductor_utils IS_A100 / IS_H100); sm_86 and
#: sm_89 are from the CUDA C++ Programming Guide's table of compute capabilities (99 KiB).
SMEM_LIMIT = {(8, 0): 166912, (8, 6): 101376, (8, 9): 101376, (9, 0): 232448}
#: The oldest card the kernels are built for (tf32 and bf16 tensor-core dots need sm_80).
MIN_CAPABILITY = (8, 0)
#: The table a device without a capability uses (Triton's CPU interpreter): sm_90's.
DEFAULT_CAPABILITY = (9, 0)

#: Largest H for one program holding all of W_h (BH = 128). At BH = 256 fp32 needs
#: 272 KiB of shared memory (over sm_90's 227 KiB) and bf16 spills registers.
SINGLE_MAX_H = 128
#: Reduction widths BK of the split kernels (W_h spread over H / 16 programs), smallest
#: and largest by dtype. BK = 128 only runs where the single-program config does not fit.
SPLIT_MIN_BK = 128
SPLIT_MAX_H = {torch.float32: 1024, torch.float16: 2048, torch.bfloat16: 2048}
#: Column slice per program in the split kernels and batch rows per program.
SPLIT_BN = 16
BLOCK_B = 16
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: (mode, block_h) -> warps of the (forward, backward) step or single-program kernels, then of
#: the persistent split (forward, backward): per kernel, the first count of 4 / 8 / 16 that builds
#: without spills for every dtype, card, feature variant and specialisation class (compile gate),
#: with the whole register file (`MAXNREG`) where no count builds clean without it.
WARPS = {
    ("single", 16): (4, 4),
    ("single", 32): (4, 4),
    ("single", 64): (4, 4),
    ("single", 128): (8, 8),
    ("split", 128): (8, 4, 8, 4),  # 99 KiB cards only; the fp32 forwards spill 1.8 KiB (step) / 120 B at 4 warps
    ("split", 256): (8, 4, 8, 8),  # the fp32 forward step: 4.5 KiB of stack at 4 warps, 8 B at 8 and 16
    ("split", 512): (16, 8, 8, 8),  # at 4 warps the fp32 persistent forward and backward step take 3.5-8 KiB of stack
    ("split", 1024): (8, 8, 8, 8),
    ("split", 2048): (16, 16, 8, 8),  # the half forward step spills 8-56 B at 4 and 8 warps
}
#: (mode, block_h) -> the kernels of WARPS ("fwd", "bwd", "fwd_persistent", "bwd_persistent")
#: launched with `maxnreg = max_registers(num_warps)`. Left to itself ptxas caps registers by its
#: own heuristic (it spills 8-88 B of these at 40-128 registers in some specialisation, at every
#: warp count); with the cap lifted they build clean. Not given to every kernel: an earlier search
#: found ptxas then spilling some that build clean without.
MAXNREG = {
    ("single", 64): ("fwd",),
    ("single", 128): ("fwd",),
    ("split", 256): ("fwd",),
    ("split", 512): ("bwd_persistent",),
    ("split", 1024): ("fwd", "bwd", "fwd_persistent", "bwd_persistent"),
}
#: Shared memory (bytes) of a config by (mode, block_h, bytes per element): the most any of its
#: kernels takes in the compile gate, over every variant, precision and card (the gate's test
#: checks that every cubin stays within its entry). `select_config` takes the first config whose
#: entry fits the card's `SMEM_LIMIT`.
SHARED_BYTES = {
    ("single", 16, 4): 8192,
    ("single", 32, 4): 15360,
    ("single", 64, 4): 37888,
    ("single", 128, 4): 107520,
    ("single", 16, 2): 4096,
    ("single", 32, 2): 8192,
    ("single", 64, 2): 19456,
    ("single", 128, 2): 54272,
    ("split", 128, 4): 17408,
    ("split", 256, 4): 34816,
    ("split", 512, 4): 67584,
    ("split", 1024, 4): 133120,
    ("split", 256, 2): 17920,
    ("split", 512, 2): 34304,
    ("split", 1024, 2): 67072,
    ("split", 2048, 2): 132608,
}


def max_registers(num_warps: int) -> int:
    """Registers per thread that let one program use the whole 64K register file (at most 255).

    Given where WARPS says so (see there).
    """
    return min(255, 65536 // (32 * num_warps))


@dataclass(frozen=True)
class KernelConfig:
    """One launchable configuration.

    mode: "single" (one program holds all of W_h) or "split" (W_h split by columns).
    block_b: batch rows per program. block_h: H padded to a power of two >= 16
    (the reduction width). block_n: output columns per program (= block_h for
    "single"). dot_precision: "ieee" or "tf32" (only read for float32).
    num_warps / num_warps_bwd: warps per program of the forward / backward kernels.
    """

    mode: str
    block_b: int
    block_h: int
    block_n: int
    num_warps: int
    dot_precision: str
    num_warps_bwd: int = 8
    num_warps_persistent: int | None = None  # None: as num_warps
    num_warps_bwd_persistent: int | None = None  # None: as num_warps_bwd
    #: the kernels ("fwd", "bwd", "fwd_persistent", "bwd_persistent", comma-separated) that may use
    #: the whole register file (see MAXNREG)
    maxnreg: str = ""

    def key(self) -> str:
        """A string that `from_key` turns back into this config (custom ops take strings, not objects)."""
        return ":".join(str(v) for v in astuple(self))

    @classmethod
    def from_key(cls, key: str) -> KernelConfig:
        mode, bb, bh, bn, nw, prec, nwb, nwp, nwbp, maxnreg = key.split(":")
        opt = [None if v == "None" else int(v) for v in (nwp, nwbp)]
        return cls(mode, int(bb), int(bh), int(bn), int(nw), prec, int(nwb), *opt, maxnreg)

    def launch_options(self, backward: bool, persistent: bool) -> dict:
        """num_warps (and maxnreg where set) of one kernel: `persistent` is the split grid-barrier kernel."""
        w = self.num_warps_bwd if backward else self.num_warps
        persistent = persistent and self.mode == "split"
        if persistent:
            pw = self.num_warps_bwd_persistent if backward else self.num_warps_persistent
            w = w if pw is None else pw
        kernel = ("bwd" if backward else "fwd") + ("_persistent" if persistent else "")
        if kernel in self.maxnreg.split(","):
            return {"num_warps": w, "maxnreg": max_registers(w)}
        return {"num_warps": w}


def padded(h: int) -> int:
    return max(16, 1 << (h - 1).bit_length())


def smem_limit(capability: tuple[int, int] | None) -> int:
    """Per-block shared memory the dispatcher may use on a card.

    None (the interpreter) takes sm_90's; a card the gate does not build for, the smallest limit.
    """
    if capability is None:
        return SMEM_LIMIT[DEFAULT_CAPABILITY]
    return SMEM_LIMIT.get(tuple(capability), min(SMEM_LIMIT.values()))


def shared_bytes(cfg: KernelConfig, dtype: torch.dtype) -> int:
    """The gate's shared memory bound of `cfg` for `dtype` (see SHARED_BYTES)."""
    return SHARED_BYTES[cfg.mode, cfg.block_h, dtype.itemsize]


def _candidates(H: int, dtype: torch.dtype, precision: str) -> list[KernelConfig]:
    """The configs that cover H, in order of preference (one program, then the column split)."""
    bh = padded(H)
    out = []
    if H <= SINGLE_MAX_H:
        fwd, bwd = WARPS["single", bh]
        maxnreg = ",".join(MAXNREG.get(("single", bh), ()))
        out.append(KernelConfig("single", BLOCK_B, bh, bh, fwd, precision, bwd, maxnreg=maxnreg))
    if SPLIT_MIN_BK <= bh and H <= SPLIT_MAX_H[dtype]:
        fwd, bwd, fwd_p, bwd_p = WARPS["split", bh]
        maxnreg = ",".join(MAXNREG.get(("split", bh), ()))
        out.append(KernelConfig("split", BLOCK_B, bh, SPLIT_BN, fwd, precision, bwd, fwd_p, bwd_p, maxnreg))
    return out


def select_config(
    B: int,
    H: int,
    dtype: torch.dtype,
    precision: str,
    capability: tuple[int, int] | None = None,
    sm_count: int | None = None,
) -> KernelConfig | None:
    """Config for a (B, H) recurrence, or None when no triton kernel covers it on this card.

    `capability` and `sm_count` are those of the CUDA device (None under the
    interpreter, which takes the sm_90 table). The first config whose shared memory
    (SHARED_BYTES) fits the card's per-block limit wins, so a 99 KiB card runs float32
    64 < H <= 128 on the split kernels and has no config for larger H than it can hold.
    B is accepted so that batch blocking can depend on it; today every config uses
    16-row blocks, the smallest tensor-core tile, which spreads a batch over the most SMs.
    """
    del B, sm_count  # same blocking for every batch size and SM count today
    if dtype not in SUPPORTED_DTYPES or H < 1:
        return None
    if capability is not None and tuple(capability) < MIN_CAPABILITY:
        return None
    limit = smem_limit(capability)
    for cfg in _candidates(H, dtype, precision):
        if shared_bytes(cfg, dtype) <= limit:
            return cfg
    return None


def max_hidden(dtype: torch.dtype, capability: tuple[int, int] | None = None) -> int:
    """Largest H any triton config supports for `dtype` on a card (0 if none); None: the sm_90 table."""
    if dtype not in SUPPORTED_DTYPES:
        return 0
    h = SPLIT_MAX_H[dtype]
    while h >= 1 and select_config(1, h, dtype, "ieee", capability) is None:
        h //= 2
    return h if h >= 1 else 0


def _sm(capability: tuple[int, int]) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def unsupported_reason(H: int, dtype: torch.dtype, capability: tuple[int, int] | None = None) -> str | None:
    """Why no triton config covers hidden size H of `dtype` on a card, or None when one does.

    Shapes and the capability only: the text `fused_rnn.ops` shows when it falls back or raises.
    """
    if dtype not in SUPPORTED_DTYPES or H < 1:
        return None  # the caller's own checks name these
    if capability is not None and tuple(capability) < MIN_CAPABILITY:
        return f"{_sm(capability)} is older than sm_80, the oldest card the triton kernels are built for"
    if select_config(1, H, dtype, "ieee", capability) is not None:
        return None
    top = max_hidden(dtype, capability)
    wider = select_config(1, H, dtype, "ieee", DEFAULT_CAPABILITY)
    if capability is None or wider is None:
        where = "" if capability is None else f" on {_sm(capability)}"
        return f"H = {H} is over the triton limit of H <= {top} for {dtype}{where}"
    need = math.ceil(shared_bytes(wider, dtype) / 1024)
    return (
        f"H = {H} needs {need} KiB of shared memory per block for {dtype}; {_sm(capability)} allows "
        f"{smem_limit(capability) // 1024} KiB per block (the triton limit there is H <= {top})"
    )


def dot_precision(dtype: torch.dtype, float32_matmul_precision: str) -> str:
    """TF32 only when PyTorch's float32 matmul precision allows it; half dtypes ignore it."""
    if dtype == torch.float32 and float32_matmul_precision != "highest":
        return "tf32"
    return "ieee"


def all_configs() -> list[tuple[tuple[int, int], torch.dtype, str, KernelConfig]]:
    """Every (capability, dtype, precision, config) the dispatcher can return: what the compile gate builds."""
    out = []
    for cap in SMEM_LIMIT:
        for dtype in SUPPORTED_DTYPES:
            for prec in ("ieee", "tf32") if dtype == torch.float32 else ("ieee",):
                seen = set()
                h = 1
                while h <= SPLIT_MAX_H[dtype]:  # configs depend on padded(H) only
                    cfg = select_config(1, h, dtype, prec, cap)
                    if cfg is not None and cfg not in seen:
                        seen.add(cfg)
                        out.append((cap, dtype, prec, cfg))
                    h *= 2
    return out
