"""FusedRNN is nn.RNN to its callers: constructor checks, errors, internals read by outside code, repr, copies.

Every expectation here comes from running the real `torch.nn.RNN` on the same arguments (same
exception type and message, same attributes), not from hard-coded text.
"""

import copy
import io
import pickle
import warnings

import pytest
import torch
from helpers import TOL, outcome, rel_err
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence

from fused_rnn import FusedRNN

BACKENDS = ["triton", "torch"]


BAD_CONSTRUCTOR = [
    dict(bias=0),
    dict(bias=1),
    dict(bias="yes"),
    dict(bias=None),
    dict(batch_first=0),
    dict(batch_first=1),
    dict(batch_first="no"),
    dict(bidirectional=1),  # nn.RNN accepts any truthy value here (it has no bool check for it)
    dict(bidirectional="yes"),
    dict(input_size=0),
    dict(input_size=-1),
    dict(input_size=2.5),
    dict(input_size="3"),
    dict(input_size=True),
    dict(hidden_size=0),
    dict(hidden_size=-3),
    dict(hidden_size=4.0),
    dict(num_layers=0),
    dict(num_layers=-1),
    dict(num_layers=2.0),
    dict(num_layers="2"),
    dict(dropout=-0.1),
    dict(dropout=1.5),
    dict(dropout=True),
    dict(dropout="a"),
    dict(dropout=None),
    dict(dropout=0.5),  # a warning with one layer
    dict(dropout=0.5, num_layers=2),
    dict(nonlinearity="gelu"),
    dict(nonlinearity="relu"),
    dict(proj_size=0),
    dict(proj_size=2),
    dict(bias=0, input_size=0),  # two faults: the first nn.RNN checks wins
    dict(input_size=0, hidden_size=0, dropout=3),
]


