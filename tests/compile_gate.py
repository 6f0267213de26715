"""Compile every kernel the dispatcher can launch, as Triton's JIT specialises it, for every card; no GPU needed.

What runs is not one cubin per config: at launch Triton 3.6 specialises each
non-constexpr argument (`triton.runtime.jit.create_function_from_signature` calls
`native_specialize_impl`, then `JITFunction._pack_args` turns the result into
signature, constexprs and attrs via `BaseBackend.parse_attr`): an int equal to 1
becomes the constexpr 1; an int divisible by 16 (`get_int_specialization`) and a
tensor whose data_ptr is 16-byte aligned (`get_tensor_specialization`) get
`tt.divisibility = 16`; `do_not_specialize` arguments (T and i) get neither, and
an int of 2**31 or more is typed i64. The gate feeds stand-in arguments, laid out
as `fused_rnn/launch.py` passes them (`ARGS`, cross-checked by the test), through
that same binder (`_specialise`), so signature, constexprs, attrs and options are
the runtime's own.

Specialisation classes (`specs`), per config and kernel, all built by default:
  B: 1 (constexpr), a multiple of 16, or neither.
  H: a multiple of 16, or neither; also H = 1 (constexpr) for the BH = 16 config.
  alignment: the launcher allocates hs, hn, da, dh0, dh, count and W^T, always
  16-byte aligned; u, h0, lengths, W (backward), dhs and dhn are the caller's and
  may be views at any offset (h0 = hx[k], dhn = the gradient of a stacked h_n[k],
  ...), and so is W^T when H = 1 (`weight.t().contiguous()` is then the weight
  itself). With H a multiple of 16 the all-aligned and the all-misaligned case are
  built: in a one-off sample (8 kernels, sm_80) each single misaligned pointer gave
  registers between the two and spilled nowhere they did not. With H not a
  multiple of 16 no (B, H) slab load can be vectorised, so only the lengths load
  sees the alignment (the sample gave identical SASS for both without lengths):
  the misaligned case, its worst, is built.
Every class gives different SASS, and spills turned up in each of them somewhere
(B = 1 only, B neither and misaligned only, ...), so no class stands for another.
Features (`FEATURES`): every class with the costliest feature set (per-row lengths,
reverse walk, tanh; both gradient inputs in the backward) and the plain cell with
the common class. `--quick` builds `QUICK_SPECS` only (about 40 % of the time); on
the configs as they were before the per-class warp search it would have missed 11
of the 42 failing (card, config, kernel) combinations.

Generation (`fused_rnn.generate`, rows with mode "generate"): `generate_kernel` for every config of
`GEN_CONFIGS` and the draw step for every BV of `DRAW_CONFIGS`, each on the cards whose shared memory
holds it, in `GEN_SPECS` with sampling, top-k and log-probabilities on (every class at BH = 128, the
common one below) and the greedy kernel in the common class. `--kernels=a,b` builds only those kernels
(`GATE_KERNELS=a,b` for the test): the generation kernels alone take about 2 minutes warm.

Cards: every capability in `fused_rnn.dispatch.SMEM_LIMIT` with the configs the
dispatcher returns there. sm_86 and sm_89 run the same Triton pipeline as sm_80
except for the PTX `.target` line (`SAME_PTX`), so their cubins are ptxas runs,
with Triton's own `make_cubin`, on the first card's PTX; for the largest config of
each dtype, precision and mode the gate also runs Triton's whole pipeline for them
and fails if the PTX or the shared memory differ. sm_90's pipeline differs (other
layouts for half dots), so it always gets its own build.

Per cubin: registers, stack / local bytes (`cuobjdump -res-usage`; spill_bytes is
their sum), static plus dynamic shared memory, tensor-core instructions (HMMA /
HGMMA in the SASS) and the instruction mix of the time loop's body (`nvdisasm`:
from the target of the outermost backward branch to that branch; the step kernels
have no time loop, so their whole body is counted and marked so), and a digest of
its machine code (`code_sha`, the `.text` sections), which `bench/gate_crosscheck.py`
compares on a GPU with the kernels the runtime compiled. (The kernels' Triton cache
keys are the runtime's too, so a launch reuses the gate's build from Triton's cache;
`test_cache_keys_do_not_depend_on_hashing_order` keeps them so.) `python
tests/compile_gate.py` prints a table, `--json` a JSON list; `test_compile_gate.py`
runs it in a subprocess, because Triton's interpreter (which the rest of the suite
uses on CPU) cannot build cubins. Cold it takes about 12 minutes on 2 cores; the
ptxas runs and disassemblies it adds to Triton's cache are kept beside it, so a
warm run takes seconds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

TRITON_DTYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
#: Cards that run the same Triton pipeline, so that their PTX differs in the `.target` line only
#: (checked for one family per kernel, see `VERIFY`): the first of a job's cards gets a whole
#: build, the others ptxas on its PTX.
SAME_PTX = (80, 86, 89)

#: Each kernel's arguments as launch.py passes them: (name, role). Roles: "in" a caller's tensor
#: (possibly a view at any offset), "new" one the launcher allocates (or the forward's output),
#: "wt" W^T (allocated, but the caller's weight itself when H = 1), "lengths" the caller's int32
#: lengths (with HAS_LENGTHS; else the alias launch.py passes), "dh" fp32 scratch (else `da`),
#: "count" the int32 barrier counters, "step" T or i (do_not_specialize), "B" and "H".
ARGS = {
    "fused_recurrent_fwd_kernel": "u:in wt:wt h0:in lengths:lengths hs:new hn:new T:step B:B H:H",
    "fused_recurrent_bwd_kernel": "w:in hs:new dhs:in dhn:in lengths:lengths da:new dh0:new T:step B:B H:H",
    "split_recurrent_fwd_kernel": "u:in wt:wt h0:in lengths:lengths hs:new hn:new count:count T:step B:B H:H",
    "split_recurrent_fwd_step_kernel": "u:in wt:wt h0:in lengths:lengths hs:new hn:new i:step T:step B:B H:H",
    "split_recurrent_bwd_kernel": "w:in hs:new dhs:in dhn:in lengths:lengths da:new dh0:new count:count T:step B:B H:H",
    "split_recurrent_bwd_step_kernel": (
        "w:in hs:new dhs:in dhn:in lengths:lengths dh:dh da:new dh0:new i:step T:step B:B H:H"
    ),
    # LSTM / GRU (fused_rnn/gated_ops.py): "gates" the launcher's float32 (T, B, 4H) buffers; b_hn and c0 (the
    # cell's other one is aliased to h0) are the caller's
    "gated_recurrent_fwd_kernel": (
        "u:in w:in b_hn:in h0:in c0:in lengths:lengths hs:new cs:new gates:gates hn:new cn:new T:step B:B H:H"
    ),
    "gated_recurrent_bwd_kernel": (
        "w:in hs:new cs:new gates:gates h0:in c0:in dhs:in dhn:in dcn:in lengths:lengths da:gates dh0:new dc0:new "
        "T:step B:B H:H"
    ),
    # their split mode: "state" the launcher's float32 (2, B, H) scratch of the step kernels
    "gated_split_fwd_kernel": (
        "u:in w:in b_hn:in h0:in c0:in lengths:lengths hs:new cs:new gates:gates hn:new cn:new count:count T:step B:B "
        "H:H"
    ),
    "gated_split_fwd_step_kernel": (
        "u:in w:in b_hn:in h0:in c0:in lengths:lengths hs:new cs:new gates:gates hn:new cn:new state:state i:step "
        "T:step B:B H:H"
    ),
    "gated_split_bwd_kernel": (
        "w:in hs:new cs:new gates:gates h0:in c0:in dhs:in dhn:in dcn:in lengths:lengths da:gates dh0:new dc0:new "
        "count:count T:step B:B H:H"
    ),
    "gated_split_bwd_step_kernel": (
        "w:in hs:new cs:new gates:gates h0:in c0:in dhs:in dhn:in dcn:in lengths:lengths state:state da:gates "
        "dh0:new dc0:new i:step T:step B:B H:H"
    ),
    # generation (fused_rnn/generate.py): "seed" the (1,) int64 seed, "tokens" the int64 tokens, "logp" the
    # float32 log-probabilities (with RETURN_LOGP; else the tokens), "float" 1 / temperature, "V" V
    "generate_kernel": (
        "table:new wt:new wot:new bo:in h0:new seed:seed tokens:tokens logp:logp hn:new L:step S0:step B:B H:H "
        "V:V inv_temp:float top_k:step"
    ),
    "generate_draw_step_kernel": (
        "h:new wot:new bo:in seed:seed tokens:tokens logp:logp i:step L:step S0:step B:B H:H V:V inv_temp:float "
        "top_k:step"
    ),
}
#: The generation kernels (`fused_rnn.generate`): built for every config of `all_gen_configs` (and every
#: draw-step BV) on every card, in `GEN_SPECS` with every feature on and the greedy plain kernel in the
#: first class. Their rows have mode "generate".
GEN_KERNELS = ("generate_kernel", "generate_draw_step_kernel")
#: name -> (stand-in B, H offset from BH (0: H = BH, a multiple of 16), V offset from BV): the common
#: class (a multiple of 16 streams, a char vocabulary V not a multiple of 16), B = 1, and odd B, H and V.
GEN_SPECS = {"b16.h16.v": (32, 0, -1), "b1.h16.v": (1, 0, -1), "b.h.v16": (3, -1, 0)}
GEN_FEATURES = {
    "sample-topk-logp": dict(SAMPLE=True, HAS_TOP_K=True, RETURN_LOGP=True),
    "greedy": dict(SAMPLE=False, HAS_TOP_K=False, RETURN_LOGP=False),
}
#: What launch.py passes for `lengths` without HAS_LENGTHS.
LENGTHS_ALIAS = {"fwd": "h0", "bwd": "hs"}
KERNELS = {
    "single": ("fused_recurrent_fwd_kernel", "fused_recurrent_bwd_kernel"),
    "split": (
        "split_recurrent_fwd_kernel",
        "split_recurrent_fwd_step_kernel",
        "split_recurrent_bwd_kernel",
        "split_recurrent_bwd_step_kernel",
    ),
}
#: The LSTM / GRU kernels (mode "gated"): every config of `fused_rnn.gated_ops.all_gated_configs`, both cells,
#: per-row lengths and reverse on (and every gradient input in the backward), in `GATED_SPECS`; by launch mode.
GATED_KERNELS = {
    "single": ("gated_recurrent_fwd_kernel", "gated_recurrent_bwd_kernel"),
    "split": (
        "gated_split_fwd_kernel",
        "gated_split_fwd_step_kernel",
        "gated_split_bwd_kernel",
        "gated_split_bwd_step_kernel",
    ),
}
GATED_SPECS = ("b16.h16.aligned", "b.h.misaligned", "b1.h16.misaligned")
LOOPING = {"fused_recurrent_fwd_kernel", "fused_recurrent_bwd_kernel", "generate_kernel"} | {
    "split_recurrent_fwd_kernel",
    "split_recurrent_bwd_kernel",
    *GATED_KERNELS["single"],
    "gated_split_fwd_kernel",
    "gated_split_bwd_kernel",
}

FEATURES = {
    "lengths-reverse": dict(RELU=False, REVERSE=True, HAS_LENGTHS=True),
    "plain": dict(RELU=False, REVERSE=False, HAS_LENGTHS=False),
}
#: The specialisation the runtime makes for almost every call (and the one the plain cell is built with).
COMMON = "b16.h16.aligned"
#: The classes `--quick` builds (by default: all of `specs`): the common one, then each other B class,
#: H class and alignment at least once. It misses failures: see the module docstring.
QUICK_SPECS = (COMMON, "b.h16.misaligned", "b1.h.misaligned", "b.h1.misaligned")
#: (feature, spec) of the families whose sm_86 / sm_89 PTX is also built by Triton's whole pipeline
#: (for the largest config of each dtype, precision and mode).
VERIFY = ("lengths-reverse", COMMON)


def specs(mode: str, block_h: int) -> dict[str, tuple[int, int, bool]]:
    """Specialisation classes of a config: name -> (stand-in B, stand-in H, aligned)."""
    out = {}
    hs = {"h16": block_h, "h": block_h - 1} | ({"h1": 1} if mode == "single" and block_h == 16 else {})
    for bname, B in (("b1", 1), ("b16", 32), ("b", 3)):
        for hname, H in hs.items():
            for aligned in (True, False) if hname == "h16" else (False,):
                out[f"{bname}.{hname}.{'aligned' if aligned else 'misaligned'}"] = (B, H, aligned)
    return out


def _args(kernel: str, dtype, B: int, H: int, aligned: bool, flags: dict, V: int | None = None) -> list:
    """Stand-ins for the arguments launch.py passes: tensors with the right dtype and alignment, ints."""
    import torch

    def tensor(dt, caller: bool):
        buf = torch.empty(64, dtype=dt)
        return buf[1:33] if caller and not aligned else buf[:32]  # 1 element past a 16-byte boundary

    roles = dict(item.split(":") for item in ARGS[kernel].split())
    out = []
    for name, role in roles.items():
        if role == "B":
            out.append(B)
        elif role == "H":
            out.append(H)
        elif role == "step":
            out.append(1024)  # a multiple of 16: do_not_specialize must keep it plain
        elif role == "V":
            out.append(V)
        elif role == "float":
            out.append(1.25)
        elif role == "seed":
            out.append(tensor(torch.int64, False))
        elif role == "tokens":
            out.append(tensor(torch.int64, False))
        elif role == "logp":
            out.append(tensor(torch.float32 if flags["RETURN_LOGP"] else torch.int64, False))
        elif role == "count":
            out.append(tensor(torch.int32, False))
        elif role in ("gates", "state"):
            out.append(tensor(torch.float32, False))
        elif role == "lengths":
            alias = LENGTHS_ALIAS["bwd" if "bwd" in kernel else "fwd"]
            has = flags["HAS_LENGTHS"]
            out.append(tensor(torch.int32 if has else dtype, roles[name if has else alias] in ("in", "lengths")))
        elif role == "dh":
            out.append(tensor(torch.float32 if flags["HAS_LENGTHS"] else dtype, False))
        else:
            out.append(tensor(dtype, role == "in" or (role == "wt" and H == 1)))
    return out


def _specialise(fn, cc: int, args: list, kwargs: dict):
    """(options, signature, constexprs, attrs) exactly as JITFunction.run derives them for these arguments."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", cc, 32))
    kwargs = dict(kwargs, debug=kwargs.get("debug", fn.debug) or knobs.runtime.debug)
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    return fn._pack_args(backend, kwargs, bound, specialization, options)


