"""The LSTM / GRU kernels (`lstm_scan`, `gru_scan`, backend="triton"; the interpreter on CPU) against float64:
the plain-PyTorch reference cell and the real nn.LSTM / nn.GRU, outputs and every gradient, with ragged lengths,
reverse, awkward shapes and NaN-poisoned outputs."""

import pytest
import torch
import torch.nn.functional as F
from helpers import TOL, rel_err
from torch import nn

from fused_rnn import launch
from fused_rnn.gated_ops import gated_launch, gru_scan, lstm_scan, max_hidden

#: (T, B, H): one program at H <= 32; H = 40 (float32 IEEE has no one-program build at BH 64) and 100 run split
SHAPES = [(1, 1, 20), (63, 3, 20), (7, 17, 32), (5, 2, 1), (4, 1, 40), (9, 17, 100)]


def _inputs(cell, T, B, H, device, dtype=torch.float64):
    G = 4 if cell == "lstm" else 3
    u = torch.randn(T, B, G * H, device=device, dtype=dtype)
    w = torch.randn(G * H, H, device=device, dtype=dtype) / H**0.5
    return [u, w, torch.randn(B, H, device=device, dtype=dtype), torch.randn(B, H, device=device, dtype=dtype),
            torch.randn(H, device=device, dtype=dtype)]  # fmt: skip


def _run(cell, args, lengths, reverse, backend):
    u, w, h0, c0, b_hn = args
    if cell == "lstm":
        return lstm_scan(u, w, h0, c0, lengths=lengths, reverse=reverse, backend=backend)
    return gru_scan(u, w, b_hn, h0, lengths=lengths, reverse=reverse, backend=backend)


def _loss(outs):
    """Weights every output element differently, so a swapped or misplaced gradient cannot cancel."""
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype, device=t.device).reshape(t.shape)).sum()
               for t in outs)  # fmt: skip


def _lengths(B, T, device):
    if B == 1:
        return torch.tensor([max(1, T - 1)], device=device)
    return torch.randint(0, T + 1, (B,), device=device)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T, B, H", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_kernels_match_float64_reference(cell, T, B, H, ragged, reverse, device, poison):
    ref = _inputs(cell, T, B, H, device)
    lengths = _lengths(B, T, device) if ragged else None
    got_in = [x.float().requires_grad_() for x in ref]
    ref_in = [x.clone().requires_grad_() for x in ref]
    got = _run(cell, got_in, lengths, reverse, "triton")
    want = _run(cell, ref_in, lengths, reverse, "torch")
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["fwd"] or b.norm() == 0 and a.abs().max() == 0
    _loss(got).backward()
    _loss(want).backward()
    names = ["u", "weight_hh", "h0", "c0", "b_hn"]
    for name, a, b in zip(names, got_in, ref_in, strict=True):
        if b.grad is None:  # c0 for GRU, b_hn for LSTM
            assert a.grad is None, name
            continue
        assert rel_err(a.grad, b.grad) <= TOL["fp32"]["bwd"], name


def test_the_shapes_cover_both_modes():
    modes = {(H, gated_launch(H, torch.float32, "ieee", None).mode) for _, _, H in SHAPES}
    assert {(20, "single"), (40, "split"), (100, "split")} <= modes


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("H", [32, 100], ids=["single", "split"])
def test_half_precision_within_the_table(cell, dtype, H, device):
    ref = _inputs(cell, 9, 5, H, device)
    got_in = [x.to(dtype).requires_grad_() for x in ref]
    # the reference runs on the same rounded inputs, in float64
    ref_in = [x.to(dtype).double().requires_grad_() for x in ref]
    got = _run(cell, got_in, None, False, "triton")
    want = _run(cell, ref_in, None, False, "torch")
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and rel_err(a, b) <= TOL[dtype]["fwd"]
    _loss([t.float() for t in got]).backward()
    _loss(want).backward()
    for a, b in zip(got_in, ref_in, strict=True):
        if b.grad is not None:
            assert rel_err(a.grad, b.grad) <= TOL[dtype]["bwd"]


