"""FusedLSTM and FusedGRU are nn.LSTM and nn.GRU to their callers (PyTorch's own op underneath, for now).

Every expectation comes from running the real torch module on the same arguments and inputs: the same exception
types and messages, the same parameters for a seed, bit-equal outputs and gradients, and more than nn.LSTM /
nn.GRU can do: `torch.compile(fullgraph=True)`.
"""

import copy
import io
import pickle
import warnings

import pytest
import torch
from helpers import outcome
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from fused_rnn import FusedGRU, FusedLSTM, FusedRNN, convert_rnns

PAIRS = [pytest.param(nn.LSTM, FusedLSTM, id="LSTM"), pytest.param(nn.GRU, FusedGRU, id="GRU")]


BAD = [
    dict(bias=0),
    dict(bias="yes"),
    dict(batch_first=1),
    dict(input_size=0),
    dict(input_size=2.5),
    dict(input_size=True),
    dict(hidden_size=0),
    dict(hidden_size=4.0),
    dict(num_layers=0),
    dict(num_layers="2"),
    dict(dropout=-0.1),
    dict(dropout=True),
    dict(dropout=0.5),  # a warning with one layer
    dict(dropout=0.5, num_layers=2),
    dict(proj_size=0),
    dict(proj_size=2),
    dict(proj_size=-1),
    dict(proj_size=4),  # not smaller than hidden_size
    dict(proj_size=9),
    dict(proj_size=2, hidden_size=0),
    dict(bias=0, input_size=0),
    dict(input_size=0, hidden_size=0, dropout=3),
]


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("kw", BAD, ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_constructor_raises_and_warns_as_torch(ref_cls, cls, kw):
    args = dict(input_size=3, hidden_size=4) | kw
    want, want_warnings = outcome(lambda: ref_cls(**args))
    got, got_warnings = outcome(lambda: cls(**args))
    assert got == want
    assert got_warnings == want_warnings


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_positional_arguments_parameters_and_repr_as_torch(ref_cls, cls):
    extra = (7,) if ref_cls is nn.LSTM else ()  # proj_size, LSTM only: after bidirectional
    args = (5, 8, 2, False, True, 0.25, True, *extra)
    torch.manual_seed(11)
    ref = ref_cls(*args)
    torch.manual_seed(11)
    got = cls(*args)
    assert list(got.state_dict()) == list(ref.state_dict())
    for (name, a), b in zip(ref.state_dict().items(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert got._flat_weights_names == ref._flat_weights_names and got._all_weights == ref._all_weights
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):  # fmt: skip
        assert getattr(got, attr) == getattr(ref, attr), attr
    assert repr(got) == "Fused" + repr(ref)
    assert repr(cls(3, 4, backend="torch")).endswith("backend='torch')")
    # state_dict both ways
    other = ref_cls(*args)
    other.load_state_dict(got.state_dict())
    got.load_state_dict(ref_cls(*args).state_dict())
    assert all(torch.equal(a, b) for a, b in zip(got._flat_weights, got.parameters(), strict=False))


def _inputs(kind, ref, B=3, T=6, I=5):  # noqa: E741
    x = torch.randn(B, T, I) if ref.batch_first else torch.randn(T, B, I)
    D = 2 if ref.bidirectional else 1
    h_out = ref.proj_size or ref.hidden_size
    h0 = torch.randn(D * ref.num_layers, B, h_out, requires_grad=True)
    c0 = torch.randn(D * ref.num_layers, B, ref.hidden_size, requires_grad=True)
    hx = (h0, c0) if isinstance(ref, nn.LSTM) else h0
    if kind == "unbatched":
        x = x[0] if ref.batch_first else x[:, 0]
        hx = (h0[:, 0].detach(), c0[:, 0].detach()) if isinstance(ref, nn.LSTM) else h0[:, 0].detach()
    if kind in ("packed", "unsorted"):
        lengths = torch.tensor([6, 4, 1]) if kind == "packed" else torch.tensor([2, 6, 3])
        x = pack_padded_sequence(x, lengths, batch_first=ref.batch_first, enforce_sorted=kind == "packed")
    if kind == "no_hx":
        hx = None
    return x, hx


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "data") and hasattr(out, "batch_sizes"):
        return [out.data]
    return [t for o in out for t in _flat(o)]


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("kind", ["batched", "unbatched", "packed", "unsorted", "no_hx"])
@pytest.mark.parametrize("shape", ["plain", "deep", "proj"])
def test_forward_and_gradients_bit_equal_to_torch(ref_cls, cls, kind, shape):
    if shape == "proj" and ref_cls is nn.GRU:
        pytest.skip("proj_size is LSTM's alone")
    kw = {"plain": dict(), "deep": dict(num_layers=2, bidirectional=True, dropout=0.3, batch_first=True),
          "proj": dict(num_layers=2, proj_size=3)}[shape]  # fmt: skip
    ref = ref_cls(5, 4, **kw).double()
    got = cls(5, 4, **kw).double()
    got.load_state_dict(ref.state_dict())
    x, hx = _inputs(kind, ref)
    x = x.double() if isinstance(x, torch.Tensor) else x._replace(data=x.data.double())
    if hx is not None:
        hx = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()
    seed = torch.seed()
    torch.manual_seed(seed)  # dropout draws the same masks
    want = ref(x, hx)
    torch.manual_seed(seed)
    out = got(x, hx)
    assert type(out[0]) is type(want[0]) and type(out[1]) is type(want[1])
    for a, b in zip(_flat(out), _flat(want), strict=True):
        assert torch.equal(a, b)
    loss_w = sum((t * torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape).sin()).sum() for t in _flat(want))
    loss_g = sum((t * torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape).sin()).sum() for t in _flat(out))
    leaves = [p for p in ref.parameters()]
    g_w = torch.autograd.grad(loss_w, leaves, allow_unused=True)
    g_g = torch.autograd.grad(loss_g, list(got.parameters()), allow_unused=True)
    for a, b in zip(g_w, g_g, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_bad_calls_raise_as_torch(ref_cls, cls):
    ref, got = ref_cls(5, 4, num_layers=2), cls(5, 4, num_layers=2)
    got.load_state_dict(ref.state_dict())
    lstm = ref_cls is nn.LSTM
    h = torch.randn(2, 3, 4)
    cases = [
        (torch.randn(6, 3, 5), (torch.randn(2, 2, 4), h) if lstm else torch.randn(2, 2, 4)),  # batch mismatch
        (torch.randn(6, 3, 5), (h, torch.randn(1, 3, 4)) if lstm else torch.randn(1, 3, 4)),
        (torch.randn(6, 3, 5), (h[0], h) if lstm else h[0]),  # 2-D hx with batched input
        (torch.randn(6, 5), (h, h) if lstm else h),  # 3-D hx with unbatched input
        (torch.randn(6, 3, 7), None),  # input size
        (torch.randn(6, 3, 5, 1), None),  # 4-D
        (torch.randn(0, 3, 5), None),  # T = 0
        (torch.randn(6, 3, 5, dtype=torch.float64), None),  # dtype
    ]
    for x, hx in cases:
        assert outcome(lambda x=x, hx=hx: got(x, hx)) == outcome(lambda x=x, hx=hx: ref(x, hx))


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_compiles_whole_where_torch_cannot(ref_cls, cls, backend):
    """dynamo graph-breaks on every nn.LSTM / nn.GRU; the fused modules compile with fullgraph=True, forward and
    backward, on PyTorch's op and on the kernels (nn's forward code with the fused scans), and agree with eager."""
    kw = dict(num_layers=2, batch_first=True)
    if ref_cls is nn.LSTM and backend == "torch":
        kw["proj_size"] = 3
    m = cls(5, 4, backend=backend, **kw)
    x = torch.randn(3, 6, 5, requires_grad=True)
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    for a, b in zip(_flat(compiled), _flat(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    (g_c,) = torch.autograd.grad(sum(t.sum() for t in _flat(compiled)), x)
    (g_e,) = torch.autograd.grad(sum(t.sum() for t in _flat(eager)), x)
    torch.testing.assert_close(g_c, g_e, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="(?i)rnn|graph break|unsupported"):
        torch.compile(ref_cls(5, 4, **kw), fullgraph=True, backend="eager")(x)


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_copies_pickles_dtype_moves_and_scripting(ref_cls, cls):
    m = cls(5, 4, num_layers=2)
    x = torch.randn(6, 3, 5)
    want = m(x)[0]
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert torch.equal(other(x)[0], want)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x)[0], want)
    d = copy.deepcopy(m).double()
    assert all(w.dtype == torch.float64 for w in d._flat_weights)
    assert d(x.double())[0].dtype == torch.float64

    # TorchScript (deprecated) compiles the nn module in its place, with the same parameters: whatever
    # scripting does for nn.LSTM / nn.GRU in this torch (in 2.13 the scripted module has no forward), it does here
    def script(mod):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.script(mod)(x)[0]

    ref = ref_cls(5, 4, num_layers=2)
    ref.load_state_dict(m.state_dict())
    assert outcome(lambda: script(m))[0][0] == outcome(lambda: script(ref))[0][0]
    prepared = m.__prepare_scriptable__()
    assert type(prepared) is ref_cls
    assert all(a is b for a, b in zip(prepared._flat_weights, m._flat_weights, strict=True))


def test_backend_checks():
    with pytest.raises(ValueError, match="backend: 'triton' does not run proj_size > 0 yet"):
        FusedLSTM(3, 4, proj_size=2, backend="triton")
    for cls in (FusedLSTM, FusedGRU):
        with pytest.raises(ValueError, match="backend: expected one of"):
            cls(3, 4, backend="cuda")
        assert cls(3, 4, backend="triton").backend == "triton"


def test_convert_rnns_converts_lstm_and_gru_too():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(5, 4)
            self.lstm = nn.LSTM(4, 6, proj_size=2, bidirectional=True)
            self.gru = nn.GRU(4, 3, num_layers=2, dropout=0.1)

        def forward(self, x):
            a = self.rnn(x)[0]
            return self.lstm(a)[0].sum() + self.gru(a)[0].sum()

    model = Model().eval()
    x = torch.randn(7, 2, 5)
    want = model(x)
    params = {n: id(p) for n, p in model.named_parameters()}
    with pytest.warns(UserWarning, match="does not run LSTM's proj_size yet"):
        convert_rnns(model, backend="triton")
    assert (model.rnn.backend, model.lstm.backend, model.gru.backend) == ("triton", "auto", "triton")
    assert (type(model.rnn), type(model.lstm), type(model.gru)) == (FusedRNN, FusedLSTM, FusedGRU)
    assert {n: id(p) for n, p in model.named_parameters()} == params and not model.gru.training
    assert model.lstm.proj_size == 2 and model.gru.dropout == 0.1
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)  # the RNN and the GRU on the kernels