def _families(quick: bool = False) -> list[dict]:
    """One job per (dtype, precision, config, kernel, feature, spec, card group); `quick`: QUICK_SPECS only."""
    from fused_rnn.dispatch import all_configs

    caps: dict = {}
    for cap, dtype, prec, cfg in all_configs():
        caps.setdefault((str(dtype), prec, cfg), []).append(cap[0] * 10 + cap[1])
    # the sm_86 / sm_89 PTX check runs on the largest config of each (dtype, precision, mode): the most code
    largest: dict = {}
    for (dtype, prec, cfg), ccs in caps.items():
        if len(set(ccs) & set(SAME_PTX)) > 1:
            largest[dtype, prec, cfg.mode] = max(largest.get((dtype, prec, cfg.mode), 0), cfg.block_h)
    jobs = []
    for (dtype, prec, cfg), ccs in caps.items():
        consts = dict(BB=cfg.block_b, DOT_PRECISION=prec)
        consts.update(BH=cfg.block_h) if cfg.mode == "single" else consts.update(BK=cfg.block_h, BN=cfg.block_n)
        groups = [sorted(c for c in ccs if c in SAME_PTX)] + [[c] for c in sorted(ccs) if c not in SAME_PTX]
        for kernel in KERNELS[cfg.mode]:
            bwd = "bwd" in kernel
            persistent = cfg.mode == "split" and "step" not in kernel
            opts = cfg.launch_options(backward=bwd, persistent=persistent)
            if persistent:
                opts["launch_cooperative_grid"] = True
            for feature, flags in FEATURES.items():
                cex = dict(consts, **flags, **(dict(HAS_DHS=True, HAS_DHN=True) if bwd else {}))
                for spec, (B, H, aligned) in specs(cfg.mode, cfg.block_h).items():
                    if spec not in (QUICK_SPECS if quick else specs(cfg.mode, cfg.block_h)) or (
                        feature == "plain" and spec != COMMON
                    ):
                        continue
                    verify = (feature, spec) == VERIFY and cfg.block_h == largest.get((dtype, prec, cfg.mode))
                    for group in groups:
                        if not group:
                            continue
                        jobs.append(
                            dict(
                                dtype=TRITON_DTYPE[dtype], torch_dtype=dtype, precision=prec, mode=cfg.mode,
                                block_h=cfg.block_h, block_n=cfg.block_n, num_warps=opts["num_warps"],
                                split_k=opts.get("SK", 1), maxnreg=opts.get("maxnreg"), kernel=kernel,
                                features=feature, spec=spec,
                                B=B, H=H, aligned=aligned, ccs=group, kwargs=dict(cex, **opts),
                                verify=verify,
                            )
                        )  # fmt: skip
    jobs += _gen_families()
    jobs += _gated_families()
    # biggest first, so that the pool does not end on one long compile
    return sorted(jobs, key=lambda j: -j["block_h"] * (2 if j["dtype"] == "fp32" else 1))


