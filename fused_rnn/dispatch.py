"""Kernel configuration: a pure function of (B, H, dtype, precision, device capability, SM count).

The limits and the configs below are the ones the GPU compile gate
(tests/test_compile_gate.py) builds for sm_80 and sm_90 and checks for shared
memory, register spills and tensor-core instructions. Change them together.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import torch

#: Largest H for one program holding all of W_h (BH = 128). At BH = 256 fp32 needs
#: 272 KiB of shared memory (over sm_90's 227 KiB) and bf16 spills registers.
SINGLE_MAX_H = 128
#: Largest H for the split kernels: W_h spread over H / 16 programs.
SPLIT_MAX_H = {torch.float32: 1024, torch.float16: 2048, torch.bfloat16: 2048}
#: Column slice per program in the split kernels and batch rows per program.
SPLIT_BN = 16
BLOCK_B = 16
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: (mode, block_h) -> warps of the (forward, backward) step or single-program kernels, then
#: of the persistent split (forward, backward), and whether those get `max_registers`:
#: per kernel, the first count of 4 / 8 / 16 that builds without spills for every dtype,
#: feature variant and card (compile gate). ptxas caps a kernel's registers by its own
#: heuristic (168 at 4 warps, 128 at 8); where no warp count builds clean under that cap
#: (the persistent split at BK = 1024), the kernel is allowed the whole register file.
#: Giving it to every kernel does not work: ptxas then spills some that build clean without.
WARPS = {
    ("single", 16): (4, 4),
    ("single", 32): (4, 4),
    ("single", 64): (4, 4),
    ("single", 128): (8, 8),
    ("split", 256): (4, 4, 8, 8, False),
    ("split", 512): (16, 4, 4, 4, False),  # the half forward step spills 8 B at 8 warps
    ("split", 1024): (8, 8, 8, 8, True),  # the persistent forward spills 8-24 B at 4, 8 and 16 warps
    ("split", 2048): (8, 16, 8, 8, False),  # the backward step spills 72 B at 8 warps, the persistent 104 B at 16
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
    persistent_maxnreg: bool = False  # the persistent split kernels may use the whole register file

    def key(self) -> str:
        """A string that `from_key` turns back into this config (custom ops take strings, not objects)."""
        return ":".join(str(v) for v in astuple(self))

    @classmethod
    def from_key(cls, key: str) -> KernelConfig:
        mode, bb, bh, bn, nw, prec, nwb, nwp, nwbp, maxnreg = key.split(":")
        opt = [None if v == "None" else int(v) for v in (nwp, nwbp)]
        return cls(mode, int(bb), int(bh), int(bn), int(nw), prec, int(nwb), *opt, maxnreg == "True")

    def launch_options(self, backward: bool, persistent: bool) -> dict:
        """num_warps (and maxnreg where set) of one kernel: `persistent` is the split grid-barrier kernel."""
        w = self.num_warps_bwd if backward else self.num_warps
        if persistent and self.mode == "split":
            pw = self.num_warps_bwd_persistent if backward else self.num_warps_persistent
            w = w if pw is None else pw
            if self.persistent_maxnreg:
                return {"num_warps": w, "maxnreg": max_registers(w)}
        return {"num_warps": w}


def padded(h: int) -> int:
    return max(16, 1 << (h - 1).bit_length())


def max_hidden(dtype: torch.dtype) -> int:
    """Largest H any triton config supports for `dtype` (0 if the dtype has none)."""
    return SPLIT_MAX_H.get(dtype, 0)


def dot_precision(dtype: torch.dtype, float32_matmul_precision: str) -> str:
    """TF32 only when PyTorch's float32 matmul precision allows it; half dtypes ignore it."""
    if dtype == torch.float32 and float32_matmul_precision != "highest":
        return "tf32"
    return "ieee"


def select_config(
    B: int,
    H: int,
    dtype: torch.dtype,
    precision: str,
    capability: tuple[int, int] | None = None,
    sm_count: int | None = None,
) -> KernelConfig | None:
    """Config for a (B, H) recurrence, or None when no triton kernel covers it.

    `capability` and `sm_count` are those of the CUDA device (None under the
    interpreter, which takes the sm_90 table). B is accepted so that batch
    blocking can depend on it; today every config uses 16-row blocks, the
    smallest tensor-core tile, which spreads a batch over the most SMs.
    """
    del B, capability, sm_count  # same table for every batch and card today
    if dtype not in SUPPORTED_DTYPES or H < 1:
        return None
    bh = padded(H)
    if H <= SINGLE_MAX_H:
        return KernelConfig("single", BLOCK_B, bh, bh, WARPS["single", bh][0], precision, WARPS["single", bh][1])
    if H <= SPLIT_MAX_H[dtype]:
        fwd, bwd, fwd_p, bwd_p, maxnreg = WARPS["split", bh]
        return KernelConfig("split", BLOCK_B, bh, SPLIT_BN, fwd, precision, bwd, fwd_p, bwd_p, maxnreg)
    return None


def all_configs() -> list[tuple[torch.dtype, str, KernelConfig]]:
    """Every (dtype, precision, config) the dispatcher can return: what the compile gate builds."""
    out = []
    for dtype in SUPPORTED_DTYPES:
        for prec in ("ieee", "tf32") if dtype == torch.float32 else ("ieee",):
            seen = set()
            h = 1
            while h <= SPLIT_MAX_H[dtype]:
                cfg = select_config(1, h, dtype, prec)
                if cfg is not None and cfg not in seen:
                    seen.add(cfg)
                    out.append((dtype, prec, cfg))
                h *= 2
    return out
