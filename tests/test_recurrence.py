"""fused_recurrence's kernels against float64, nn.RNN with tied weights, and gradcheck."""

import pytest
import torch
from helpers import DTYPES, TOL, make_inputs, reference_grads, rel_err, split_config

import fused_rnn.launch
import fused_rnn.ops as ops
from fused_rnn import fused_recurrence
from fused_rnn.dispatch import select_config

SHAPES = [
    pytest.param(1, 1, 1, id="T1-B1-H1"),
    pytest.param(2, 3, 20, id="T2-B3-H20"),
    pytest.param(63, 17, 100, id="T63-B17-H100"),
    pytest.param(9, 33, 128, id="T9-B33-H128"),
    pytest.param(3, 1, 16, id="T3-B1-H16"),
    pytest.param(4, 17, 256, id="T4-B17-H256"),
    pytest.param(2, 3, 300, id="T2-B3-H300"),
]


def check_all(T, B, H, mode, dtype, device, config=None):
    if B * H == 1 and dtype != torch.float32:
        # half-precision rounding of h_t or u_t is amplified without bound by cancellation
        # (1 - h^2 near |h| = 1, h W + u near 0), and one element has no norm to average it over
        pytest.skip("a single half-precision element")
    xs = [x.requires_grad_() for x in make_inputs(T, B, H, dtype, device)]
    hs, hn = fused_recurrence(*xs, backend="triton", config=config)
    assert hs.dtype == dtype and hn.dtype == dtype
    assert hs.shape == (T, B, H) and hn.shape == (B, H)
    dhs, dhn = torch.randn_like(hs), torch.randn_like(hn)
    ((hs * dhs).sum() + (hn * dhn).sum()).backward()
    rhs, rhn, rgrads = reference_grads(xs, dhs, dhn)
    tol = TOL[mode]
    assert rel_err(hs, rhs) <= tol["fwd"]
    assert rel_err(hn, rhn) <= tol["fwd"]
    for name, x, g in zip(("inp", "weight", "bias", "h0"), xs, rgrads, strict=True):
        assert x.grad is not None and x.grad.dtype == dtype, name
        assert rel_err(x.grad, g) <= tol["bwd"], name


@pytest.mark.parametrize("precision", DTYPES, indirect=True)
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_outputs_and_grads_vs_float64(T, B, H, precision, device, poison):
    mode, dtype = precision
    check_all(T, B, H, mode, dtype, device)


@pytest.mark.parametrize("split_k", [False, True], ids=["k1", "kwarps"])
@pytest.mark.parametrize("precision", [DTYPES[0], DTYPES[3]], indirect=True)
@pytest.mark.parametrize(
    "T,B,H",
    [
        pytest.param(1, 1, 1, id="T1-B1-H1"),
        pytest.param(5, 17, 20, id="T5-B17-H20"),
        pytest.param(6, 33, 100, id="T6-B33-H100"),
    ],
)
def test_split_kernels_on_awkward_shapes(T, B, H, precision, split_k, device, poison):
    mode, dtype = precision
    check_all(T, B, H, mode, dtype, device, config=split_config(H, "ieee", split_k))