def _gated_families(specs_of: tuple[str, ...] = GATED_SPECS) -> list[dict]:
    """The LSTM / GRU kernels' jobs: every launch of `all_gated_configs` (forward and backward), both cells, on
    every card group; the split mode's step and persistent kernels with their own warps."""
    from fused_rnn.gated_ops import all_gated_configs

    configs: dict = {}
    for cap, dtype, prec, fwd, bwd in all_gated_configs():
        configs.setdefault((str(dtype), prec, fwd, bwd), []).append(cap[0] * 10 + cap[1])
    jobs = []
    for (dtype, prec, fwd, bwd_cfg), ccs in configs.items():
        groups = [sorted(c for c in ccs if c in SAME_PTX)] + [[c] for c in sorted(ccs) if c not in SAME_PTX]
        for kernel in GATED_KERNELS[fwd.mode]:
            bwd = "bwd" in kernel
            cfg = bwd_cfg if bwd else fwd
            persistent = fwd.mode == "split" and "step" not in kernel
            if persistent and not cfg.num_warps_persistent:  # no persistent build fits this card
                continue
            opts = cfg.warps(persistent) | ({"launch_cooperative_grid": True} if persistent else {})
            blocks = dict(BH=cfg.block_h) if fwd.mode == "single" else dict(BK=cfg.block_h, BN=cfg.block_n)
            for cell, name in ((0, "lstm"), (1, "gru")):
                cex = dict(BB=cfg.block_b, **blocks, DOT_PRECISION=prec, CELL=cell, REVERSE=True, HAS_LENGTHS=True)
                if bwd:
                    cex.update(HAS_DHS=True, HAS_DHN=True, HAS_DCN=cell == 0)
                all_specs = specs(fwd.mode, cfg.block_h)
                for spec in specs_of:
                    B, H, aligned = all_specs[spec]
                    for group in (g for g in groups if g):
                        jobs.append(
                            dict(
                                dtype=TRITON_DTYPE[dtype], torch_dtype=dtype, precision=prec, mode="gated",
                                gated_mode=fwd.mode, block_h=cfg.block_h, block_n=cfg.block_n or cfg.block_h,
                                num_warps=opts["num_warps"], split_k=opts.get("SK", 1), maxnreg=opts.get("maxnreg"),
                                kernel=kernel, features=f"{name}-lengths-reverse", spec=spec, B=B, H=H, aligned=aligned,
                                ccs=group, kwargs=dict(cex, **opts), verify=False,
                            )
                        )  # fmt: skip
    return jobs


