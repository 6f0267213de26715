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
#: with the whole register file (`MAXNREG`) where no count builds clean without it. The split
#: entries are those of the FMA dot (float32 IEEE); tensor-core dots take `SPLIT_K_WARPS`.
WARPS = {
    ("single", 16): (4, 4),  # the FMA dot; tensor-core dots take SINGLE_MMA_WARPS
    ("single", 32): (4, 4),
    ("single", 64): (4, 4),
    ("single", 128): (8, 8),
    ("split", 128): (8, 4, 8, 4),  # 99 KiB cards only; the fp32 forwards spill 1.8 KiB (step) / 120 B at 4 warps
    ("split", 256): (8, 4, 8, 8),  # the fp32 forward step: 4.5 KiB of stack at 4 warps, 8 B at 8 and 16
    ("split", 512): (16, 8, 8, 8),  # at 4 warps the fp32 persistent forward and backward step take 3.5-8 KiB of stack
    ("split", 1024): (8, 8, 8, 8),
    ("split", 2048): (16, 16, 8, 8),  # the half forward step spills 8-56 B at 4 and 8 warps
}
#: (block_h, dot kind) -> warps of the single-program kernels where WARPS's count would leave warps
#: repeating each other's mma: a [16, 16] tile is two m16n8 columns, one per warp (tf32x3's three
#: passes then still repeat, so it takes one warp). The FMA dot keeps 4 warps: its tail (tanh, stores)
#: spreads over more threads (120 instructions per step at 4 warps, 221 at 2, 422 at 1).
SINGLE_MMA_WARPS = {(16, "half"): (2, 2), (16, "tf32"): (2, 2), (16, "tf32x3"): (1, 1)}
#: block_h -> warps of the split kernels (as in WARPS) with a tensor-core dot (tf32, tf32x3, fp16,
#: bf16), each splitting its reduction into as many slices as it has warps (`split_k`): a
#: [16, BK] @ [BK, 16] tile is one warp's worth of mma rows, so without the split every other
#: warp repeats the whole BK-long mma chain; with it each warp runs BK / warps of it (bench/NOTES.md
#: 11). 8 slices build clean everywhere but the half forward step at BK = 512 (8-24 B of spills).
SPLIT_K_WARPS = {
    128: (8, 8, 8, 8),
    256: (8, 8, 8, 8),
    512: (16, 8, 8, 8),
    1024: (8, 8, 8, 8),
    2048: (8, 8, 8, 8),
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
#: As MAXNREG, for the split kernels of SPLIT_K_WARPS (8-16 B of spills in one specialisation class each
#: without: tf32x3 BK = 256 forward step, half BK = 512 backward step, half / tf32 persistent backward,
#: tf32 BK = 1024 persistent forward).
SPLIT_K_MAXNREG = {
    256: ("fwd", "bwd_persistent"),
    512: ("bwd", "bwd_persistent"),
    1024: ("fwd_persistent", "bwd_persistent"),
}
#: Largest BK of the split kernels with tf32x3: at 1024 its persistent backward spills 16-32 B at every
#: warp count and its persistent kernels need 193 KiB of shared memory (one program per sm_90 SM).
#: Beyond it tf32x3 runs the IEEE config.
TF32X3_MAX_SPLIT_BK = 512
#: Shared memory (bytes) of a config by (mode, block_h, `dot_kind`): the most any of its kernels
#: takes in the compile gate, over every variant and card (the gate's test checks that every
#: cubin stays within its entry). `select_config` takes the first config whose entry fits the
#: card's `SMEM_LIMIT`.
SHARED_BYTES = {
    ("single", 16, "half"): 4096,
    ("single", 16, "ieee"): 7168,
    ("single", 16, "tf32"): 7168,
    ("single", 16, "tf32x3"): 7680,
    ("single", 32, "half"): 8192,
    ("single", 32, "ieee"): 15360,
    ("single", 32, "tf32"): 15360,
    ("single", 32, "tf32x3"): 21504,
    ("single", 64, "half"): 19456,
    ("single", 64, "ieee"): 37888,
    ("single", 64, "tf32"): 37888,
    ("single", 64, "tf32x3"): 58368,
    ("single", 128, "half"): 54272,
    ("single", 128, "ieee"): 107520,
    ("single", 128, "tf32"): 107520,
    ("single", 128, "tf32x3"): 181248,
    ("split", 128, "ieee"): 16384,
    ("split", 128, "tf32"): 16384,
    ("split", 128, "tf32x3"): 24576,
    ("split", 256, "half"): 17408,
    ("split", 256, "ieee"): 33792,
    ("split", 256, "tf32"): 33792,
    ("split", 256, "tf32x3"): 50176,
    ("split", 512, "half"): 25600,
    ("split", 512, "ieee"): 66560,
    ("split", 512, "tf32"): 66560,
    ("split", 512, "tf32x3"): 99328,
    ("split", 1024, "half"): 50176,
    ("split", 1024, "ieee"): 132096,
    ("split", 1024, "tf32"): 132096,
    ("split", 2048, "half"): 99328,
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
    "single"). dot_precision: "ieee", "tf32" or "tf32x3" (only read for float32).
    num_warps / num_warps_bwd: warps per program of the forward / backward kernels.
    split_k: the split kernels cut their reduction into one slice per warp (SK = num_warps).
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
    split_k: bool = False

    def key(self) -> str:
        """A string that `from_key` turns back into this config (custom ops take strings, not objects)."""
        return ":".join(str(v) for v in astuple(self))

    @classmethod
    def from_key(cls, key: str) -> KernelConfig:
        mode, bb, bh, bn, nw, prec, nwb, nwp, nwbp, maxnreg, split_k = key.split(":")
        opt = [None if v == "None" else int(v) for v in (nwp, nwbp)]
        return cls(mode, int(bb), int(bh), int(bn), int(nw), prec, int(nwb), *opt, maxnreg, split_k == "True")

    def problem(self) -> str | None:
        """Why this config cannot be launched (a forced one can be anything), or None."""
        if self.mode not in ("single", "split") or self.block_h < 16 or self.block_h & (self.block_h - 1):
            return f"mode {self.mode!r} with block_h = {self.block_h}: expected 'single' or 'split', a power of 2 >= 16"
        if self.split_k and self.mode == "split":
            for backward in (False, True):
                for persistent in (False, True):
                    sk = self.launch_options(backward, persistent)["SK"]
                    if self.block_h % sk or self.block_h // sk < 16:
                        return (
                            f"split_k with {sk} warps cuts block_h = {self.block_h} into slices under 16 "
                            "(the smallest mma reduction): use at most block_h // 16 warps"
                        )
        return None

    def launch_options(self, backward: bool, persistent: bool) -> dict:
        """num_warps, maxnreg where set and the split kernels' SK of one kernel (`persistent`: grid-barrier kernel)."""
        w = self.num_warps_bwd if backward else self.num_warps
        persistent = persistent and self.mode == "split"
        if persistent:
            pw = self.num_warps_bwd_persistent if backward else self.num_warps_persistent
            w = w if pw is None else pw
        kernel = ("bwd" if backward else "fwd") + ("_persistent" if persistent else "")
        out = {"num_warps": w}
        if kernel in self.maxnreg.split(","):
            out["maxnreg"] = max_registers(w)
        if self.mode == "split":
            out["SK"] = w if self.split_k else 1
        return out


def padded(h: int) -> int:
    """The power of two (at least 16) a block of h covers. int(): under torch.jit.trace sizes are tensors."""
    return max(16, 1 << (int(h) - 1).bit_length())


def smem_limit(capability: tuple[int, int] | None) -> int:
    """Per-block shared memory the dispatcher may use on a card.

    None (the interpreter) takes sm_90's; a card the gate does not build for, the smallest limit.
    """
    if capability is None:
        return SMEM_LIMIT[DEFAULT_CAPABILITY]
    return SMEM_LIMIT.get(tuple(capability), min(SMEM_LIMIT.values()))


def dot_kind(dtype: torch.dtype, precision: str) -> str:
    """The dot a kernel runs: "ieee" (float32 FMA), "tf32", "tf32x3" or "half" (fp16 / bf16 mma)."""
    return precision if dtype == torch.float32 else "half"


def shared_bytes(cfg: KernelConfig, dtype: torch.dtype) -> int:
    """The gate's shared memory bound of `cfg` for `dtype` (see SHARED_BYTES)."""
    return SHARED_BYTES[cfg.mode, cfg.block_h, dot_kind(dtype, cfg.dot_precision)]


def _candidates(H: int, dtype: torch.dtype, precision: str) -> list[KernelConfig]:
    """The configs that cover H, in order of preference (one program, then the column split)."""
    bh = padded(H)
    out = []
    if H <= SINGLE_MAX_H:
        fwd, bwd = SINGLE_MMA_WARPS.get((bh, dot_kind(dtype, precision)), WARPS["single", bh])
        maxnreg = ",".join(MAXNREG.get(("single", bh), ()))
        out.append(KernelConfig("single", BLOCK_B, bh, bh, fwd, precision, bwd, maxnreg=maxnreg))
    if SPLIT_MIN_BK <= bh and H <= SPLIT_MAX_H[dtype] and (precision != "tf32x3" or bh <= TF32X3_MAX_SPLIT_BK):
        split_k = dot_kind(dtype, precision) != "ieee"  # an FMA dot is bound by its FMAs, not a chain
        fwd, bwd, fwd_p, bwd_p = SPLIT_K_WARPS[bh] if split_k else WARPS["split", bh]
        maxnreg = ",".join(SPLIT_K_MAXNREG.get(bh, ()) if split_k else MAXNREG.get(("split", bh), ()))
        out.append(KernelConfig("split", BLOCK_B, bh, SPLIT_BN, fwd, precision, bwd, fwd_p, bwd_p, maxnreg, split_k))
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
    "tf32x3" changes only the dot of the IEEE config (same mode and block): where that
    kernel does not fit the card (or BK > TF32X3_MAX_SPLIT_BK) the IEEE config runs.
    """
    # B and sm_count: the same blocking for every batch size and SM count today
    if dtype not in SUPPORTED_DTYPES or H < 1:
        return None
    if capability is not None and tuple(capability) < MIN_CAPABILITY:
        return None
    limit = smem_limit(capability)
    if precision == "tf32x3":
        base = select_config(B, H, dtype, "ieee", capability, sm_count)
        for cfg in _candidates(H, dtype, precision) if base is not None else ():
            if (cfg.mode, cfg.block_h) == (base.mode, base.block_h) and shared_bytes(cfg, dtype) <= limit:
                return cfg
        return base
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


def dot_precision(dtype: torch.dtype, float32_matmul_precision: str, tf32x3: bool = False) -> str:
    """TF32 only when PyTorch's float32 matmul precision allows it; half dtypes ignore it.

    `tf32x3` (opt-in, FUSED_RNN_TF32X3=1): float32 at "highest" runs Triton's tf32x3, three
    TF32 mma per product that give near-float32 results on tensor cores, instead of FMA.
    """
    if dtype == torch.float32 and float32_matmul_precision != "highest":
        return "tf32"
    if dtype == torch.float32 and tf32x3:
        return "tf32x3"
    return "ieee"


def all_configs() -> list[tuple[tuple[int, int], torch.dtype, str, KernelConfig]]:
    """Every (capability, dtype, precision, config) the dispatcher can return: what the compile gate builds."""
    out = []
    for cap in SMEM_LIMIT:
        for dtype in SUPPORTED_DTYPES:
            for prec in ("ieee", "tf32", "tf32x3") if dtype == torch.float32 else ("ieee",):
                seen = set()
                h = 1
                while h <= SPLIT_MAX_H[dtype]:  # configs depend on padded(H) only
                    cfg = select_config(1, h, dtype, prec, cap)
                    # (a tf32x3 request that falls back to the IEEE config is that config)
                    if cfg is not None and cfg not in seen and cfg.dot_precision == prec:
                        seen.add(cfg)
                        out.append((cap, dtype, prec, cfg))
                    h *= 2
    return out