@pytest.mark.parametrize("kw", BAD_CONSTRUCTOR, ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_constructor_raises_and_warns_as_nn_rnn(kw):
    args = dict(input_size=3, hidden_size=4) | kw
    want, want_warnings = outcome(lambda: nn.RNN(**args))
    got, got_warnings = outcome(lambda: FusedRNN(**args))
    assert got == want
    assert got_warnings == want_warnings
    if want[0] == "ok":  # accepted: the same attributes and repr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, model = nn.RNN(**args), FusedRNN(**args)
        for name in ("mode", "nonlinearity", "input_size", "hidden_size", "num_layers", "bias", "batch_first"):
            assert getattr(model, name) == getattr(ref, name), name
        for name in ("dropout", "bidirectional", "proj_size", "_flat_weights_names", "_all_weights"):
            assert getattr(model, name) == getattr(ref, name), name
        assert repr(model) == repr(ref).replace("RNN(", "FusedRNN(", 1)


def test_positional_arguments_as_nn_rnn():
    args = (5, 4, 2, "relu", False, True, 0.25, True)
    ref, model = nn.RNN(*args), FusedRNN(*args)
    for name in ("nonlinearity", "mode", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
        assert getattr(model, name) == getattr(ref, name)
    assert repr(model) == repr(ref).replace("RNN(", "FusedRNN(", 1)


def test_same_initial_parameters_as_nn_rnn_for_a_seed():
    for kw in (dict(num_layers=2, bidirectional=True), dict(bias=False)):
        torch.manual_seed(11)
        ref = nn.RNN(3, 5, **kw)
        torch.manual_seed(11)
        model = FusedRNN(3, 5, **kw)
        names = [n for n, _ in ref.named_parameters()]
        assert names == [n for n, _ in model.named_parameters()]
        for (_, a), (_, b) in zip(ref.named_parameters(), model.named_parameters(), strict=True):
            assert torch.equal(a, b)


def test_repr_as_nn_rnn_over_arguments():
    for kw in (
        {},
        dict(num_layers=3),
        dict(nonlinearity="relu"),  # nn.RNN's repr leaves nonlinearity out
        dict(bias=False, batch_first=True),
        dict(dropout=0.5, num_layers=2, bidirectional=True),
    ):
        assert repr(FusedRNN(7, 9, **kw)) == repr(nn.RNN(7, 9, **kw)).replace("RNN(", "FusedRNN(", 1)
    assert repr(FusedRNN(7, 9, backend="torch")) == "FusedRNN(7, 9, backend='torch')"


def _pair(backend, device, **kw):
    cfg = dict(input_size=3, hidden_size=5) | kw
    ref = nn.RNN(**cfg).to(device)
    model = FusedRNN(**cfg, backend=backend).to(device)
    model.load_state_dict(ref.state_dict())
    return ref, model


def _bad_calls(device):
    r = lambda *s, dtype=torch.float32: torch.randn(*s, device=device, dtype=dtype)  # noqa: E731
    return {
        "T=0": lambda m: m(r(0, 2, 3)),
        "T=0 unbatched": lambda m: m(r(0, 3)),
        "T=0 with hx": lambda m: m(r(0, 2, 3), r(2, 2, 5)),
        "input size": lambda m: m(r(4, 2, 6)),
        "4-D": lambda m: m(r(4, 2, 3, 1)),
        "1-D": lambda m: m(r(3)),
        "hx 2-D for batched": lambda m: m(r(4, 2, 3), r(2, 5)),
        "hx 3-D for unbatched": lambda m: m(r(4, 3), r(2, 1, 5)),
        "hx shape": lambda m: m(r(4, 2, 3), r(2, 3, 5)),
        "hx shape unbatched": lambda m: m(r(4, 3), r(1, 5)),
        "hx hidden": lambda m: m(r(4, 2, 3), r(2, 2, 4)),
        "input dtype": lambda m: m(r(4, 2, 3, dtype=torch.float64)),
        "hx dtype": lambda m: m(r(4, 2, 3), r(2, 2, 5, dtype=torch.float64)),
        "int input": lambda m: m(torch.ones(4, 2, 3, dtype=torch.int32, device=device)),
        "hx on meta": lambda m: m(r(4, 2, 3), torch.empty(2, 2, 5, device="meta")),
        "packed hx": lambda m: m(pack_padded_sequence(r(4, 2, 3), torch.tensor([4, 2])), r(2, 3, 5)),
        "packed input size": lambda m: m(pack_padded_sequence(r(4, 2, 2), torch.tensor([4, 2]))),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(_bad_calls("cpu")))
def test_bad_input_raises_as_nn_rnn(case, backend, device):
    ref, model = _pair(backend, device, num_layers=2)
    call = _bad_calls(device)[case]
    want, _ = outcome(lambda: call(ref))
    got, _ = outcome(lambda: call(model))
    assert want[0] != "ok", want
    assert got == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_as_nn_rnn(backend, device):
    ref, model = _pair(backend, device, bidirectional=True)
    for x in (torch.randn(4, 0, 3, device=device),):
        (out, hn), (rout, rhn) = model(x), ref(x)
        assert out.shape == rout.shape and hn.shape == rhn.shape


def _assert_flat_weights_live(model):
    """_flat_weights holds exactly the module's current weights, in _flat_weights_names order."""
    assert len(model._flat_weights) == len(model._flat_weights_names)
    for w, name in zip(model._flat_weights, model._flat_weights_names, strict=True):
        assert w is getattr(model, name), name
    assert [[getattr(model, n) for n in names] for names in model._all_weights] == model.all_weights


def test_flat_weights_names_and_structure_as_nn_rnn():
    for kw in (dict(num_layers=2, bidirectional=True), dict(bias=False, num_layers=3)):
        ref, model = nn.RNN(3, 4, **kw), FusedRNN(3, 4, **kw)
        assert model._flat_weights_names == ref._flat_weights_names
        assert model._all_weights == ref._all_weights
        assert [tuple(w.shape) for w in model._flat_weights] == [tuple(w.shape) for w in ref._flat_weights]
        assert [[tuple(w.shape) for w in ws] for ws in model.all_weights] == [
            [tuple(w.shape) for w in ws] for ws in ref.all_weights
        ]
        _assert_flat_weights_live(model)


def test_flat_weights_follow_load_state_dict_to_half_and_assignment():
    ref, model = nn.RNN(3, 4, 2), FusedRNN(3, 4, 2, backend="torch")
    model.load_state_dict(ref.state_dict())
    _assert_flat_weights_live(model)
    for a, b in zip(model._flat_weights, ref._flat_weights, strict=True):
        assert torch.equal(a, b)
    for convert in (lambda m: m.double(), lambda m: m.half(), lambda m: m.to(torch.float32), lambda m: m.float()):
        convert(model)
        _assert_flat_weights_live(model)
        assert {w.dtype for w in model._flat_weights} == {model.weight_ih_l0.dtype}
    ref.load_state_dict(model.state_dict())  # the weights after the round trip through float16
    new = nn.Parameter(torch.randn(4, 4))
    model.weight_hh_l1 = new
    assert model._flat_weights[model._flat_weights_names.index("weight_hh_l1")] is new
    _assert_flat_weights_live(model)
    x = torch.randn(5, 2, 3)
    ref.weight_hh_l1 = nn.Parameter(new.detach().clone())
    assert torch.equal(model(x)[0], ref(x)[0])  # the assigned weight is the one used


@pytest.mark.parametrize("backend", BACKENDS)
def test_old_weight_norm_as_nn_rnn(backend, device):
    ref, model = _pair(backend, device, num_layers=2)
    ref, model = ref.double() if backend == "torch" else ref, model.double() if backend == "torch" else model
    for m in (ref, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
            torch.nn.utils.weight_norm(m, "weight_hh_l0")
    assert sorted(n for n, _ in model.named_parameters()) == sorted(n for n, _ in ref.named_parameters())
    dtype = next(model.parameters()).dtype
    x = torch.randn(5, 2, 3, device=device, dtype=dtype)
    out, rout = model(x)[0], ref(x)[0]
    # weight_norm's pre-hook sets the weight as a plain attribute: _flat_weights must hold it
    idx = model._flat_weights_names.index("weight_hh_l0")
    assert model._flat_weights[idx] is model.weight_hh_l0 and not isinstance(model.weight_hh_l0, nn.Parameter)
    assert rel_err(out, rout) <= TOL["fp32"]["fwd"]
    out.square().sum().backward()
    rout.square().sum().backward()
    for name in ("weight_hh_l0_g", "weight_hh_l0_v", "weight_ih_l0"):
        assert rel_err(getattr(model, name).grad, getattr(ref, name).grad) <= TOL["fp32"]["bwd"], name
    for m in (ref, model):
        torch.nn.utils.remove_weight_norm(m, "weight_hh_l0")
    assert isinstance(model.weight_hh_l0, nn.Parameter)
    _assert_flat_weights_live(model)
    assert rel_err(model(x)[0], ref(x)[0]) <= TOL["fp32"]["fwd"]


class _Scale(nn.Module):
    def forward(self, w):
        return 0.5 * w


@pytest.mark.parametrize("backend", BACKENDS)
def test_parametrizations_as_nn_rnn(backend, device):
    ref, model = _pair(backend, device, bidirectional=True)
    for m in (ref, model):
        torch.nn.utils.parametrizations.weight_norm(m, "weight_ih_l0")
        parametrize.register_parametrization(m, "weight_hh_l0_reverse", _Scale())
    x = torch.randn(5, 2, 3, device=device)
    out, rout = model(x)[0], ref(x)[0]
    assert rel_err(out, rout) <= TOL["fp32"]["fwd"]
    idx = model._flat_weights_names.index("weight_hh_l0_reverse")
    assert torch.equal(model._flat_weights[idx], 0.5 * model.parametrizations.weight_hh_l0_reverse.original)
    out.sum().backward()
    rout.sum().backward()
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        assert rel_err(got[name].grad, p.grad) <= TOL["fp32"]["bwd"], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_call_uses_the_given_weights(backend, device):
    ref, model = _pair(backend, device)
    new = {n: torch.randn_like(p) * 0.3 for n, p in ref.named_parameters()}
    x = torch.randn(4, 2, 3, device=device)
    got = torch.func.functional_call(model, new, (x,))[0]
    want = torch.func.functional_call(ref, new, (x,))[0]
    assert rel_err(got, want) <= TOL["fp32"]["fwd"]
    assert not torch.allclose(got, model(x)[0])
    _assert_flat_weights_live(model)  # back to its own parameters


def test_flatten_parameters_keeps_everything():
    model = FusedRNN(3, 4, 2)
    x = torch.randn(4, 2, 3)
    before = model(x)[0]
    params = list(model.parameters())
    assert model.flatten_parameters() is None
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert torch.equal(model(x)[0], before)


def test_copies_pickles_and_saves_keep_flat_weights_live():
    model = FusedRNN(3, 4, 2, bidirectional=True, backend="torch")
    x = torch.randn(4, 2, 3)
    want = model(x)[0]
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.load(buf, weights_only=False)]
    for other in copies:
        _assert_flat_weights_live(other)
        assert len(other._flat_weight_refs) == len(other._flat_weights)
        assert torch.equal(other(x)[0], want)
    replica = model._replicate_for_data_parallel()
    assert replica._flat_weights is not model._flat_weights and replica._flat_weights == model._flat_weights


def test_nn_rnn_helper_methods_as_nn_rnn():
    ref, model = nn.RNN(3, 4, 2, bidirectional=True), FusedRNN(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    assert model.get_expected_hidden_size(x, None) == ref.get_expected_hidden_size(x, None)
    perm = torch.tensor([1, 0])
    h = torch.randn(4, 2, 4)
    assert torch.equal(model.permute_hidden(h, perm), ref.permute_hidden(h, perm))
    want, _ = outcome(lambda: ref.check_forward_args(x, torch.randn(4, 3, 4), None))
    got, _ = outcome(lambda: model.check_forward_args(x, torch.randn(4, 3, 4), None))
    assert got == want and want[0] is RuntimeError


def test_dynamo_refuses_nn_rnn_subclasses_and_compiles_fused_rnn():
    """Why FusedRNN does not derive from nn.RNN: a subclass cannot be compiled whole."""

    class Sub(nn.RNN):
        pass

    torch._dynamo.reset()
    x = torch.randn(4, 2, 3)
    with pytest.raises(Exception, match="(?i)rnn"):
        torch.compile(Sub(3, 4), fullgraph=True, backend="eager")(x)
    model = FusedRNN(3, 4, backend="torch")
    out = torch.compile(model, fullgraph=True, backend="eager")(x)[0]
    assert rel_err(out, model(x)[0]) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_trace_records_the_model_and_runs_other_shapes(backend, device, tmp_path):
    """torch.jit.trace (and so its save / load) works as on nn.RNN: the trace runs other T and B, with gradients."""
    ref, model = _pair(backend, device, num_layers=2, bidirectional=True)
    traced = torch.jit.trace(model, torch.randn(3, 2, 3, device=device), check_trace=False)
    x = torch.randn(6, 5, 3, device=device, requires_grad=True)
    out, hn = traced(x)
    want, want_hn = ref(x)
    assert rel_err(out, want) <= TOL["fp32"]["fwd"] and rel_err(hn, want_hn) <= TOL["fp32"]["fwd"]
    grads = torch.autograd.grad(out.sum() + hn.sum(), [x, *traced.parameters()])
    ref_grads = torch.autograd.grad(want.sum() + want_hn.sum(), [x, *ref.parameters()])
    assert all(rel_err(g, r) <= TOL["fp32"]["bwd"] for g, r in zip(grads, ref_grads, strict=True))
    if backend == "triton":  # the fused op itself is in the graph
        assert "fused_rnn::scan" in str(traced.graph)
    torch.jit.save(traced, tmp_path / "m.pt")
    loaded = torch.jit.load(tmp_path / "m.pt", map_location=device)
    assert torch.equal(loaded(x)[0], out)


def test_jit_script_compiles_nn_rnn_on_the_same_parameters(device):
    """torch.jit.script: TorchScript cannot compile the Python dispatch, so it scripts nn.RNN on the very same
    Parameters (shared: training the scripted model trains this one), inside a larger module too."""
    ref, model = _pair("auto", device, num_layers=2, nonlinearity="relu", batch_first=True)

    class Net(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    net = Net(model).to(device)
    scripted = torch.jit.script(net)
    x = torch.randn(4, 7, 3, device=device)
    assert rel_err(scripted(x), net.head(ref(x)[0])) <= TOL["fp32"]["fwd"]
    assert all(a is b for a, b in zip(scripted.rnn.parameters(), model.parameters(), strict=True))
    with torch.no_grad():
        model.weight_hh_l1.mul_(0.5)  # one set of weights: the change shows through the scripted module
        ref.weight_hh_l1.mul_(0.5)
    assert rel_err(scripted(x), net.head(ref(x)[0])) <= TOL["fp32"]["fwd"]
    assert scripted.rnn.original_name == "RNN" and scripted.training == net.training


@pytest.mark.parametrize("kind", ["batched", "unbatched", "packed"])
def test_pytorch_path_is_nn_rnns_own_bit_for_bit(kind, device):
    """backend="torch" (and "auto" wherever the kernels do not run) calls aten::rnn_tanh / rnn_relu as nn.RNN does:
    the same outputs and gradients to the bit, and no kernel launch."""
    import fused_rnn.launch

    ref, model = _pair("torch", device, num_layers=2, bidirectional=True, nonlinearity="relu", dropout=0.3)
    ref.eval(), model.eval()
    x = torch.randn(5, 3, 3, device=device)
    inp = {
        "batched": x,
        "unbatched": x[:, 0],
        "packed": pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False),
    }[kind]
    calls = dict(fused_rnn.launch.LAUNCHER_CALLS)
    (out, hn), (rout, rhn) = model(inp), ref(inp)
    out, rout = (o.data if kind == "packed" else o for o in (out, rout))
    assert torch.equal(out, rout) and torch.equal(hn, rhn)
    (out.sum() + hn.sum()).backward()
    (rout.sum() + rhn.sum()).backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    assert fused_rnn.launch.LAUNCHER_CALLS == calls


def test_auto_runs_pytorch_where_the_kernels_cannot(device):
    import fused_rnn.launch
    import fused_rnn.ops

    ref, model = _pair("auto", device)
    ref.double(), model.double()  # float64: PyTorch's path, bit for bit
    x = torch.randn(4, 2, 3, device=device, dtype=torch.float64)
    calls = dict(fused_rnn.launch.LAUNCHER_CALLS)
    assert torch.equal(model(x)[0], ref(x)[0])
    with pytest.raises(ValueError, match="backend='triton' cannot run this input: torch.float64"):
        FusedRNN(3, 5, backend="triton").to(device, torch.float64)(x)
    big_ref, big = _pair("auto", device, hidden_size=1100)  # over the kernels' float32 limit
    fused_rnn.ops._warned.clear()
    xs = torch.randn(2, 1, 3, device=device)
    if fused_rnn.launch.unavailable_reason(xs.device) is None:
        with pytest.warns(UserWarning, match="H = 1100 is over the triton limit.*falling back"):
            out = big(xs)[0]
    else:
        out = big(xs)[0]
    assert torch.equal(out, big_ref(xs)[0])
    assert fused_rnn.launch.LAUNCHER_CALLS == calls
