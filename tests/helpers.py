"""Shared test helpers: float64 references and error measures, the CLI runner, bench/ scripts as modules."""

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fused_rnn import KernelConfig, recurrence_reference
from fused_rnn.dispatch import SPLIT_BN, padded

#: The precisions every kernel test runs at; the "precision" fixture (conftest.py) applies them.
DTYPES = [
    pytest.param("fp32", id="fp32"),
    pytest.param("tf32", id="tf32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]

#: One tolerance table: max ||got - ref|| / ||ref|| against float64, per dtype (and fp32 dot mode).
TOL = {
    "fp32": {"fwd": 1e-5, "bwd": 1e-5},
    "tf32": {"fwd": 5e-3, "bwd": 1e-2},
    torch.float16: {"fwd": 2e-3, "bwd": 4e-3},
    torch.bfloat16: {"fwd": 1.5e-2, "bwd": 3e-2},
}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert not torch.isnan(got).any(), "NaN in output (unwritten element?)"
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()  # the references live on the CPU
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(T, B, H, dtype, device, scale=1.0):
    """inp (T, B, H), weight (H, H), bias (H,), h0 (B, H) with O(1) pre-activations."""
    inp = torch.randn(T, B, H, device=device) * scale
    weight = torch.randn(H, H, device=device) / H**0.5
    bias = torch.randn(H, device=device) * 0.1
    h0 = torch.randn(B, H, device=device) * 0.5
    return [x.to(dtype) for x in (inp, weight, bias, h0)]


def reference_grads(xs, dhs, dhn):
    """Float64 outputs and gradients of recurrence_reference on CPU copies of xs."""
    ys = [x.detach().cpu().double().requires_grad_() for x in xs]
    hs, hn = recurrence_reference(*ys)
    loss = (hs * dhs.cpu().double()).sum() + (hn * dhn.cpu().double()).sum()
    loss.backward()
    return hs, hn, [y.grad for y in ys]


def split_config(H: int, prec: str, split_k: bool = False) -> KernelConfig:
    """The split kernels forced onto a small H, to prove their math on awkward shapes.

    split_k: cut the reduction into as many slices as the kernels have warps, as the
    dispatcher does for tensor-core dots: here the most slices of >= 16 (at most 8).
    """
    warps = min(8, padded(H) // 16) if split_k else 8
    return KernelConfig("split", 16, padded(H), SPLIT_BN, warps, prec, warps, split_k=split_k)


#: the smallest model the command line trains in a test
TINY = ["--hidden", "32", "--embed", "8", "--seq-len", "16", "--batch-size", "8", "--quiet"]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """`fused-rnn ARGV` in-process: (exit code, stdout, stderr)."""
    from fused_rnn.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def load_bench(name: str):
    """bench/NAME.py as the module NAME (registered in sys.modules: dataclasses look their module up)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def outcome(make):
    """("ok", None) or (exception type, message) of make(), with the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            make()
            result = ("ok", None)
        except Exception as exc:  # noqa: BLE001 - the type is what is compared
            result = (type(exc), str(exc))
    return result, [str(w.message) for w in caught]
