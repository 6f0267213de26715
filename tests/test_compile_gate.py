"""GPU compile gate, no GPU needed: every dispatcher config builds for sm_80 / sm_90 within limits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gate_results():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_gate.py")
    out = subprocess.run([sys.executable, str(script), "--json"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _name(r):
    return f"{r['dtype']}-{r['precision']}-{r['mode']}-BH{r['block_h']}-{r['kernel']}-{r['variant']}-sm{r['cc']}"


def test_every_config_was_built(gate_results):
    from fused_rnn.dispatch import all_configs

    assert {(r["dtype"], r["precision"], r["mode"], r["block_h"]) for r in gate_results} == {
        ({"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}[str(d)], p, c.mode, c.block_h)
        for d, p, c in all_configs()
    }
    assert {r["cc"] for r in gate_results} == {80, 90}
    assert {r["variant"] for r in gate_results} == {"plain", "lengths-reverse", "relu"}


def test_shared_memory_within_the_block_limit(gate_results):
    over = [f"{_name(r)}: {r['shared']} > {r['smem_limit']}" for r in gate_results if r["shared"] > r["smem_limit"]]
    assert not over, over


def test_no_register_spills(gate_results):
    spills = [f"{_name(r)}: stack {r['stack']} local {r['local']}" for r in gate_results if r["stack"] or r["local"]]
    assert not spills, spills


def test_tensor_cores_for_tf32_and_half(gate_results):
    """Every dot of a tf32, fp16 or bf16 config is an mma / wgmma."""
    slow = [
        _name(r) for r in gate_results if (r["precision"] == "tf32" or r["dtype"] != "fp32") and not r["tensor_cores"]
    ]
    assert not slow, slow
