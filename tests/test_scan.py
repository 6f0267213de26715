"""rnn_scan: every kernel mode, both directions, relu and tanh, per-row lengths, against nn.RNN in float64."""

import pytest
import torch
from helpers import DTYPES, TOL, rel_err, split_config

from fused_rnn import rnn_scan

SHAPES = [
    pytest.param(1, 1, 20, id="T1-B1-H20"),
    pytest.param(7, 17, 20, id="T7-B17-H20"),
    pytest.param(9, 3, 100, id="T9-B3-H100"),
    pytest.param(5, 17, 200, id="T5-B17-H200"),
]
FEATURES = [
    pytest.param(False, False, "tanh", id="fwd-tanh"),
    pytest.param(True, False, "tanh", id="rev-tanh"),
    pytest.param(False, True, "tanh", id="fwd-lengths"),
    pytest.param(True, True, "relu", id="rev-lengths-relu"),
    pytest.param(False, True, "relu", id="fwd-lengths-relu"),
]


def make_lengths(T: int, B: int, device) -> torch.Tensor:
    """Random lengths in [0, T] with a 0 and a T among them once B allows."""
    lengths = torch.randint(0, T + 1, (B,))
    if B > 2:
        lengths[0], lengths[-1] = 0, T
    return lengths.to(device)


