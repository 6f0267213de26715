"""On a GPU: does the compile gate build what the runtime runs? (issue 11)

Runs rnn_scan forward and backward on the card over the dispatcher's configs (every dtype and
precision, H from each config bucket, B = 1 / 3 / 32, the plain cell and lengths + reverse, step
and persistent mode), then reads every kernel Triton compiled for the card (its JIT cache) and
looks each one up in the gate's JSON (`python tests/compile_gate.py --json`):

  same       its machine code equals a gate row's (`code_sha`): the gate built this very kernel;
  class      no equal code, but the gate has a row for the same kernel, config and specialisation
             class (an H that is not a multiple of 16 is built misaligned only, see the gate):
             registers and spills are compared with that row;
  ungated    a feature set the gate does not build (it builds lengths + reverse and the plain cell).

Exit status 1 if any runtime kernel spills, a "class" kernel's registers differ from the row by
more than 10 %, or no kernel at all is "same" (the gate then checked other code than what ran).
Usage: python bench/gate_crosscheck.py --gate gate.json [--out crosscheck.json] [--seconds 110]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import fused_rnn.kernels as K
import torch

from fused_rnn import dispatch, rnn_scan
from fused_rnn.launch import GRID_BARRIER_ENV, TF32X3_ENV


def _gate_module():
    """tests/compile_gate.py, for the digest (`code_sha`) the gate records."""
    path = Path(__file__).resolve().parents[1] / "tests" / "compile_gate.py"
    spec = importlib.util.spec_from_file_location("compile_gate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: every recurrence kernel fused_rnn launches (the ones with a states output `hs`): the workload runs rnn_scan,
#: so the generation kernels (fused_rnn.generate) are not compiled here and not looked up
KERNELS = [k for k in K.__all__ if "hs" in getattr(K, k).arg_names]
MODES = {"fp32": (torch.float32, "highest", False), "tf32": (torch.float32, "high", False)}
MODES |= {"tf32x3": (torch.float32, "highest", True), "fp16": (torch.float16, "highest", False)}
MODES |= {"bf16": (torch.bfloat16, "highest", False)}


def _leaf(shape: tuple, dtype: torch.dtype, device: torch.device, misaligned: bool, scale: float = 1.0):
    """A random leaf tensor; `misaligned`: one element past a 16-byte boundary, as a view can be."""
    n = 1
    for d in shape:
        n *= d
    buf = (torch.randn(n + 1, device=device) * scale).to(dtype)
    return (buf[1:] if misaligned else buf[:n]).view(shape).detach().requires_grad_()


def workload(device: torch.device, seconds: float) -> None:
    """Forward and backward of every config bucket, both feature sets, aligned or not, step and persistent.

    One H per config bucket (multiples of 16 and not), every precision at each H before the next H;
    stops after `seconds` (each new variant compiles once): the cross-check covers what ran.
    """
    cap = torch.cuda.get_device_capability(device)
    t0 = time.perf_counter()
    for H in (1, 20, 64, 100, 256, 300, 1024, 2048):
        for name, (dtype, matmul, x3) in MODES.items():
            if H > dispatch.max_hidden(dtype, cap):
                continue
            torch.set_float32_matmul_precision(matmul)
            os.environ[TF32X3_ENV] = "1" if x3 else "0"
            for B in (1, 3, 32):
                for ragged, misaligned in ((False, False), (True, False), (True, True)):
                    if time.perf_counter() - t0 > seconds:
                        print(f"workload stopped after {seconds:.0f} s, at H = {H} {name}", file=sys.stderr)
                        return
                    for barrier in ("0", "1") if H > dispatch.SINGLE_MAX_H else ("0",):
                        os.environ[GRID_BARRIER_ENV] = barrier
                        T = 5
                        u = _leaf((T, B, H), dtype, device, misaligned)
                        w = _leaf((H, H), dtype, device, misaligned, H**-0.5)
                        h0 = _leaf((B, H), dtype, device, misaligned)
                        lens = torch.randint(1, T + 1, (B,), device=device) if ragged else None
                        out, hn = rnn_scan(u, w, h0, lengths=lens, reverse=ragged, backend="triton")
                        (out.float().sum() + hn.float().sum()).backward()
        print(f"ran H = {H} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    torch.cuda.synchronize()


def _classify(kernel: str, ck) -> dict:
    """Config, features and specialisation class of one compiled kernel, named as the gate names them."""
    src = ck.src
    names = src.fn.arg_names
    const = {names[k[0]]: v for k, v in src.constants.items()}
    div = {names[k[0]] for k, v in src.attrs.items() if ["tt.divisibility", 16] in [list(a) for a in v]}
    b = "b1" if const.get("B") == 1 else "b16" if "B" in div else "b"
    h = "h1" if const.get("H") == 1 else "h16" if "H" in div else "h"
    caller = "u" if "fwd" in kernel else "w"
    # with H not a multiple of 16 the gate builds the misaligned case only (no slab load is vectorised)
    aligned = caller in div and h == "h16"
    flags = (const.get("RELU"), const.get("REVERSE"), const.get("HAS_LENGTHS"))
    features = {(False, True, True): "lengths-reverse", (False, False, False): "plain"}.get(flags, f"other{flags}")
    ptr = src.signature["hs"]
    return dict(
        kernel=kernel,
        dtype=ptr.lstrip("*"),
        precision=const["DOT_PRECISION"],
        block_h=const.get("BH", const.get("BK")),
        num_warps=ck.metadata.num_warps,
        split_k=const.get("SK", 1),
        features=features,
        spec=f"{b}.{h}.{'aligned' if aligned else 'misaligned'}",
    )


def crosscheck(gate: list[dict], cc: int) -> list[dict]:
    rows = [r for r in gate if r["capability"] == cc]
    by_code = {r["code_sha"]: r for r in rows}
    gate_module = _gate_module()
    fields = ("kernel", "dtype", "precision", "block_h", "num_warps", "split_k", "features", "spec")
    by_class = {tuple(r[f] for f in fields): r for r in rows}
    out = []
    for kernel in KERNELS:
        fn = getattr(K, kernel)
        for cache, *_ in fn.device_caches.values():
            for ck in cache.values():
                ck._init_handles()
                sha = gate_module.code_sha(ck.asm["cubin"])
                got = _classify(kernel, ck) | dict(registers=ck.n_regs, spills=ck.n_spills, code_sha=sha)
                row = by_code.get(sha)
                if row is not None:
                    got.update(verdict="same", gate_registers=row["registers"], gate_spills=row["spill_bytes"])
                elif (row := by_class.get(tuple(got[f] for f in fields))) is not None:
                    got.update(verdict="class", gate_registers=row["registers"], gate_spills=row["spill_bytes"])
                else:
                    got.update(verdict="ungated", gate_registers=None, gate_spills=None)
                out.append(got)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gate", required=True, help="the gate's --json output")
    ap.add_argument("--out", help="write every runtime kernel's row here (JSON)")
    ap.add_argument("--seconds", type=float, default=110.0, help="stop launching new variants after this long")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: gate_crosscheck needs a CUDA device", file=sys.stderr)
        return 2
    with open(args.gate) as f:
        gate = json.load(f)
    device = torch.device("cuda")
    cc = int("".join(map(str, torch.cuda.get_device_capability(device))))
    try:
        workload(device, args.seconds)
    finally:
        os.environ.pop(GRID_BARRIER_ENV, None)
        os.environ.pop(TF32X3_ENV, None)
    res = crosscheck(gate, cc)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    bad = []
    for r in res:
        if r["spills"]:
            bad.append(r)
        elif r["verdict"] == "class" and abs(r["registers"] - r["gate_registers"]) > 0.1 * r["gate_registers"]:
            bad.append(r)
    counts = {v: sum(r["verdict"] == v for r in res) for v in ("same", "class", "ungated")}
    if not counts["same"]:  # the gate's own builds should be what ran for most kernels: nothing matched
        print(f"FAIL: no runtime kernel has the machine code of a gate row for sm_{cc}", file=sys.stderr)
    same_regs = all(r["registers"] == r["gate_registers"] for r in res if r["verdict"] == "same")
    print(f"sm_{cc}: {len(res)} runtime kernels: {counts}; 'same' rows have the gate's registers: {same_regs}")
    print("| verdict | kernel | dtype | prec | BH | warps | SK | features | spec | regs | gate regs | spills |")
    print("|---" * 12 + "|")
    for r in sorted(res, key=lambda r: (r["verdict"], r["kernel"], r["dtype"], r["precision"], r["block_h"])):
        cells = [r[k] for k in ("verdict", "kernel", "dtype", "precision", "block_h", "num_warps", "split_k")]
        cells += [r[k] for k in ("features", "spec", "registers", "gate_registers", "spills")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    for r in bad:
        print(f"FAIL: {r}", file=sys.stderr)
    return 1 if bad or not same_regs or not counts["same"] else 0


if __name__ == "__main__":
    sys.exit(main())
