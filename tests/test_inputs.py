"""Bad and edge-case input: clear errors before any kernel runs, and no silent wrong answers."""

import warnings

import pytest
import torch
from helpers import TOL, make_inputs, reference_grads, rel_err

import fused_rnn.ops
from fused_rnn import FusedCharRNN, fused_recurrence
from fused_rnn.dispatch import SPLIT_MAX_H


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if a kernel would be launched."""

    def boom(*args, **kwargs):
        raise AssertionError("a kernel was launched")

    monkeypatch.setattr(fused_rnn.launch, "forward", boom)
    monkeypatch.setattr(fused_rnn.launch, "backward", boom)


@pytest.mark.parametrize(
    "change,arg,match",
    [
        pytest.param(lambda x: x.update(inp=x["inp"][0]), "inp", r"\(T, B, H\)", id="inp-rank"),
        pytest.param(
            lambda x: x.update(weight=x["weight"][:, :-1]), "weight", r"\(H, H\) = \(8, 8\)", id="weight-shape"
        ),
        pytest.param(lambda x: x.update(weight=x["weight"][0]), "weight", r"\(H, H\)", id="weight-rank"),
        pytest.param(lambda x: x.update(bias=x["bias"][:-1]), "bias", r"\(H,\) = \(8,\)", id="bias-shape"),
        pytest.param(lambda x: x.update(h0=x["h0"][:-1]), "h0", r"\(B, H\) = \(3, 8\)", id="h0-shape"),
        pytest.param(lambda x: x.update(h0=x["h0"][None]), "h0", r"\(B, H\)", id="h0-rank"),
        pytest.param(lambda x: x.update(weight=x["weight"].double()), "weight", "dtype", id="weight-dtype"),
        pytest.param(lambda x: x.update(h0=x["h0"].half()), "h0", "dtype", id="h0-dtype"),
        pytest.param(lambda x: x.update(inp=x["inp"].long()), "inp", "floating", id="inp-int"),
        pytest.param(lambda x: x.update(bias=x["bias"].to("meta")), "bias", "device", id="bias-device"),
        pytest.param(lambda x: x.update(weight=x["weight"].tolist()), "weight", "torch.Tensor", id="weight-list"),
    ],
)
def test_bad_arguments_name_the_argument(change, arg, match, device, no_launch):
    inp, weight, bias, h0 = make_inputs(5, 3, 8, torch.float32, device)
    args = dict(inp=inp, weight=weight, bias=bias, h0=h0)
    change(args)
    with pytest.raises((ValueError, TypeError), match=rf"^{arg}: .*{match}"):
        fused_recurrence(**args, backend="triton")


def test_unknown_backend(device):
    inp, weight, bias, h0 = make_inputs(2, 1, 4, torch.float32, device)
    with pytest.raises(ValueError, match="backend"):
        fused_recurrence(inp, weight, backend="cuda")


def test_over_the_limit_raises_for_triton_and_warns_once_for_auto(device, no_launch):
    H = SPLIT_MAX_H[torch.float32] + 1
    inp, weight, bias, h0 = make_inputs(2, 1, H, torch.float32, device)
    with pytest.raises(ValueError, match=f"H <= {SPLIT_MAX_H[torch.float32]}"):
        fused_recurrence(inp, weight, bias, h0, backend="triton")
    fused_rnn.ops._warned.clear()
    with pytest.warns(UserWarning, match="falling back to the torch path"):
        hs, hn = fused_recurrence(inp, weight, bias, h0, backend="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused_recurrence(inp, weight, bias, h0, backend="auto")  # once only
    ref_hs, ref_hn, _ = reference_grads([inp, weight, bias, h0], torch.zeros_like(hs), torch.zeros_like(hn))
    assert rel_err(hs, ref_hs) <= 1e-5


def test_float64_goes_to_torch(device, no_launch):
    inp, weight, bias, h0 = make_inputs(3, 2, 8, torch.float64, device)
    with pytest.raises(ValueError, match="float64"):
        fused_recurrence(inp, weight, bias, h0, backend="triton")
    hs, hn = fused_recurrence(inp, weight, bias, h0)  # auto: the torch path, in float64
    ref_hs, _, _ = reference_grads([inp, weight, bias, h0], torch.zeros_like(hs), torch.zeros_like(hn))
    assert hs.dtype == torch.float64 and rel_err(hs, ref_hs) <= 1e-13  # (h + x) W^T vs h W^T + x W^T rounding


@pytest.mark.parametrize("H", [pytest.param(20, id="single-H20"), pytest.param(200, id="split-H200")])
def test_non_contiguous_inputs(H, device, poison):
    torch.set_float32_matmul_precision("highest")
    T, B = 4, 3
    base = make_inputs(T, B, H, torch.float32, device)
    inp = torch.randn(B, T, H, device=device).transpose(0, 1)  # (T, B, H), strided
    weight = torch.randn(H, H, device=device).t() / H**0.5
    bias = torch.randn(2 * H, device=device)[::2]
    h0 = base[3].t().contiguous().t()
    xs = [x.requires_grad_() for x in (inp, weight, bias, h0)]
    assert not any(x.is_contiguous() for x in xs[:3])
    hs, hn = fused_recurrence(*xs, backend="triton")
    dhs = torch.randn(B, T, H, device=device).transpose(0, 1)  # a strided incoming gradient
    ((hs * dhs).sum() + hn.sum()).backward()
    rhs, _, rg = reference_grads(xs, dhs, torch.ones_like(hn))
    assert rel_err(hs, rhs) <= TOL["fp32"]["fwd"]
    for x, g in zip(xs, rg, strict=True):
        assert rel_err(x.grad, g) <= TOL["fp32"]["bwd"]


@pytest.mark.parametrize("H", [pytest.param(20, id="single-H20"), pytest.param(200, id="split-H200")])
def test_nan_stays_in_its_row(H, device):
    T, B = 5, 3
    inp, weight, bias, h0 = make_inputs(T, B, H, torch.float32, device)
    inp[2, 1, 3] = float("nan")
    hs, hn = fused_recurrence(inp, weight, bias, h0, backend="triton")
    assert not torch.isnan(hs[:2]).any()
    assert torch.isnan(hs[2:, 1]).all()  # NaN in, NaN out: never a silent 0
    clean = torch.tensor([0, 2])
    ref_hs, _, _ = reference_grads([inp[:, clean], weight, bias, h0[clean]], hs[:, clean], hn[clean])
    assert rel_err(hs[:, clean], ref_hs) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H", [pytest.param(20, id="single-H20"), pytest.param(200, id="split-H200")])
def test_huge_preactivations_saturate(H, dtype, device):
    T, B = 3, 2
    inp = torch.full((T, B, H), 1e6, device=device, dtype=dtype)
    inp[:, 1] = -1e6
    weight = torch.eye(H, device=device, dtype=dtype)
    hs, hn = fused_recurrence(inp, weight, backend="triton")
    assert torch.equal(hs[:, 0].float(), torch.ones(T, H, device=device))
    assert torch.equal(hs[:, 1].float(), -torch.ones(T, H, device=device))


def test_empty_time_and_batch(device):
    inp, weight, bias, h0 = make_inputs(0, 3, 8, torch.float32, device)
    h0.requires_grad_()
    hs, hn = fused_recurrence(inp, weight, bias, h0, backend="triton")
    assert hs.shape == (0, 3, 8) and torch.equal(hn, h0)
    hn.sum().backward()
    assert torch.equal(h0.grad, torch.ones_like(h0))  # T = 0: h_n is h0
    inp, weight, bias, _ = make_inputs(4, 0, 8, torch.float32, device)
    hs, hn = fused_recurrence(inp, weight, bias, backend="triton")
    assert hs.shape == (4, 0, 8) and hn.shape == (0, 8)


@pytest.mark.parametrize("bad", [-1, 11])
def test_tokens_out_of_range(bad, no_launch):
    """Checked on the host only (eager, CPU): on CUDA the gather's device-side assert fires, as nn.Embedding's."""
    model = FusedCharRNN(11, 5, 8)
    tokens = torch.randint(0, 11, (3, 4))
    tokens[1, 2] = bad
    with pytest.raises(IndexError, match=f"tokens: character index {bad} is outside \\[0, 11\\)"):
        model.forward_sequence(tokens)
    with pytest.raises(IndexError, match="outside"):
        model(*tokens.t())


def test_token_shapes_and_dtypes(device, no_launch):
    model = FusedCharRNN(11, 5, 8).to(device)
    with pytest.raises(ValueError, match=r"tokens: expected shape \(B, T\)"):
        model.forward_sequence(torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(TypeError, match="tokens: expected an integer"):
        model.forward_sequence(torch.zeros(2, 3, device=device))
    with pytest.raises(ValueError, match=r"cs\[1\]: expected shape \(B,\)"):
        model(torch.zeros(3, dtype=torch.long, device=device), torch.zeros(4, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="cs: expected at least one"):
        model()