def _gen_families() -> list[dict]:
    """The generation kernels' jobs: `generate_kernel` per (BH, BV) config, the draw step per BV."""
    import torch

    from fused_rnn import generate as G

    configs: dict = {}
    for cap, dtype, prec, cfg in G.all_gen_configs():
        key = (str(dtype), prec, "generate_kernel", cfg.block_h, cfg.block_v, cfg.num_warps)
        configs.setdefault(key, []).append(cap[0] * 10 + cap[1])
    for cap, dtype, prec, bv in G.all_draw_configs():  # (its H is any: BK-wide chunks; stand-in 256)
        key = (str(dtype), prec, "generate_draw_step_kernel", 256, bv, G.draw_warps(bv))
        configs.setdefault(key, []).append(cap[0] * 10 + cap[1])
    jobs = []
    for (dtype, prec, kernel, bh, bv, warps), ccs in configs.items():
        groups = [sorted(c for c in ccs if c in SAME_PTX)] + [[c] for c in sorted(ccs) if c not in SAME_PTX]
        k = G.kind(getattr(torch, dtype.split(".")[1]), prec)
        consts = dict(BB=G.GEN_BLOCK_B, BV=bv, DOT_PRECISION="ieee" if k == "half" else k)
        consts.update(BH=bh) if kernel == "generate_kernel" else consts.update(BK=G.DRAW_BK)
        for feature, flags in GEN_FEATURES.items():
            for spec, (B, dh, dv) in GEN_SPECS.items():
                first = spec == next(iter(GEN_SPECS))
                # every class at the largest BH (the most registers), the common one below it
                if not first and (feature == "greedy" or bh < G.GEN_MAX_H or kernel != "generate_kernel"):
                    continue
                for group in (g for g in groups if g):
                    jobs.append(
                        dict(
                            dtype=TRITON_DTYPE[dtype], torch_dtype=dtype, precision=prec, mode="generate",
                            block_h=bh if kernel == "generate_kernel" else G.DRAW_BK, block_n=bv,
                            num_warps=warps, split_k=1, maxnreg=None, kernel=kernel, features=feature,
                            spec=spec, B=B, H=bh + dh, V=bv + dv, aligned=True, ccs=group,
                            kwargs=dict(consts, **flags, num_warps=warps), verify=False,
                        )
                    )  # fmt: skip
    return jobs


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
#: Loop-mix classes: SASS opcode (before the first ".") -> reported name.
MIX = {
    "HMMA": "HMMA",
    "HGMMA": "HGMMA",
    "FFMA": "FFMA",
    "LDS": "LDS",
    "LDSM": "LDSM",
    "STS": "STS",
    "LDG": "LDG",
    "LDGSTS": "LDGSTS",
    "STG": "STG",
    "BAR": "BAR",
    "ATOM": "ATOM/RED",
    "ATOMG": "ATOM/RED",
    "ATOMS": "ATOM/RED",
    "RED": "ATOM/RED",
    "REDG": "ATOM/RED",
    "MEMBAR": "MEMBAR",
}


