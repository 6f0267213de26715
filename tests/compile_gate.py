"""Compile every kernel configuration the dispatcher can choose for sm_80 and sm_90, without a GPU.

For each (dtype, precision, config, arch, kernel) it records registers, stack
(spills), static and dynamic shared memory from `cuobjdump -res-usage` on the
cubin and `metadata.shared`, and whether the PTX uses tensor-core instructions.
Run it directly (`python tests/compile_gate.py`) for the table; the test
`test_compile_gate.py` runs it in a subprocess, because Triton's interpreter
(which the rest of the suite uses on CPU) cannot build cubins.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

#: Per-block shared-memory limit by architecture (bytes, opt-in maximum).
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)
TRITON_DTYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


#: Feature variants built for every config: the plain cell, and the costliest feature set
#: (per-row lengths and the reverse walk, with tanh); relu only shortens the code.
VARIANTS = {
    "plain": dict(RELU=False, REVERSE=False, HAS_LENGTHS=False),
    "lengths-reverse": dict(RELU=False, REVERSE=True, HAS_LENGTHS=True),
    "relu": dict(RELU=True, REVERSE=False, HAS_LENGTHS=False),
}


def _jobs():
    from fused_rnn.dispatch import all_configs

    jobs = []
    for dtype, prec, cfg in all_configs():
        t = TRITON_DTYPE[str(dtype)]
        p = "*" + t
        c = dict(BB=cfg.block_b, DOT_PRECISION=prec)
        dims = {"B": "i32", "H": "i32"}
        grads = dict(HAS_DHS=True, HAS_DHN=True)
        if cfg.mode == "single":
            c["BH"] = cfg.block_h
            kernels = [
                ("fused_recurrent_fwd_kernel", dict(u=p, wt=p, h0=p, lengths="*i32", hs=p, hn=p, T="i32"), {}),
                (
                    "fused_recurrent_bwd_kernel",
                    dict(w=p, hs=p, dhs=p, dhn=p, lengths="*i32", da=p, dh0=p, T="i32"),
                    grads,
                ),
            ]
        else:
            c.update(BK=cfg.block_h, BN=cfg.block_n)
            fwd = dict(u=p, wt=p, h0=p, lengths="*i32", hs=p, hn=p)
            bwd = dict(w=p, hs=p, dhs=p, dhn=p, lengths="*i32")
            kernels = [
                ("split_recurrent_fwd_kernel", dict(fwd, count="*i32", T="i32"), {}),
                ("split_recurrent_fwd_step_kernel", dict(fwd, i="i32", T="i32"), {}),
                ("split_recurrent_bwd_kernel", dict(bwd, da=p, dh0=p, count="*i32", T="i32"), grads),
                ("split_recurrent_bwd_step_kernel", dict(bwd, dh="*fp32", da=p, dh0=p, i="i32", T="i32"), grads),
            ]
        for name, sig, extra in kernels:
            for variant, flags in VARIANTS.items():
                cex = dict(c, **extra, **flags)
                full = dict(sig, **dims, **{k: "constexpr" for k in cex})
                opts = cfg.launch_options(backward="bwd" in name, persistent="step" not in name)
                warps, maxnreg = opts["num_warps"], opts.get("maxnreg")
                for cc in ARCHS:
                    jobs.append(
                        dict(
                            dtype=t, precision=prec, mode=cfg.mode, block_h=cfg.block_h, block_n=cfg.block_n,
                            num_warps=warps, maxnreg=maxnreg, kernel=name, variant=variant, cc=cc,
                            signature=full, constexprs=cex,
                        )
                    )  # fmt: skip
    return jobs


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _compile(job: dict) -> dict:
    import fused_rnn.kernels as K
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(K, job["kernel"])
    src = ASTSource(fn=fn, signature=job["signature"], constexprs=job["constexprs"])
    options = {"num_warps": job["num_warps"], "maxnreg": job["maxnreg"]}
    compiled = triton.compile(src, target=GPUTarget("cuda", job["cc"], 32), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    reg, stack, shared, local = (int(x) for x in m.groups())
    ptx = compiled.asm["ptx"]
    res = {k: v for k, v in job.items() if k not in ("signature", "constexprs")}
    res.update(
        registers=reg,
        stack=stack,
        local=local,
        static_shared=shared,
        dynamic_shared=compiled.metadata.shared,
        shared=shared + compiled.metadata.shared,
        smem_limit=SMEM_LIMIT[job["cc"]],
        tensor_cores=bool(re.search(r"\b(wgmma|mma)\.", ptx)),
    )
    return res


def run(workers: int = 2) -> list[dict]:
    jobs = _jobs()
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile, jobs))


def main() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    results = run(int(os.environ.get("GATE_WORKERS", "2")))
    if "--json" in sys.argv:
        json.dump(results, sys.stdout)
        return
    print("| dtype | prec | mode | BH | BN | warps | kernel | sm | regs | stack | smem KiB | mma |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        kern = f"{r['kernel'].replace('_kernel', '')} [{r['variant']}]"
        print(
            f"| {r['dtype']} | {r['precision']} | {r['mode']} | {r['block_h']} | {r['block_n']} | {r['num_warps']} "
            f"| {kern} | {r['cc']} | {r['registers']} | {r['stack']} | {r['shared'] / 1024:.0f} | {r['tensor_cores']} |"
        )


if __name__ == "__main__":
    main()
