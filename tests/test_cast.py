"""kernels.utils.cast: float32 -> bfloat16 rounds to nearest even, bit for bit as torch (and the GPU's cvt.rn) do,
in Triton's interpreter too (whose own cast truncates)."""

import torch
import triton
import triton.language as tl
from fused_rnn.kernels.utils import cast

import fused_rnn.launch


@triton.jit
def _cast_kernel(x, y, N: tl.constexpr):
    o = tl.arange(0, N)
    tl.store(y + o, cast(tl.load(x + o), y.dtype.element_ty))


@triton.jit
def _plain_kernel(x, y, N: tl.constexpr):
    o = tl.arange(0, N)
    tl.store(y + o, tl.load(x + o).to(y.dtype.element_ty))


def _values(device) -> torch.Tensor:
    """Random floats over many binades, every exact bf16 tie (low half 0x8000), the specials; padded to 2**18."""
    rand = torch.randn(60_000) * torch.exp2(torch.randint(-130, 128, (60_000,)).float())
    ties = (torch.arange(0, 2**16, dtype=torch.int32) << 16 | 0x8000).view(torch.float32)
    near = (torch.arange(0, 2**16, dtype=torch.int32) << 16 | 0x7FFF).view(torch.float32)
    special = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.3895e38, 1e-40])
    x = torch.cat([rand, ties, near, special])
    return torch.cat([x, torch.zeros(2**18 - x.numel())]).to(device)


def _bits(y: torch.Tensor) -> torch.Tensor:
    """bf16 bit patterns, every NaN as one pattern."""
    return torch.where(torch.isnan(y), torch.tensor(float("nan"), dtype=y.dtype, device=y.device), y).view(torch.int16)


def test_float32_to_bfloat16_rounds_to_nearest_even(device):
    x = _values(device)
    want = x.to(torch.bfloat16)  # torch rounds to nearest even
    y = torch.empty_like(want)
    _cast_kernel[(1,)](x, y, x.numel())
    assert torch.equal(_bits(y), _bits(want))
    for dtype, bits in ((torch.float16, torch.int16), (torch.float32, torch.int32)):  # the others: plain casts
        z, plain = torch.empty_like(x, dtype=dtype), torch.empty_like(x, dtype=dtype)
        _cast_kernel[(1,)](x, z, x.numel())
        _plain_kernel[(1,)](x, plain, x.numel())
        assert torch.equal(z.view(bits), plain.view(bits))


def test_the_interpreter_itself_truncates_so_the_helper_matters(device):
    """Where the kernels run in the interpreter, its own cast is not the GPU's: without `cast` ties and
    above-half values round down (this is what the helper fixes; on a GPU both agree)."""
    x = _values(device)
    plain = torch.empty(x.shape, dtype=torch.bfloat16, device=device)
    _plain_kernel[(1,)](x, plain, x.numel())
    differs = (_bits(plain) != _bits(x.to(torch.bfloat16))).sum().item()
    assert (differs > 0) == fused_rnn.launch.interpreted()