def _opcode(text: str) -> str:
    words = text.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0]


def sass_mix(sass: str, looping: bool) -> tuple[dict, dict]:
    """(loop mix, whole-kernel mix) of `nvdisasm -c` output.

    The loop is the span from the target of the outermost (longest) backward branch to
    that branch; without a time loop (`looping` False) the whole body is the "loop".
    """
    insns, labels, pending = [], {}, []
    for line in sass.splitlines():
        if m := _LABEL.match(line):
            pending.append(m[1])
        elif m := _INSN.match(line):
            addr = int(m[1], 16)
            labels.update(dict.fromkeys(pending, addr))
            pending = []
            insns.append((addr, _opcode(m[2]), m[2]))
    span = None
    for addr, op, text in insns:
        target = re.search(r"`\((\.L_x_\d+)\)", text)
        if op in ("BRA", "JMP") and target and labels.get(target[1], addr) < addr:
            if span is None or addr - labels[target[1]] > span[1] - span[0]:
                span = (labels[target[1]], addr)

    def mix(ops: list[str]) -> dict:
        counts = Counter(MIX[op] for op in ops if op in MIX)
        return {"instructions": len(ops), **{k: counts.get(k, 0) for k in dict.fromkeys(MIX.values())}}

    whole = mix([op for _, op, _ in insns])
    if not looping:
        return dict(whole, scope="whole kernel (no time loop)"), whole
    if span is None:
        return dict(mix([]), scope="time loop not found"), whole
    body = [op for addr, op, _ in insns if span[0] <= addr <= span[1]]
    return dict(mix(body), scope="time loop"), whole


