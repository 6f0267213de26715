"""`tanh_f32` on its own against float64, over a dense grid, at the bound its docstring states."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from fused_rnn.kernels.utils import tanh_f32

#: Max error in units in the last place of the float32 result (numpy.spacing of the rounded float64 value).
#: The interpreter evaluates exp with numpy's correctly rounded float32 exp; compiled code lowers tl.exp to
#: ex2.approx and the division to div.full, estimated at up to 5 ulp (not yet measured on a GPU).
TANH_ULP = {"interpreter": 2.0, "compiled": 5.0}


@triton.jit
def _tanh_kernel(x, y, N, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < N
    tl.store(y + o, tanh_f32(tl.load(x + o, mask=m, other=0.0)), mask=m)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    y = torch.full_like(x, float("nan"))
    _tanh_kernel[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)
    return y


def _grid(device) -> torch.Tensor:
    """Every float32 in [2**-12, 2) at a stride of 64 ulp, a dense sweep of [2, 12], tiny values, both signs."""
    lo, hi = np.float32(2.0**-12).view(np.int32), np.float32(2.0).view(np.int32)
    mid = np.arange(lo, hi, 64, dtype=np.int32).view(np.float32)  # ~1.7M points
    big = np.linspace(2.0, 12.0, 200_001, dtype=np.float32)
    tiny = np.float32(2.0) ** -np.arange(13, 126, dtype=np.float32)
    x = np.concatenate([mid, big, tiny, [0.0]]).astype(np.float32)
    return torch.from_numpy(np.concatenate([x, -x])).to(device)


def test_tanh_f32_within_stated_ulp_of_float64(device):
    x = _grid(device)
    got = _tanh(x).cpu().double()
    ref = torch.tanh(x.cpu().double())
    ulp = torch.from_numpy(np.spacing(np.abs(ref.numpy()).astype(np.float32)).astype(np.float64))
    err = ((got - ref).abs() / ulp).max().item()
    bound = TANH_ULP["compiled" if device.type == "cuda" else "interpreter"]
    assert err <= bound, f"tanh_f32 is {err:.2f} ulp from float64 (bound {bound})"


SATURATED = [(30.0, 1.0), (-30.0, -1.0), (1e30, 1.0), (float("inf"), 1.0), (-float("inf"), -1.0)]


@pytest.mark.parametrize("x, want", SATURATED)
@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_tanh_f32_saturates_exactly(device, x, want):
    assert _tanh(torch.tensor([x], device=device)).item() == want


def test_tanh_f32_propagates_nan(device):
    assert torch.isnan(_tanh(torch.tensor([float("nan")], device=device))).all()