@pytest.mark.parametrize(
    "T,B,H,dtype",
    [
        pytest.param(2, 3, 1024, torch.float32, id="T2-B3-H1024-fp32"),
        pytest.param(2, 2, 2048, torch.bfloat16, id="T2-B2-H2048-bf16"),
    ],
)
def test_largest_split_sizes(T, B, H, dtype, device, poison):
    torch.set_float32_matmul_precision("highest")
    check_all(T, B, H, "fp32" if dtype == torch.float32 else dtype, dtype, device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the grid barrier needs every program resident (GPU only)")
@pytest.mark.parametrize(
    "T,B,H", [pytest.param(63, 17, 256, id="T63-B17-H256"), pytest.param(9, 3, 1024, id="T9-B3-H1024")]
)
def test_persistent_split_with_grid_barrier(T, B, H, device, poison, monkeypatch):
    monkeypatch.setenv("FUSED_RNN_GRID_BARRIER", "1")
    torch.set_float32_matmul_precision("highest")
    ran = []  # the persistent kernels must have run, not the step kernels they fall back to
    persistent = fused_rnn.launch._launch_persistent
    monkeypatch.setattr(fused_rnn.launch, "_launch_persistent", lambda *a: ran.append(persistent(*a)) or ran[-1])
    check_all(T, B, H, "fp32", torch.float32, device)
    assert ran == [True, True], ran  # forward and backward


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the interpreter ignores input_precision (GPU only)")
@pytest.mark.parametrize(
    "T,B,H",
    [
        pytest.param(63, 17, 100, id="T63-B17-H100"),
        pytest.param(9, 33, 128, id="T9-B33-H128"),
        pytest.param(4, 17, 256, id="T4-B17-H256"),
        pytest.param(9, 3, 1024, id="T9-B3-H1024"),
    ],
)
def test_tf32x3_is_float32_accurate(T, B, H, device, poison, monkeypatch):
    """FUSED_RNN_TF32X3=1: three TF32 mma per product hold the float32 tolerance that one TF32 mma misses."""
    torch.set_float32_matmul_precision("highest")
    monkeypatch.setenv("FUSED_RNN_TF32X3", "1")
    cap = torch.cuda.get_device_capability(device)
    # tf32x3 wherever its kernel fits this card (sm_90: every shape here but H = 1024)
    want = select_config(B, H, torch.float32, "tf32x3", cap)
    if want is None:
        pytest.skip(f"no triton config for float32 H = {H} on sm_{cap[0]}{cap[1]}")
    assert ops._config(torch.empty(T, B, H, device=device), "") == want
    assert want.dot_precision == ("ieee" if H == 1024 or (H > 64 and cap == (8, 0)) else "tf32x3"), want
    check_all(T, B, H, "fp32", torch.float32, device)
    # the same check catches a plain TF32 dot: its error is far over the float32 tolerance
    inp, w, b, h0 = make_inputs(T, B, H, torch.float32, device)
    ref, _, _ = reference_grads([inp, w, b, h0], torch.zeros(T, B, H), torch.zeros(B, H))
    torch.set_float32_matmul_precision("high")
    try:
        hs, _ = fused_recurrence(inp, w, b, h0, backend="triton")
    finally:
        torch.set_float32_matmul_precision("highest")
    assert rel_err(hs, ref) > TOL["fp32"]["fwd"]


@pytest.mark.parametrize("T,B,H", [pytest.param(7, 3, 20, id="T7-B3-H20"), pytest.param(5, 17, 256, id="T5-B17-H256")])
def test_matches_nn_rnn_with_tied_weights(T, B, H, device):
    """nn.RNN(H, H) with weight_ih = weight_hh = W, bias_ih = 0, bias_hh = b is the same cell."""
    torch.set_float32_matmul_precision("highest")
    inp, w, b, h0 = make_inputs(T, B, H, torch.float32, device)
    rnn = torch.nn.RNN(H, H).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w)
        rnn.weight_hh_l0.copy_(w)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.copy_(b)
    ref_hs, ref_hn = rnn(inp.cpu().double(), h0.cpu().double()[None])
    hs, hn = fused_recurrence(inp, w, b, h0, backend="triton")
    assert rel_err(hs, ref_hs) <= TOL["fp32"]["fwd"]
    assert rel_err(hn, ref_hn[0]) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize("only", ["hs", "hn"])
def test_gradient_through_one_output(only, device, poison):
    """Gradients when only hs or only h_n reaches the loss (the other grad is None)."""
    torch.set_float32_matmul_precision("highest")
    xs = [x.requires_grad_() for x in make_inputs(6, 3, 20, torch.float32, device)]
    hs, hn = fused_recurrence(*xs, backend="triton")
    dhs = torch.randn_like(hs) if only == "hs" else torch.zeros_like(hs)
    dhn = torch.randn_like(hn) if only == "hn" else torch.zeros_like(hn)
    out = hs if only == "hs" else hn
    (out * (dhs if only == "hs" else dhn)).sum().backward()
    _, _, rgrads = reference_grads(xs, dhs, dhn)
    for x, g in zip(xs, rgrads, strict=True):
        assert rel_err(x.grad, g) <= TOL["fp32"]["bwd"]


def test_gradcheck(device):
    torch.set_float32_matmul_precision("highest")
    xs = [x.requires_grad_() for x in make_inputs(3, 2, 5, torch.float32, device)]

    def fn(*args):
        hs, hn = fused_recurrence(*args, backend="triton")
        return hs, hn

    with pytest.warns(UserWarning):  # gradcheck warns on float32 inputs; the triton path has no float64
        assert torch.autograd.gradcheck(fn, xs, eps=1e-2, atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("H", [pytest.param(20, id="single-H20"), pytest.param(256, id="split-H256")])
def test_deterministic(H, device):
    """Same inputs, bitwise-equal outputs and gradients (no float atomics)."""
    torch.set_float32_matmul_precision("highest")
    xs = make_inputs(5, 17, H, torch.float32, device)
    dhs = torch.randn(5, 17, H, device=device)
    runs = []
    for _ in range(2):
        ys = [x.clone().requires_grad_() for x in xs]
        hs, hn = fused_recurrence(*ys, backend="triton")
        ((hs * dhs).sum() + hn.sum()).backward()
        runs.append([hs, hn] + [y.grad for y in ys])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