def nn_rnn_reference(u, w_hh, h0, lengths, reverse, nonlinearity, dout, dhn):
    """Outputs, h_n and grads of (u, w_hh, h0) from torch.nn.RNN in float64, one row at a time.

    nn.RNN(H, H) with weight_ih = I and no bias computes act(W_hh h + u) exactly; a reverse row
    is its valid prefix flipped, run forward, and flipped back.
    """
    T, B, H = u.shape
    xs = [x.detach().cpu().double().requires_grad_() for x in (u, w_hh, h0)]
    uu, ww, hh = xs
    rnn = torch.nn.RNN(H, H, nonlinearity=nonlinearity, bias=False).double()
    del rnn.weight_hh_l0, rnn.weight_ih_l0
    rnn.weight_ih_l0 = torch.eye(H, dtype=torch.float64)
    rnn.weight_hh_l0 = ww
    outs, hns = [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        seq = uu[:n, b]
        if reverse:
            seq = seq.flip(0)
        if n:
            out, hn = rnn(seq, hh[b][None])
        else:
            out, hn = seq.new_zeros(0, H), hh[b][None]
        if reverse:
            out = out.flip(0)
        outs.append(torch.cat([out, out.new_zeros(T - n, H)]))
        hns.append(hn[0])
    out, hn = torch.stack(outs, 1), torch.stack(hns)
    ((out * dout.cpu().double()).sum() + (hn * dhn.cpu().double()).sum()).backward()
    return out, hn, [torch.zeros_like(x) if x.grad is None else x.grad for x in xs]  # None: never used


def rounded_reference(u, w_hh, h0, lengths, reverse, nonlinearity):
    """Forward outputs and h_n in float64 with the kernels' half-precision roundings, one row at a time.

    The dot's operands are in the storage dtype (h_prev rounded to it, as a tensor-core dot takes
    it) and every output is rounded to it; the rest is exact. A half-precision recurrence amplifies
    those roundings (relu, which never saturates, most), so it is the reference the half kernels
    are held to tightly; float64 itself stays a looser check.
    """
    T, B, H = u.shape
    dtype = u.dtype
    uu, ww, hh = (x.detach().cpu().double() for x in (u, w_hh, h0))
    act = torch.relu if nonlinearity == "relu" else torch.tanh
    out, hn = torch.zeros(T, B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        h = hh[b]
        for i in range(n):
            s = n - 1 - i if reverse else i
            h = act(h.to(dtype).double() @ ww.t() + uu[s, b])
            out[s, b] = h.to(dtype).double()
        hn[b] = h.to(dtype).double()
    return out, hn


def check_scan(T, B, H, mode, dtype, device, reverse, with_lengths, nonlinearity, config=None):
    if B * H == 1 and dtype != torch.float32:
        pytest.skip("a single half-precision element")
    u = torch.randn(T, B, H, device=device)
    w_hh = torch.randn(H, H, device=device) / H**0.5
    h0 = torch.randn(B, H, device=device) * 0.5
    xs = [x.to(dtype).requires_grad_() for x in (u, w_hh, h0)]
    lengths = make_lengths(T, B, device) if with_lengths else None
    out, hn = rnn_scan(
        *xs, lengths=lengths, reverse=reverse, nonlinearity=nonlinearity, backend="triton", config=config
    )
    assert out.dtype == dtype and hn.dtype == dtype and out.shape == (T, B, H) and hn.shape == (B, H)
    dout, dhn = torch.randn_like(out), torch.randn_like(hn)
    ((out * dout).sum() + (hn * dhn).sum()).backward()
    rout, rhn, rgrads = nn_rnn_reference(*xs, lengths, reverse, nonlinearity, dout, dhn)
    tol = TOL[mode]
    if dtype == torch.float32:
        assert rel_err(out, rout) <= tol["fwd"]
        assert rel_err(hn, rhn) <= tol["fwd"]
    else:  # tight against the kernels' own roundings, looser against float64 (their amplification)
        eout, ehn = rounded_reference(*xs, lengths, reverse, nonlinearity)
        assert rel_err(out, eout) <= tol["fwd"] / 4 and rel_err(hn, ehn) <= tol["fwd"] / 4
        assert rel_err(out, rout) <= 2 * tol["fwd"] and rel_err(hn, rhn) <= 2 * tol["fwd"]
    if lengths is not None:  # exactly zero past each row's length, in the output and in du
        pad = torch.arange(T, device=device)[:, None] >= lengths[None, :]
        assert not out[pad].any() and not xs[0].grad[pad].any()
    if nonlinearity == "relu" and dtype != torch.float32:
        # relu' jumps at 0: wherever a half-precision pre-activation lies within rounding of 0 the
        # gradient is legitimately another one, so relu's backward is held to float64 in fp32 only
        return
    for name, x, g in zip(("u", "w_hh", "h0"), xs, rgrads, strict=True):
        assert x.grad is not None and x.grad.dtype == dtype, name
        assert rel_err(x.grad, g) <= tol["bwd"], name


@pytest.mark.parametrize("precision", [DTYPES[0], DTYPES[3]], indirect=True)
@pytest.mark.parametrize("reverse,with_lengths,nonlinearity", FEATURES)
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_scan_vs_nn_rnn_float64(T, B, H, reverse, with_lengths, nonlinearity, precision, device, poison):
    mode, dtype = precision
    check_scan(T, B, H, mode, dtype, device, reverse, with_lengths, nonlinearity)


@pytest.mark.parametrize("split_k", [False, True], ids=["k1", "kwarps"])
@pytest.mark.parametrize("reverse,with_lengths,nonlinearity", FEATURES)
@pytest.mark.parametrize("T,B,H", [pytest.param(6, 17, 20, id="T6-B17-H20"), pytest.param(4, 3, 100, id="T4-B3-H100")])
def test_split_kernels_forced_onto_small_h(T, B, H, reverse, with_lengths, nonlinearity, split_k, device, poison):
    torch.set_float32_matmul_precision("highest")
    config = split_config(H, "ieee", split_k)
    check_scan(T, B, H, "fp32", torch.float32, device, reverse, with_lengths, nonlinearity, config)


@pytest.mark.parametrize("which", ["out", "h_n"])
@pytest.mark.parametrize("H", [pytest.param(20, id="single-H20"), pytest.param(200, id="split-H200")])
def test_gradient_through_one_output_only(which, H, device, poison):
    torch.set_float32_matmul_precision("highest")
    T, B = 5, 3
    xs = [torch.randn(T, B, H, device=device), torch.randn(H, H, device=device) / H**0.5, torch.randn(B, H)]
    xs = [x.to(device).requires_grad_() for x in xs]
    lengths = torch.tensor([5, 0, 3], device=device)
    out, hn = rnn_scan(*xs, lengths=lengths, reverse=True, backend="triton")
    (out.sum() if which == "out" else hn.sum()).backward()
    dout = torch.ones_like(out) if which == "out" else torch.zeros_like(out)
    dhn = torch.ones_like(hn) if which == "h_n" else torch.zeros_like(hn)
    _, _, rgrads = nn_rnn_reference(*xs, lengths, True, "tanh", dout, dhn)
    for x, g in zip(xs, rgrads, strict=True):
        assert rel_err(x.grad, g) <= TOL["fp32"]["bwd"]


@pytest.mark.parametrize(
    "change,err,match",
    [
        pytest.param(dict(lengths=torch.tensor([1, 2])), ValueError, r"^lengths: .*\(B,\) = \(3,\)", id="len-shape"),
        pytest.param(dict(lengths=torch.tensor([1.0, 2, 3])), TypeError, "^lengths: .*integer", id="len-float"),
        pytest.param(dict(lengths=torch.tensor([1, 6, 3])), ValueError, r"^lengths: .*= \[0, 5\]", id="len-over"),
        pytest.param(dict(lengths=torch.tensor([1, -1, 3])), ValueError, r"^lengths: .*got -1\.\.3", id="len-neg"),
        pytest.param(dict(lengths=torch.tensor([[1, 2, 3]])), ValueError, r"^lengths: expected shape", id="len-rank"),
        pytest.param(dict(nonlinearity="gelu"), ValueError, "^nonlinearity: expected 'tanh' or 'relu'", id="act"),
        pytest.param(dict(weight_hh=torch.zeros(8, 7)), ValueError, r"^weight_hh: expected shape \(H, H\)", id="w"),
        pytest.param(dict(h0=torch.zeros(3, 8).double()), TypeError, "^h0: expected dtype", id="h0-dtype"),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_argument(change, err, match, monkeypatch):
    import fused_rnn.launch

    def boom(*args, **kwargs):
        raise AssertionError("a kernel was launched")

    monkeypatch.setattr(fused_rnn.launch, "forward", boom)
    args = dict(u=torch.randn(5, 3, 8), weight_hh=torch.randn(8, 8), h0=None) | change
    with pytest.raises(err, match=match):
        rnn_scan(**args, backend="triton")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", ["single", "split"])
def test_blocks_stop_at_their_longest_row(mode, reverse, device, poison):
    """Sorted lengths (a packed batch's order): later 16-row blocks end early and skip their padded steps."""
    torch.set_float32_matmul_precision("highest")
    T, B, H = 9, 40, 20
    lengths = torch.linspace(T, 0, B).round().long().to(device)  # blocks' longest rows: 9, 6, 2
    config = split_config(H, "ieee", split_k=True) if mode == "split" else None
    check_lengths = lengths.clone()
    u = torch.randn(T, B, H, device=device, requires_grad=True)
    w = (torch.randn(H, H, device=device) / H**0.5).requires_grad_()
    h0 = torch.randn(B, H, device=device, requires_grad=True)
    out, hn = rnn_scan(u, w, h0, lengths=lengths, reverse=reverse, backend="triton", config=config)
    dout, dhn = torch.randn_like(out), torch.randn_like(hn)
    ((out * dout).sum() + (hn * dhn).sum()).backward()
    rout, rhn, rgrads = nn_rnn_reference(u, w, h0, check_lengths, reverse, "tanh", dout, dhn)
    assert rel_err(out, rout) <= TOL["fp32"]["fwd"] and rel_err(hn, rhn) <= TOL["fp32"]["fwd"]
    for x, g in zip((u, w, h0), rgrads, strict=True):
        assert rel_err(x.grad, g) <= TOL["fp32"]["bwd"]