KINDS = ["batched", "unbatched", "packed", "unsorted", "no_hx"]


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["plain", "deep", "split"])
def test_the_kernels_match_float64_torch(ref_cls, cls, kind, shape, poison):
    """backend="triton" (the interpreter here): outputs and every gradient against float64 nn.LSTM / nn.GRU."""
    from helpers import TOL, rel_err

    kw = {"plain": dict(), "deep": dict(num_layers=2, bidirectional=True, batch_first=True),
          "split": dict(hidden_size=100)}[shape]  # fmt: skip
    H = kw.pop("hidden_size", 20)  # 100: the split kernels
    ref = ref_cls(5, H, **kw).double()
    got = cls(5, H, backend="triton", **kw)
    got.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x, hx = _inputs(kind, ref)
    x64 = x.double() if isinstance(x, torch.Tensor) else x._replace(data=x.data.double())
    x32 = x.float() if isinstance(x, torch.Tensor) else x._replace(data=x.data.float())
    hx64 = None if hx is None else (tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double())
    hx32 = None if hx is None else (tuple(h.float() for h in hx) if isinstance(hx, tuple) else hx.float())
    want, out = ref(x64, hx64), got(x32, hx32)
    assert type(out[0]) is type(want[0])
    for a, b in zip(_flat(out), _flat(want), strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["fwd"]
    loss = lambda o: sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)).sum()  # noqa: E731
                         for t in _flat(o))  # fmt: skip
    g_w = torch.autograd.grad(loss(want), list(ref.parameters()))
    g_g = torch.autograd.grad(loss(out), list(got.parameters()))
    for (name, _), a, b in zip(ref.named_parameters(), g_g, g_w, strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["bwd"], name


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_the_kernel_path_raises_as_torch(ref_cls, cls):
    ref, got = ref_cls(5, 4, num_layers=2), cls(5, 4, num_layers=2, backend="triton")
    got.load_state_dict(ref.state_dict())
    lstm = ref_cls is nn.LSTM
    h = torch.randn(2, 3, 4)
    for x, hx in [
        (torch.randn(6, 3, 5), (torch.randn(2, 2, 4), h) if lstm else torch.randn(2, 2, 4)),
        (torch.randn(6, 5), (h, h) if lstm else h),
        (torch.randn(6, 3, 7), None),
        (torch.randn(0, 3, 5), None),  # T = 0
    ]:
        assert outcome(lambda x=x, hx=hx: got(x, hx)) == outcome(lambda x=x, hx=hx: ref(x, hx))


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_the_kernels_under_autocast_run_in_torchs_dtype(ref_cls, cls, backend):
    """CPU autocast runs nn.LSTM in bfloat16 and nn.GRU in float32; each module does as its nn twin."""
    ref, m = ref_cls(3, 8), cls(3, 8, backend=backend)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = ref(x), m(x)
    for a, b in zip(_flat(got), _flat(want), strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.02)


def test_gru_positional_arguments_as_torch():
    args = (3, 4, 1, True, False, 0.0, False, 0, None, torch.float64)  # proj_size is nn.GRU's 8th, then device, dtype
    assert FusedGRU(*args).weight_hh_l0.dtype == nn.GRU(*args).weight_hh_l0.dtype == torch.float64
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        FusedGRU(3, 4, 1, True, False, 0.0, False, 2)


@pytest.mark.parametrize("ref_cls, cls", PAIRS)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_export_and_jit_trace_as_torch(ref_cls, cls, backend, tmp_path):
    """torch.export and torch.jit.trace record the module (the fused op in the graph on the kernels) and the
    result runs other inputs as nn's does, with gradients through the trace."""
    from helpers import TOL, rel_err

    ref = ref_cls(3, 8, num_layers=2, bidirectional=True)
    model = cls(3, 8, num_layers=2, bidirectional=True, backend=backend)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    ep = torch.export.export(model, (x,))
    if backend == "triton":
        assert "fused_rnn.gated_scan" in str(ep.graph)
    for a, b in zip(_flat(ep.module()(x)), _flat(ref(x)), strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["fwd"]
    traced = torch.jit.trace(model, torch.randn(3, 2, 3), check_trace=False)
    x = torch.randn(6, 5, 3, requires_grad=True)
    got, want = traced(x), ref(x)
    for a, b in zip(_flat(got), _flat(want), strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["fwd"]
    g = torch.autograd.grad(sum(t.sum() for t in _flat(got)), [x, *traced.parameters()])
    w = torch.autograd.grad(sum(t.sum() for t in _flat(want)), [x, *ref.parameters()])
    assert all(rel_err(a, b) <= TOL["fp32"]["bwd"] for a, b in zip(g, w, strict=True))
    torch.jit.save(traced, tmp_path / "m.pt")
    assert torch.equal(_flat(torch.jit.load(tmp_path / "m.pt")(x))[0], _flat(got)[0])