class _Layer(nn.Module):
    """One layer and direction of nn.LSTM / nn.GRU through lstm_scan / gru_scan: the input half as one GEMM."""

    def __init__(self, mod, reverse=False):
        super().__init__()
        self.mod, self.reverse = mod, reverse

    def forward(self, x, hx, backend):
        sfx = "_l0_reverse" if self.reverse else "_l0"
        w_ih, w_hh = getattr(self.mod, "weight_ih" + sfx), getattr(self.mod, "weight_hh" + sfx)
        b_ih, b_hh = getattr(self.mod, "bias_ih" + sfx), getattr(self.mod, "bias_hh" + sfx)
        H = w_hh.shape[1]
        if isinstance(self.mod, nn.LSTM):
            u = F.linear(x, w_ih, b_ih + b_hh)
            return lstm_scan(u, w_hh, hx[0], hx[1], reverse=self.reverse, backend=backend)
        # GRU: b_hr, b_hz fold into u; b_hn stays inside the reset product
        u = F.linear(x, w_ih, b_ih + torch.cat([b_hh[: 2 * H], torch.zeros_like(b_hh[2 * H :])]))
        return gru_scan(u, w_hh, b_hh[2 * H :], hx, reverse=self.reverse, backend=backend)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_a_layer_matches_nn_in_float64(kind, reverse, device):
    """PyTorch's own module is the truth: output, h_n, c_n and the gradient of every parameter and state."""
    T, B, I, H = 11, 4, 6, 20  # noqa: E741
    ref = kind(I, H, bidirectional=reverse).double().to(device)
    x = torch.randn(T, B, I, device=device, dtype=torch.float64)
    h0 = torch.randn(2 if reverse else 1, B, H, device=device, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn_like(h0, requires_grad=True)
    hx = (h0, c0) if kind is nn.LSTM else h0
    out, hn = ref(x, hx)
    d = 1 if reverse else 0
    want = [out[..., d * H : (d + 1) * H]] + ([hn[0][d], hn[1][d]] if kind is nn.LSTM else [hn[d]])
    got_mod = kind(I, H, bidirectional=reverse).to(device)
    got_mod.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    h0f = h0.detach()[d].float().requires_grad_()
    c0f = c0.detach()[d].float().requires_grad_()
    got = _Layer(got_mod, reverse)(x.float(), (h0f, c0f) if kind is nn.LSTM else h0f, "triton")
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["fwd"]
    _loss(got).backward()
    _loss(want).backward()
    sfx = "_l0_reverse" if reverse else "_l0"
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        a, b = getattr(got_mod, name + sfx).grad, getattr(ref, name + sfx).grad
        assert rel_err(a, b) <= TOL["fp32"]["bwd"], name
    assert rel_err(h0f.grad, h0.grad[d]) <= TOL["fp32"]["bwd"]
    if kind is nn.LSTM:
        assert rel_err(c0f.grad, c0.grad[d]) <= TOL["fp32"]["bwd"]


def test_the_kernels_ran_and_auto_keeps_the_torch_path(device):
    args = [x.float() for x in _inputs("lstm", 3, 2, 16, device)]
    before = dict(launch.GATED_CALLS)
    lstm_scan(*args[:4], backend="triton")
    assert launch.GATED_CALLS["forward"] == before["forward"] + 1
    lstm_scan(*args[:4])  # "auto": torch until the compile gate and a GPU have seen the kernels
    assert launch.GATED_CALLS["forward"] == before["forward"] + 1


_TOP = max_hidden(torch.float32, "ieee", None)  # the interpreter takes sm_90's table


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: lstm_scan(torch.randn(3, 2, 10, device=d), torch.randn(10, 2, device=d)), "4 \\* H"),
        (lambda d: lstm_scan(torch.randn(3, 2, 8, device=d), torch.randn(8, 3, device=d)), "weight_hh: expected"),
        (lambda d: gru_scan(torch.randn(3, 2, 6, device=d), torch.randn(6, 2, device=d), torch.randn(3, device=d)),
         "b_hn: expected shape"),
        (lambda d: lstm_scan(torch.randn(3, 2, 8, device=d), torch.randn(8, 2, device=d), torch.randn(3, 2, device=d)),
         "h0: expected shape"),
        (lambda d: lstm_scan(torch.randn(3, 2, 8, device=d), torch.randn(8, 2, device=d, dtype=torch.float64)),
         "weight_hh: expected torch.float32"),
        (lambda d: lstm_scan(torch.randn(3, 2, 8, device=d), torch.randn(8, 2, device=d), backend="cuda"),
         "backend: expected one of"),
        (lambda d: lstm_scan(torch.zeros(2, 1, 4 * (_TOP + 1), device=d),
                             torch.zeros(4 * (_TOP + 1), _TOP + 1, device=d), backend="triton"),
         "over the gated kernels' limit"),
        (lambda d: lstm_scan(torch.randn(2, 1, 8, device=d, dtype=torch.float64),
                             torch.randn(8, 2, device=d, dtype=torch.float64), backend="triton"),
         "float64 runs on the torch path"),
        (lambda d: lstm_scan(torch.randn(3, 2, 8, device=d), torch.randn(8, 2, device=d),
                             lengths=torch.tensor([4, 1], device=d)), "lengths: every length"),
    ],
)  # fmt: skip
def test_bad_input_is_named(call, match, device):
    with pytest.raises((ValueError, TypeError), match=match):
        call(device)


