"""GPU compile gate, no GPU needed: every dispatcher config builds for every card, as the JIT specialises it.

tests/compile_gate.py builds the cubins (see its docstring for the variants); this
checks them per card: shared memory within the card's per-block limit, no spills,
tensor cores where the precision promises them, no warp repeating another's mma, and a
time loop in the looping kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import compile_gate as gate  # noqa: E402

DTYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


@pytest.fixture(scope="module")
def all_rows() -> list[dict]:
    """Every row of the gate; GATE_KERNELS=a,b builds only those kernels (the other kernels' tests skip)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_gate.py")
    opts = ["--quick"] if os.environ.get("GATE_QUICK") == "1" else []
    opts += [f"--kernels={os.environ['GATE_KERNELS']}"] if os.environ.get("GATE_KERNELS") else []
    out = subprocess.run([sys.executable, str(script), "--json", *opts], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def gate_results(all_rows) -> list[dict]:
    """The recurrence kernels' rows."""
    rows = [r for r in all_rows if r["mode"] not in ("generate", "gated")]
    if not rows:
        pytest.skip("GATE_KERNELS left out the recurrence kernels")
    return rows


@pytest.fixture(scope="module")
def gated_results(all_rows) -> list[dict]:
    """The LSTM / GRU kernels' rows (mode "gated")."""
    rows = [r for r in all_rows if r["mode"] == "gated"]
    if not rows:
        pytest.skip("GATE_KERNELS left out the LSTM / GRU kernels")
    return rows


@pytest.fixture(scope="module")
def gen_results(all_rows) -> list[dict]:
    """The generation kernels' rows (mode "generate")."""
    rows = [r for r in all_rows if r["mode"] == "generate"]
    if not rows:
        pytest.skip("GATE_KERNELS left out the generation kernels")
    return rows


def _name(r: dict) -> str:
    return (
        f"sm_{r['capability']}-{r['dtype']}-{r['precision']}-{r['mode']}-BH{r['block_h']}-{r['kernel']}-{r['variant']}"
    )


def _kind(r: dict) -> str:
    """The row's dot, as `fused_rnn.dispatch.dot_kind` names it."""
    return r["precision"] if r["dtype"] == "fp32" else "half"


def _cc(cap: tuple[int, int]) -> int:
    return cap[0] * 10 + cap[1]


def test_every_config_of_every_card_was_built(gate_results):
    from fused_rnn.dispatch import SMEM_LIMIT, all_configs

    built = {
        (r["capability"], r["dtype"], r["precision"], r["mode"], r["block_h"], r["num_warps"]) for r in gate_results
    }
    want = set()
    for cap, dtype, prec, cfg in all_configs():
        for kernel in gate.KERNELS[cfg.mode]:
            opts = cfg.launch_options(backward="bwd" in kernel, persistent=cfg.mode == "split" and "step" not in kernel)
            want.add((_cc(cap), DTYPE[str(dtype)], prec, cfg.mode, cfg.block_h, opts["num_warps"]))
    assert built == want
    assert {r["capability"] for r in gate_results} == {_cc(c) for c in SMEM_LIMIT}


def test_every_specialisation_class_was_built(gate_results):
    """Each (card, config, kernel) has every class (QUICK_SPECS with GATE_QUICK=1); they are the JIT's own."""
    classes: dict = {}
    for r in gate_results:
        key = (r["capability"], r["dtype"], r["precision"], r["block_h"], r["kernel"])
        classes.setdefault(key, set()).add(r["variant"])
    for (cc, dtype, prec, bh, kernel), variants in classes.items():
        mode = "single" if kernel.startswith("fused") else "split"
        classes = gate.specs(mode, bh)
        if os.environ.get("GATE_QUICK") == "1":
            classes = {s: v for s, v in classes.items() if s in gate.QUICK_SPECS}
        want = {f"lengths-reverse:{s}" for s in classes} | {f"plain:{gate.COMMON}"}
        assert variants == want, (cc, dtype, prec, bh, kernel)
    for r in gate_results:
        spec = r["specialisation"]
        b, h, alignment = r["spec"].split(".")
        assert ("B" in spec["constexpr_1"]) == (b == "b1") and ("B" in spec["divisible_16"]) == (b == "b16"), _name(r)
        assert ("H" in spec["constexpr_1"]) == (h == "h1") and ("H" in spec["divisible_16"]) == (h == "h16"), _name(r)
        caller = "u" if "fwd" in r["kernel"] else "w"  # a tensor the caller passes
        assert (caller in spec["divisible_16"]) == (alignment == "aligned"), _name(r)
        assert set(spec["constexpr_1"]) <= {"B", "H"}, _name(r)
        assert {"T", "i"}.isdisjoint(spec["divisible_16"]), _name(r)  # do_not_specialize, though 1024 % 16 == 0
        assert "hs" in spec["divisible_16"], _name(r)  # allocated by the launcher: always aligned


def test_shared_ptx_was_checked(gate_results):
    """sm_86 / sm_89 cubins come from sm_80's PTX; the gate compared it with Triton's own for a sample."""
    shared = [r for r in gate_results if r["ptx_from"] != r["capability"]]
    assert shared and all(r["capability"] in (86, 89) for r in shared)
    checked = {(r["capability"], r["kernel"]) for r in gate_results if r["ptx_checked"]}
    assert {cc for cc, _ in checked} == {86, 89}
    assert {k for _, k in checked} == set(gate.KERNELS["single"] + gate.KERNELS["split"])


def test_shared_memory_within_the_cards_block_limit(gate_results):
    from fused_rnn.dispatch import SHARED_BYTES, SMEM_LIMIT

    over = [
        f"{_name(r)}: {r['shared_bytes']} > {r['smem_limit']}"
        for r in gate_results
        if r["shared_bytes"] > r["smem_limit"]
    ]
    assert not over, over
    assert all(r["smem_limit"] == SMEM_LIMIT[r["capability"] // 10, r["capability"] % 10] for r in gate_results)
    # the dispatcher's table bounds what was built, so its choice per card rests on the gate
    above = [_name(r) for r in gate_results if r["shared_bytes"] > SHARED_BYTES[r["mode"], r["block_h"], _kind(r)]]
    assert not above, above


def test_no_register_spills(gate_results):
    spills = [f"{_name(r)}: stack {r['stack']} local {r['local']}" for r in gate_results if r["spill_bytes"]]
    assert not spills, spills


def test_tensor_cores_for_tf32_and_half(gate_results):
    """Every tf32, tf32x3, fp16 or bf16 kernel runs its dots on HMMA / HGMMA (in the time loop where there is one)."""
    slow = [
        _name(r)
        for r in gate_results
        if _kind(r) != "ieee" and not (r["tensor_cores"] and r["loop"]["HMMA"] + r["loop"]["HGMMA"])
    ]
    assert not slow, slow


def test_no_warp_repeats_another(gate_results):
    """Each warp runs only its share of the mma: the step's HMMA per warp is the tile's count over the warps.

    A [16, N] @ [K, N] dot is N / 8 mma columns of m16n8 and K / k steps (k = 16 half, 8 tf32), three times
    for tf32x3. The split kernels give each warp one of SK slices of K, so the rest of a program's warps
    (num_warps / SK) share the columns; the single-program kernels share the columns among all warps. More
    warps than columns would leave warps repeating the same mma, which this count catches.
    """
    bad = []
    for r in gate_results:
        kind = _kind(r)
        if kind == "ieee":
            continue
        k = 16 if kind == "half" else 8
        passes = 3 if kind == "tf32x3" else 1
        sk = r["split_k"] if r["mode"] == "split" else 1
        columns, warps = r["block_n"] // 8, r["num_warps"] // sk
        want = columns // warps * (r["block_h"] // sk // k) * passes
        got = r["loop"]["HMMA"]
        if columns < warps or got > want or (got < want and ".h1." not in r["spec"]):
            bad.append(f"{_name(r)}: {got} HMMA per warp, want {want} ({warps} warps, {columns} columns)")
    assert not bad, bad


def test_time_loop_mix(gate_results):
    """The looping kernels' time loop is found and holds the step's work; the step kernels report their whole body."""
    for r in gate_results:
        loop = r["loop"]
        if r["kernel"] in gate.LOOPING:
            assert loop["scope"] == "time loop", _name(r)
            assert loop["LDG"] + loop["LDGSTS"] and loop["STG"] and loop["instructions"] > 50, _name(r)
            assert loop["HMMA"] + loop["HGMMA"] + loop["FFMA"] > 0, _name(r)
            if r["mode"] == "split":  # the grid barrier's atomics run once per step
                assert loop["ATOM/RED"] > 0, _name(r)
        else:
            assert loop["scope"] == "whole kernel (no time loop)" and loop["instructions"] > 0, _name(r)


def test_sass_mix_finds_the_outermost_backward_branch():
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E R2, [R4.64] ;
.L_x_1:
        /*0020*/                   HMMA.16816.F32 R8, R4, R6, R8 ;
        /*0030*/                   ATOMG.E.ADD.STRONG.GPU PT, R3, [R4.64], R0 ;
        /*0040*/               @P0 BRA `(.L_x_1) ;
        /*0050*/                   STG.E [R4.64], R2 ;
        /*0060*/               @!P1 BRA `(.L_x_0) ;
        /*0070*/                   EXIT ;
.L_x_2:
        /*0080*/                   BRA `(.L_x_2);
"""
    loop, whole = gate.sass_mix(sass, looping=True)
    assert loop["scope"] == "time loop" and loop["instructions"] == 6
    assert (loop["LDG"], loop["HMMA"], loop["ATOM/RED"], loop["STG"]) == (1, 1, 1, 1)
    assert whole["instructions"] == 9
    step, _ = gate.sass_mix(sass, looping=False)
    assert step["scope"] == "whole kernel (no time loop)" and step["instructions"] == 9


@pytest.mark.parametrize("H", [1, 20, 200])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gate_arguments_follow_launch(monkeypatch, H, with_lengths):
    """The roles in compile_gate.ARGS are what fused_rnn.launch passes (no kernel runs: K records the calls)."""
    import types

    import torch

    from fused_rnn import launch
    from fused_rnn.dispatch import select_config

    calls = []

    real = launch.K

    class Recorder:
        def __init__(self, name: str):
            self.name = name
            self.arg_names = getattr(real, name).arg_names  # step mode finds the step argument by name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((self.name, args, kwargs))

    names = gate.KERNELS["single"] + gate.KERNELS["split"]
    monkeypatch.setattr(launch, "K", types.SimpleNamespace(**{n: Recorder(n) for n in names}))
    T, B = 2, 3
    u, h0, dhs = torch.randn(T, B, H), torch.randn(B, H), torch.randn(T, B, H)
    w, dhn = torch.randn(H, H), torch.randn(B, H)
    lengths = torch.tensor([2, 1, 0], dtype=torch.int32) if with_lengths else None
    cfg = select_config(B, H, torch.float32, "ieee")
    hs, _ = launch.forward(u, w, h0, lengths, False, False, cfg)
    launch.backward(w, hs, dhs, dhn, lengths, False, False, cfg)
    caller = {x.data_ptr() for x in (u, h0, dhs, w, dhn)} | ({lengths.data_ptr()} if with_lengths else set())
    stepped = {n for n in gate.KERNELS[cfg.mode] if cfg.mode == "single" or n.endswith("step_kernel")}
    assert {name for name, _, _ in calls} == stepped  # the persistent ones need CUDA and the grid barrier
    for name, args, kwargs in calls:
        # the launch options the gate builds with (warps, maxnreg, SK) are the ones passed
        opts = cfg.launch_options(backward="bwd" in name, persistent=False)
        assert {k: kwargs.get(k) for k in opts} == opts, name
        roles = [item.split(":") for item in gate.ARGS[name].split()]
        assert len(roles) == len(args), name
        by_name = dict(zip([n for n, _ in roles], args, strict=True))
        for (arg, role), value in zip(roles, args, strict=True):
            if role == "lengths" and not with_lengths:
                alias = gate.LENGTHS_ALIAS["bwd" if "bwd" in name else "fwd"]
                assert value is by_name[alias], (name, arg)
            elif role in ("in", "lengths") or (role == "wt" and H == 1):
                assert value.data_ptr() in caller, (name, arg)
            elif role in ("new", "wt", "count", "dh"):
                assert value.data_ptr() not in caller, (name, arg)
            else:
                assert isinstance(value, int) and value == {"B": B, "H": H}.get(role, value), (name, arg)


def test_cache_keys_do_not_depend_on_hashing_order():
    """Equal kernels get equal Triton cache keys in every process, so the runtime reuses the gate's builds.

    Triton 3.6 folds a module-level tl.constexpr into a kernel's key only when the helper reading it
    was hashed first: such a global made the keys depend on which kernel a process hashed first.
    """
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    names = gate.KERNELS["single"] + gate.KERNELS["split"]
    code = "import sys, fused_rnn.kernels as K; print(*(getattr(K, n).cache_key for n in sys.argv[1:]))"
    keys = []
    for order in (names, names[::-1]):
        out = subprocess.run([sys.executable, "-c", code, *order], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        keys.append(dict(zip(order, out.stdout.split(), strict=True)))
    assert keys[0] == keys[1]


# --------------------------------------------------------------------------------------------- generation


def _gen_kind(r: dict) -> str:
    return "half" if r["dtype"] != "fp32" else r["precision"]


def test_every_generation_config_was_built_for_every_card(gen_results):
    from fused_rnn import generate as G

    built = {(r["capability"], r["dtype"], r["precision"], r["block_h"], r["block_n"], r["num_warps"])
             for r in gen_results if r["kernel"] == "generate_kernel"}  # fmt: skip
    configs = G.all_gen_configs()
    assert built == {(_cc(cap), DTYPE[str(dt)], p, c.block_h, c.block_v, c.num_warps) for cap, dt, p, c in configs}
    draws = {
        (r["capability"], r["dtype"], r["precision"], r["block_n"])
        for r in gen_results
        if r["kernel"] != "generate_kernel"
    }
    assert draws == {(_cc(c), DTYPE[str(dt)], p, bv) for c, dt, p, bv in G.all_draw_configs()}
    classes = {(r["kernel"], r["block_h"], r["features"], r["spec"]) for r in gen_results}
    for kernel, bh, _, _ in classes:
        want = {("greedy", next(iter(gate.GEN_SPECS)))} | {("sample-topk-logp", next(iter(gate.GEN_SPECS)))}
        if kernel == "generate_kernel" and bh == G.GEN_MAX_H:
            want |= {("sample-topk-logp", s) for s in gate.GEN_SPECS}
        assert {(f, s) for k, b, f, s in classes if (k, b) == (kernel, bh)} == want, (kernel, bh)


def test_generation_kernels_do_not_spill(gen_results):
    spills = [f"{_name(r)}: stack {r['stack']} local {r['local']}" for r in gen_results if r["spill_bytes"]]
    assert not spills, spills


def test_generation_shared_memory_table(gen_results):
    """GEN_CONFIGS / DRAW_CONFIGS bound every build, so the choice per card rests on the gate, and each
    entry is the most any build of it takes (the gate's figure, not a guess)."""
    from fused_rnn.generate import DRAW_CONFIGS, GEN_SHARED_BYTES

    want: dict = {}
    for r in gen_results:
        assert r["shared_bytes"] <= r["smem_limit"], _name(r)
        if r["kernel"] == "generate_kernel":
            key = (r["block_h"], r["block_n"], _gen_kind(r))
        else:
            key = (r["block_n"], _gen_kind(r))
        want[key] = max(want.get(key, 0), r["shared_bytes"])
    assert want == GEN_SHARED_BYTES | DRAW_CONFIGS


def test_generation_time_loop_and_tensor_cores(gen_results):
    for r in gen_results:
        loop = r["loop"]
        if r["kernel"] == "generate_kernel":
            assert loop["scope"] == "time loop" and loop["STG"] and loop["LDG"], _name(r)
        if _gen_kind(r) != "ieee":
            assert r["tensor_cores"], _name(r)


def test_gate_arguments_follow_the_generation_launches(monkeypatch):
    """compile_gate.ARGS's roles for the generation kernels are what fused_rnn.generate passes."""
    import types

    import torch

    import fused_rnn.generate as G
    from fused_rnn import FusedCharRNN, launch

    calls = []

    real = launch.K

    class Recorder:
        def __init__(self, name: str):
            self.name = name
            self.arg_names = getattr(real, name).arg_names  # step mode finds the step argument by name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((self.name, args, kwargs))

    names = gate.KERNELS["single"] + gate.KERNELS["split"] + gate.GEN_KERNELS
    monkeypatch.setattr(launch, "K", types.SimpleNamespace(**{n: Recorder(n) for n in names}))
    monkeypatch.setattr(launch, "unavailable_reason", lambda device: None)
    # nothing runs, so the tokens the per-step path gathers with must be valid indices already
    monkeypatch.setattr(G, "_empty_tokens", lambda B, L, device: torch.zeros(B, L, dtype=torch.long))
    model = FusedCharRNN(13, 8, 20)
    prime = torch.randint(0, 13, (3, 2))
    params = {p.data_ptr() for p in model.parameters()} | {prime.data_ptr()}
    for one in (True, False):
        if not one:
            monkeypatch.setattr(G, "one_launch_config", lambda *a, **k: None)
        calls.clear()
        G.generate(model, prime, 2, temperature=0.5, top_k=3, return_logp=True, backend="triton")
        gen = [c for c in calls if c[0] in gate.GEN_KERNELS]
        assert gen and {c[0] for c in gen} == {"generate_kernel" if one else "generate_draw_step_kernel"}
        for name, args, _ in gen:
            roles = [item.split(":") for item in gate.ARGS[name].split()]
            assert len(roles) == len(args), name
            for (arg, role), value in zip(roles, args, strict=True):
                if role == "in":
                    assert value.data_ptr() in params, (name, arg)
                elif role in ("new", "seed", "tokens", "logp"):
                    assert value.data_ptr() not in params, (name, arg)
                elif role == "float":
                    assert isinstance(value, float), (name, arg)
                else:
                    assert isinstance(value, int) and not isinstance(value, bool), (name, arg)


# ------------------------------------------------------------------------------------------ LSTM / GRU kernels


def test_every_gated_config_was_built_for_every_card(gated_results):
    """Every (card, dtype, precision, mode, BH, warps) the runtime can launch, every kernel of the mode (the split
    mode's step and persistent kernels with their own warps), both cells, every class."""
    from fused_rnn.gated_ops import all_gated_configs

    built = {}
    for r in gated_results:
        key = (r["capability"], r["dtype"], r["precision"], r["gated_mode"], r["block_h"], r["kernel"], r["num_warps"],
               r["split_k"], r["maxnreg"])  # fmt: skip
        built.setdefault(key, set()).add(r["variant"])
    want = {}
    for cap, dtype, prec, fwd, bwd in all_gated_configs():
        for kernel in gate.GATED_KERNELS[fwd.mode]:
            cfg = bwd if "bwd" in kernel else fwd
            persistent = fwd.mode == "split" and "step" not in kernel
            if persistent and not cfg.num_warps_persistent:
                continue
            opts = cfg.warps(persistent)
            key = (_cc(cap), DTYPE[str(dtype)], prec, fwd.mode, fwd.block_h, kernel, opts["num_warps"],
                   opts.get("SK", 1), opts.get("maxnreg"))  # fmt: skip
            want[key] = {f"{cell}-lengths-reverse:{spec}" for cell in ("lstm", "gru") for spec in gate.GATED_SPECS}
    assert built == want


def test_the_gated_split_mode_covers_the_issues_target_and_h_past_one_program():
    """H = 768 bf16 (the GPU target) runs split on sm_90, its forward with a grid barrier; every H up to each
    (card, dtype)'s limit runs, both directions in the same mode."""
    import torch

    from fused_rnn.dispatch import SMEM_LIMIT
    from fused_rnn.gated_ops import _PRECISIONS, _SIZES, gated_launch, max_hidden

    fwd, bwd = (gated_launch(768, torch.bfloat16, "ieee", (9, 0), backward) for backward in (False, True))
    assert fwd.mode == bwd.mode == "split" and fwd.num_warps_persistent, fwd  # the grid barrier on an H100 / H200
    for cap in SMEM_LIMIT:
        for dtype, prec in _PRECISIONS:
            top = max_hidden(dtype, prec, cap)
            assert top >= 128, (cap, dtype, prec)  # past the single-program kernels' 64
            for h in (h for h in _SIZES if h <= top):
                fwd, bwd = (gated_launch(h, dtype, prec, cap, backward) for backward in (False, True))
                assert fwd is not None and bwd is not None and fwd.mode == bwd.mode, (cap, dtype, prec, h)


def test_gated_kernels_do_not_spill_and_fit_the_card(gated_results):
    spills = [f"{_name(r)}: {r['spill_bytes']} B" for r in gated_results if r["spill_bytes"]]
    over = [f"{_name(r)}: {r['shared_bytes']} > {r['smem_limit']}" for r in gated_results
            if r["shared_bytes"] > r["smem_limit"]]  # fmt: skip
    assert not spills, spills
    assert not over, over


def test_gated_shared_memory_tables_are_the_gates(gated_results):
    """`GATED_SHARED_BYTES` and `GATED_SPLIT_SHARED_BYTES` (which decide what fits each card) are the largest the
    gate measured per entry, and every entry the runtime can launch was measured."""
    from fused_rnn.gated_ops import GATED_SHARED_BYTES, GATED_SPLIT_SHARED_BYTES

    for mode, table in (("single", GATED_SHARED_BYTES), ("split", GATED_SPLIT_SHARED_BYTES)):
        measured: dict = {}
        for r in (r for r in gated_results if r["gated_mode"] == mode):
            kernel = r["kernel"]
            key = (("bwd" in kernel, "step" not in kernel, _kind(r), r["block_h"]) if mode == "split"
                   else (r["block_h"], _kind(r)))  # fmt: skip
            measured[key] = max(measured.get(key, 0), r["shared_bytes"])
        assert measured == {k: v for k, v in table.items() if k in measured}, mode


def test_gated_time_loop_and_tensor_cores(gated_results):
    for r in gated_results:
        loop = r["loop"]
        if r["kernel"] in gate.LOOPING:
            # the step's stores and dots are in the loop (ptxas moves some fp32 builds' u loads out of LDG's count)
            assert loop["scope"] == "time loop" and loop["STG"] >= 4 and loop["instructions"] > 100, _name(r)
        else:  # a split step kernel: one step per launch
            assert loop["scope"] == "whole kernel (no time loop)" and loop["STG"] >= 4, _name(r)
        assert loop["HMMA"] + loop["HGMMA"] + loop["FFMA"] > 0, _name(r)
        if _kind(r) != "ieee":
            assert r["tensor_cores"] and loop["HMMA"] + loop["HGMMA"] > 0, _name(r)