def _code(cubin: bytes) -> bytes:
    """The cubin's `.text.*` sections (its SASS): equal for sm_86 and sm_89, whose ELF notes differ."""
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    size, count, names = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * size) for i in range(count)]
    strtab = headers[names][4]
    out = b""
    for h in headers:
        name = cubin[strtab + h[0] : cubin.index(b"\0", strtab + h[0])]
        out += name + cubin[h[4] : h[4] + h[5]] if name.startswith(b".text.") else b""
    return out


def code_sha(cubin: bytes) -> str:
    """Digest of a cubin's machine code (`_code`): equal for equal SASS, whatever the ELF around it."""
    return hashlib.sha256(_code(cubin)).hexdigest()[:16]


def _cached(key: str | bytes, ext: str) -> str:
    """Where the gate keeps what Triton's cache does not (its own ptxas runs, disassembly): next to it."""
    from triton import knobs

    key = hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()
    return os.path.join(knobs.cache.dir, "fused_rnn_gate", f"{key}.{ext}")


def _put(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def _analyse(cubin: bytes, looping: bool, mixes: dict) -> dict:
    """Resources (`cuobjdump -res-usage`) and SASS mixes of a cubin.

    nvdisasm is the slow part: `mixes` reuses the disassembly of equal code within a job, and the
    result is cached (keyed by the cubin), so that a warm run takes seconds.
    """
    path = _cached(cubin + bytes([looping]) + f"{MIX}{inspect.getsource(sass_mix)}".encode(), "json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True)
        code = _code(cubin)
        if code not in mixes:
            cmd = [_tool("nvdisasm"), "-c", "-ndf", f.name]
            mixes[code] = sass_mix(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, looping)
    reg, stack, shared, local = (
        int(x) for x in re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res.stdout).groups()
    )
    loop, whole = mixes[code]
    out = dict(registers=reg, stack=stack, local=local, static_shared=shared, loop=loop, whole=whole)
    _put(path, json.dumps(out).encode())
    return out


def _ptx_body(ptx: str) -> str:
    return re.sub(r"\.target sm_\w+", ".target", ptx)


def _build(job: dict) -> list[dict]:
    """Build one family for its card group; returns one row per card."""
    import fused_rnn.kernels as K
    import torch
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource, make_backend

    from fused_rnn.dispatch import SMEM_LIMIT

    fn = getattr(K, job["kernel"])
    dtype = getattr(torch, job["torch_dtype"].split(".")[1])
    args = _args(job["kernel"], dtype, job["B"], job["H"], job["aligned"], job["kwargs"], job.get("V"))
    ccs = job["ccs"]
    verify = job["verify"]
    built = {}
    base = ccs[0]
    for cc in ccs:
        options, signature, constexprs, attrs = _specialise(fn, cc, args, job["kwargs"])
        if cc != base and not verify:  # the first card's PTX with this card's .target, through Triton's make_cubin
            ptx = re.sub(r"\.target sm_\d+", f".target sm_{cc}", built[base]["ptx"])
            tool = get_ptxas(cc)
            flags = (knobs.compilation.disable_line_info, knobs.nvidia.disable_ptxas_opt)
            path = _cached(f"{ptx}{options.hash()}{cc}{tool.path}{tool.version}{flags}", "cubin")
            if not os.path.exists(path):
                _put(path, make_backend(GPUTarget("cuda", cc, 32)).make_cubin(ptx, {}, options, cc))
            with open(path, "rb") as f:
                built[cc] = dict(built[base], cubin=f.read(), ptx_from=base)
            continue
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options.__dict__)
        built[cc] = dict(
            ptx=compiled.asm["ptx"], cubin=compiled.asm["cubin"], dynamic_shared=compiled.metadata.shared, ptx_from=cc
        )
        if cc != base:  # the check behind SAME_PTX
            same = _ptx_body(built[cc]["ptx"]) == _ptx_body(built[base]["ptx"])
            if not same or built[cc]["dynamic_shared"] != built[base]["dynamic_shared"]:
                raise RuntimeError(f"{job['kernel']} {job['spec']}: sm_{cc} PTX differs from sm_{base}'s")
            built[cc]["ptx_checked"] = True
    special = {  # what the binder made of the runtime arguments
        "constexpr_1": [p.name for p in fn.params if not p.is_constexpr and signature[p.name] == "constexpr"],
        "divisible_16": [fn.arg_names[k[0]] for k, v in sorted(attrs.items()) if ["tt.divisibility", 16] in v],
    }
    rows, mixes = [], {}
    for cc in ccs:
        b = built[cc]
        res = _analyse(b["cubin"], job["kernel"] in LOOPING, mixes)
        row = {k: v for k, v in job.items() if k not in ("kwargs", "ccs", "torch_dtype", "aligned", "verify")}
        whole = res.pop("whole")
        row.update(
            capability=cc,
            variant=f"{job['features']}:{job['spec']}",
            specialisation=special,
            ptx_from=b["ptx_from"],
            ptx_checked=b.get("ptx_checked", False),
            code_sha=code_sha(b["cubin"]),
            **res,
            spill_bytes=res["stack"] + res["local"],
            dynamic_shared=b["dynamic_shared"],
            shared_bytes=res["static_shared"] + b["dynamic_shared"],
            smem_limit=SMEM_LIMIT[cc // 10, cc % 10],
            tensor_cores=whole["HMMA"] + whole["HGMMA"] > 0,
        )
        rows.append(row)
    return rows


def run(workers: int = 2, quick: bool = False, kernels: list[str] | None = None) -> list[dict]:
    """Every job's rows; `kernels`: only the jobs of these kernels (`--kernels a,b`)."""
    jobs = [j for j in _families(quick) if kernels is None or j["kernel"] in kernels]
    with ProcessPoolExecutor(workers) as pool:
        return [row for rows in pool.map(_build, jobs) for row in rows]


def main() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--kernels=")), None)
    results = run(int(os.environ.get("GATE_WORKERS", "2")), quick="--quick" in sys.argv, kernels=only)
    if "--json" in sys.argv:
        json.dump(results, sys.stdout)
        return
    cols = ("HMMA", "HGMMA", "FFMA", "LDS", "LDSM", "LDG", "LDGSTS", "STG", "BAR", "ATOM/RED")
    # warps "8 r255 k8": 8 warps, maxnreg 255, the reduction in 8 slices (split_k);
    # loop "T n": n instructions in the time loop, "all n": a step kernel
    head = "sm | dtype | prec | mode | BH | BN | warps | kernel [features:spec] | regs | spill | smem KiB | mma | loop"
    print(f"| {head} | {' | '.join(cols)} |")
    print("|---" * (13 + len(cols)) + "|")
    for r in sorted(results, key=lambda r: (r["capability"], r["dtype"], r["precision"], r["block_h"], r["kernel"])):
        kern = f"{r['kernel'].replace('_kernel', '')} [{r['variant']}]"
        warps = f"{r['num_warps']}" + ("" if r["maxnreg"] is None else f" r{r['maxnreg']}")
        warps += f" k{r['split_k']}" if r["split_k"] > 1 else ""
        loop = r["loop"]
        cells = [r["capability"], r["dtype"], r["precision"], r["mode"], r["block_h"], r["block_n"], warps, kern]
        cells += [r["registers"], r["spill_bytes"], f"{r['shared_bytes'] / 1024:.1f}", r["tensor_cores"]]
        cells += [f"{'T' if loop['scope'] == 'time loop' else 'all'} {loop['instructions']}"]
        print("| " + " | ".join(str(c) for c in cells + [loop[c] for c in cols]) + " |")


if __name__ == "__main__":
    main()