def test_t0_and_empty_batch(device):
    for T, B in ((0, 2), (3, 0)):
        u, w, h0, c0, b_hn = [x.float() for x in _inputs("gru", max(T, 1), max(B, 1), 8, device)]
        u = torch.randn(T, B, 24, device=device)
        h0 = torch.randn(B, 8, device=device)
        hs, hn = gru_scan(u, w, b_hn, h0, backend="triton")
        assert hs.shape == (T, B, 8) and torch.equal(hn, h0)


@pytest.mark.parametrize("cell", [0, 1], ids=["lstm", "gru"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_opcheck(cell, ragged, device):
    """Schemas, fake kernels, autograd registration and dispatch as torch.library checks them."""
    name = "lstm" if cell == 0 else "gru"
    u, w, h0, c0, b_hn = [x.float() for x in _inputs(name, 4, 3, 16, device)]
    lengths = torch.tensor([4, 1, 3], device=device) if ragged else None
    args = (cell, u.requires_grad_(), w.requires_grad_(), None if cell == 0 else b_hn.requires_grad_(),
            h0.requires_grad_(), c0.requires_grad_() if cell == 0 else None, lengths, True)  # fmt: skip
    torch.library.opcheck(torch.ops.fused_rnn.gated_scan.default, args)
    hs, cs, gates, _, _ = torch.ops.fused_rnn.gated_scan(*[a.detach() if torch.is_tensor(a) else a for a in args])
    bargs = (
        cell,
        w.detach(),
        hs,
        cs,
        gates,
        h0.detach(),
        c0.detach() if cell == 0 else None,
        torch.randn_like(hs),
        torch.randn_like(h0),
        torch.randn_like(h0) if cell == 0 else None,
        lengths,
        True,
    )
    torch.library.opcheck(torch.ops.fused_rnn.gated_scan_backward.default, bargs)  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_compile_fullgraph_and_meta(cell, device):
    args = [x.float().requires_grad_() for x in _inputs(cell, 5, 2, 16, device)]

    def f(u, w, h0, c0, b_hn):
        return _loss(_run(cell, (u, w, h0, c0, b_hn), None, False, "triton"))

    eager = f(*args)
    g_eager = torch.autograd.grad(eager, args[:3])
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*args)
    g_comp = torch.autograd.grad(compiled, args[:3])
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_comp, g_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    meta = [x.detach().to("meta") for x in args]
    cellno = 0 if cell == "lstm" else 1
    out = torch.ops.fused_rnn.gated_scan(cellno, meta[0], meta[1], None if cellno == 0 else meta[4], meta[2],
                                         meta[3] if cellno == 0 else None, None, False)  # fmt: skip
    assert out[0].shape == (5, 2, 16) and out[2].shape == (5, 2, 64) and out[2].dtype == torch.float32


def test_readme_limits_table_is_the_gates():
    """The README's table of sizes per card and dtype is generated from the gate-checked tables, not typed."""
    import re
    from pathlib import Path

    from fused_rnn.gated_ops import limits_table

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- gated-limits -->\n(.*?)\n<!-- /gated-limits -->", readme, re.S)
    assert found and found.group(1) == limits_table()
