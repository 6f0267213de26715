"""Kernel configuration: a pure function of (B, H, dtype, precision, device capability, SM count).

The limits and the configs below are the ones the GPU compile gate
(tests/test_compile_gate.py) builds for sm_80 and sm_90 and checks for shared
memory, register spills and tensor-core instructions. Change them together.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class KernelConfig:
    """One launchable configuration.

    mode: "single" (one program holds all of W_h) or "split" (W_h split by columns).
    block_b: batch rows per program. block_h: H padded to a power of two >= 16
    (the reduction width). block_n: output columns per program (= block_h for
    "single"). dot_precision: "ieee" or "tf32" (only read for float32).
    """

    mode: str
    block_b: int
    block_h: int
    block_n: int
    num_warps: int
    dot_precision: str

    @property
    def n_split(self) -> int:
        return self.block_h // self.block_n


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
        return KernelConfig("single", BLOCK_B, bh, bh, 4 if bh <= 64 else 8, precision)
    if H <= SPLIT_MAX_H[dtype]:
        return KernelConfig("split", BLOCK_B, bh, SPLIT_BN, 16 if bh >= 2048 else 8, precision)
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
