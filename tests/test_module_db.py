"""FusedRNN / FusedLSTM / FusedGRU on PyTorch's own ModuleInfo samples for nn.RNN / nn.LSTM / nn.GRU.

``torch.testing._internal.common_modules.module_db`` (shipped in PyTorch's wheel; importing it needs the
``expecttest`` package) describes each nn module to PyTorch's generic module tests (test/test_modules.py): sample
constructor arguments and forward inputs, the dtypes they run in, error inputs, and flags such as
``train_and_eval_differ``. Here every nn.RNN / nn.LSTM / nn.GRU sample runs through the fused counterpart on
both backends, with the properties those generic tests check, written for a drop-in: the expectation is always
the nn module itself on the same sample, holding the same parameters (``load_state_dict`` both ways).

- backend "torch" runs the very aten op nn runs: outputs and gradients bit-equal to nn's.
- backend "triton" runs the kernels (Triton's interpreter on the CPU) in float32: outputs and gradients as
  accurate as nn's own float32, measured against nn in float64 on the same values (`_assert_as_nn`; the
  samples' values reach +-9, where nn's float32 itself is off by more than rtol 1e-5 / atol 1e-6 on some
  gradient elements). Where the kernels cannot take a sample, the documented ValueError is checked instead:
  LSTM's ``proj_size`` at construction, float64 at the forward (the kernels take float32 / float16 / bfloat16;
  ``backend="auto"`` runs float64 on PyTorch's path). float64 gradcheck and double backward are PyTorch's path
  only: on "triton" double backward raises.

Checks beyond the forward and gradients (copies, dtype moves, non-contiguous inputs, dropout, frozen
parameters) run every sample on "torch" and the representative ones (bias, both directions, batch_first, an
initial state) on "triton", which keeps the interpreter's time modest. Not here: test_modules' CUDA-only tests
(CPU / GPU parity, device transfers) and its in-place test (these modules take no `inplace`).
"""

import copy
import io
import pickle
from unittest import mock

import pytest
import torch
from helpers import TOL, outcome, rel_err
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import PackedSequence

from fused_rnn import FusedGRU, FusedLSTM, FusedRNN

# common_utils (imported by common_modules) calls torch.backends.disable_global_flags() for PyTorch's own suite:
# every later `torch.backends.cudnn.allow_tf32 = ...` in the process would raise, and other test files here set
# such flags directly
with mock.patch.object(torch.backends, "disable_global_flags", lambda: None):
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db
assert not torch.backends.flags_frozen()

FUSED = {nn.RNN: FusedRNN, nn.LSTM: FusedLSTM, nn.GRU: FusedGRU}
INFOS = [info for info in module_db if info.module_cls in FUSED]
BACKENDS = ["torch", "triton"]
#: the documented refusals of backend="triton" (fused_rnn/rnn.py, ops.py, gated_ops.py)
PROJ_REFUSED = r"^backend: 'triton' does not run proj_size > 0 yet; use 'auto' or 'torch'"
FLOAT64_REFUSED = r"^backend='triton' cannot run this input: torch\.float64 runs on the torch path"
#: the kernels' float32 error against float64 nn, per element and in norm, may be this many times nn float32's
#: own (measured: at most 1.5 times over 12 seeds of every sample)
NN_ERROR_FACTOR = 4


@pytest.fixture(autouse=True)
def _native_lstm(monkeypatch):
    """PyTorch's oneDNN LSTM (aten's CPU default in float32) takes about 0.3 s per forward and backward on these
    tiny samples, aten's own LSTM a millisecond: nn and the fused "torch" path call the same op under the same
    flags either way (`test_onednn_lstm_as_nn` covers the default)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)


def _samples(info, dtype=torch.float32, training=True, requires_grad=True) -> list:
    return list(
        info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=requires_grad, training=training)
    )


def _describe(sample) -> str:
    kw = sample.constructor_input.kwargs
    parts = [kw["nonlinearity"]] if "nonlinearity" in kw else []
    parts += ["bias" if kw.get("bias", True) else "nobias"]
    parts += ["bf"] * kw.get("batch_first", False) + ["bidir"] * kw.get("bidirectional", False)
    parts += [f"proj{kw['proj_size']}"] if kw.get("proj_size") else []
    parts += ["hx"] * (len(sample.forward_input.args) > 1)
    return "-".join(parts)


def _representative(sample) -> bool:
    kw = sample.constructor_input.kwargs
    with_hx = len(sample.forward_input.args) > 1
    return kw["bias"] and kw["bidirectional"] and kw["batch_first"] and not kw.get("proj_size") and with_hx


_COLLECTED = {info.name: _samples(info) for info in INFOS}


def _id(info, i: int) -> str:
    return f"{info.module_cls.__name__}-{i:02d}-{_describe(_COLLECTED[info.name][i])}"


_INDICES = [(info, i) for info in INFOS for i in range(len(_COLLECTED[info.name]))]
#: every sample
SAMPLES = [pytest.param(info, i, id=_id(info, i)) for info, i in _INDICES]
#: every sample in every dtype its ModuleInfo lists
SAMPLE_DTYPES = [
    pytest.param(info, i, dtype, id=f"{_id(info, i)}-{str(dtype).removeprefix('torch.')}")
    for info, i in _INDICES
    for dtype in info.dtypes
]
#: every sample on each backend
SAMPLE_BACKENDS = [
    pytest.param(info, i, backend, id=f"{_id(info, i)}-{backend}") for backend in BACKENDS for info, i in _INDICES
]
#: every sample on "torch"; the representative ones on "triton"
SAMPLE_BACKENDS_SHORT = [
    p for p in SAMPLE_BACKENDS if p.values[2] == "torch" or _representative(_COLLECTED[p.values[0].name][p.values[1]])
]

#: the representative samples on each backend
REPRESENTATIVE = [p for p in SAMPLE_BACKENDS if _representative(_COLLECTED[p.values[0].name][p.values[1]])]


def _sample(info, index: int, dtype=torch.float32, training=True, requires_grad=True):
    """Sample `index` drawn afresh (the test's seed) for this dtype and mode: the same constructor as collected."""
    sample = _samples(info, dtype, training, requires_grad)[index]
    assert sample.constructor_input.kwargs == _COLLECTED[info.name][index].constructor_input.kwargs
    return sample


def _clone(obj, dtype=None):
    """Fresh leaf copies of the tensors in obj, with their strides (requires_grad kept; floating ones cast to dtype
    if given)."""
    if isinstance(obj, PackedSequence):
        return obj._replace(data=_clone(obj.data, dtype))
    if isinstance(obj, torch.Tensor):
        dtype = dtype if dtype is not None and obj.is_floating_point() else obj.dtype
        t = torch.empty_strided(obj.shape, obj.stride(), dtype=dtype, device=obj.device)  # the same layout
        return t.copy_(obj.detach()).requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o, dtype) for o in obj)
    return obj


def _tensors(obj) -> list[torch.Tensor]:
    """The tensors of an output or input structure, in order (a PackedSequence's data)."""
    if isinstance(obj, PackedSequence):
        return [obj.data]
    if isinstance(obj, torch.Tensor):
        return [obj]
    return [t for o in obj for t in _tensors(o)]


def _structure(obj):
    """Types, shapes and contiguity of an output structure."""
    if isinstance(obj, torch.Tensor):
        return "tensor", tuple(obj.shape), obj.is_contiguous()
    return type(obj), [_structure(o) for o in obj]


def _build(info, sample, backend, dtype=torch.float32, training=True, **extra):
    """(nn module, fused module) for a sample's constructor (plus `extra`), in `dtype` and mode, with the same
    parameters: the fused module loads nn's state_dict, then a fresh nn module loads the fused one's and is
    returned. The fused module is None where backend "triton" refuses the constructor, after checking that."""
    args, kw = sample.constructor_input.args, sample.constructor_input.kwargs | extra
    ref = info.module_cls(*args, **kw).to(dtype).train(training)
    make = lambda: FUSED[info.module_cls](*args, **kw, backend=backend)  # noqa: E731
    if backend == "triton" and kw.get("proj_size", 0) > 0:
        with pytest.raises(ValueError, match=PROJ_REFUSED):
            make()
        return ref, None
    got = make().to(dtype).train(training)
    got.load_state_dict(ref.state_dict())
    back = info.module_cls(*args, **kw).to(dtype).train(training)
    back.load_state_dict(got.state_dict())
    assert list(back.state_dict()) == list(ref.state_dict()) == list(got.state_dict())
    for name, a in ref.state_dict().items():
        assert torch.equal(back.state_dict()[name], a) and torch.equal(got.state_dict()[name], a), name
    return back, got


def _results(module, inputs, grad_outputs=None, seed=None, dtype=None):
    """module on fresh copies of inputs (cast to dtype if given; the RNG seeded first if `seed`): (outputs, names
    and values of the flat outputs then the gradients of every input leaf and every parameter that requires
    grad, the grad_outputs used: drawn when None, else cast to the outputs' dtype)."""
    inputs = _clone(inputs, dtype)
    if seed is not None:
        torch.manual_seed(seed)
    out = module(*inputs)
    flat = _tensors(out)
    leaves = [t for t in _tensors(inputs) if t.requires_grad]
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if grad_outputs is None:
        grad_outputs = [torch.randn_like(t) for t in flat]
    grads = torch.autograd.grad(
        flat, leaves + [p for _, p in params], [g.to(t.dtype) for t, g in zip(flat, grad_outputs, strict=True)]
    )
    names = [f"output {i}" for i in range(len(flat))] + [f"input {i}" for i in range(len(leaves))]
    names += [n for n, _ in params]
    return out, list(zip(names, flat + list(grads), strict=True)), grad_outputs


def _assert_as_nn(got, ref, inputs, grad_outputs, backend, seed=None) -> list:
    """`got` (from `_results` of the fused module) against nn's module `ref` on the same inputs and grad_outputs:
    bit-equal on "torch"; on "triton" float32, with an error against nn in float64 within the float32 tolerance or
    NN_ERROR_FACTOR times nn float32's own error, per element and in norm. Returns nn's (name, value) pairs."""
    want = _results(ref, inputs, grad_outputs, seed)[1]
    assert [n for n, _ in got] == [n for n, _ in want]
    if backend != "triton":  # "torch", and "auto" where PyTorch's path runs
        for (name, a), (_, b) in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
        return want
    exact = _results(copy.deepcopy(ref).double(), inputs, grad_outputs, seed, torch.float64)[1]
    for (name, a), (_, b), (_, e) in zip(got, want, exact, strict=True):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == e.shape, name
        a, b = a.detach().double(), b.detach().double()
        atol = max(1e-6, NN_ERROR_FACTOR * (b - e).abs().max().item())
        torch.testing.assert_close(a, e, rtol=1e-5, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
        assert rel_err(a, e) <= max(TOL["fp32"]["bwd"], NN_ERROR_FACTOR * rel_err(b, e)), name
    return want


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("info, index, dtype", SAMPLE_DTYPES)
def test_forward_and_gradients_as_nn(info, index, dtype, backend, training):
    """Outputs (h_n, LSTM's (h_n, c_n)), their structure and layout, and the gradients of every input tensor and
    every parameter, as nn's (see `_assert_as_nn`)."""
    sample = _sample(info, index, dtype, training)
    ref, got = _build(info, sample, backend, dtype, training)
    if got is None:
        return  # the refusal is checked
    inputs = sample.forward_input.args
    if backend == "triton" and dtype == torch.float64:
        with pytest.raises(ValueError, match=FLOAT64_REFUSED):
            got(*_clone(inputs))
        got.backend = backend = "auto"  # which runs float64 on PyTorch's path: nn's bits
    out, results, grad_outputs = _results(got, inputs)
    assert _structure(out) == _structure(ref(*_clone(inputs)))
    want = _assert_as_nn(results, ref, inputs, grad_outputs, backend)
    assert [_structure(t) for _, t in results] == [_structure(t) for _, t in want]


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS)
def test_factory_kwargs_meta_device_and_dtype_methods(info, index, backend):
    """device= / dtype= at construction, construction under ``torch.device("meta")``, and .double() / .float() /
    .to(memory_format=...): every parameter where nn puts its own, and `_flat_weights` following them."""
    sample = _COLLECTED[info.name][index]
    args, kw = sample.constructor_input.args, sample.constructor_input.kwargs
    cls = FUSED[info.module_cls]
    if backend == "triton" and kw.get("proj_size", 0) > 0:
        with pytest.raises(ValueError, match=PROJ_REFUSED):
            cls(*args, **kw, device="cpu", dtype=torch.float64, backend=backend)
        return

    def meta(m):
        return [(n, p.device, p.dtype, p.shape, p.stride(), p.requires_grad) for n, p in m.named_parameters()]

    for dtype in info.dtypes:
        ref = info.module_cls(*args, **kw, device="cpu", dtype=dtype)
        got = cls(*args, **kw, device="cpu", dtype=dtype, backend=backend)
        assert meta(got) == meta(ref) and list(got.buffers()) == list(ref.buffers()) == []
    with torch.device("meta"):
        ref, got = info.module_cls(*args, **kw), cls(*args, **kw, backend=backend)
    assert meta(got) == meta(ref) and all(p.is_meta for p in got.parameters())
    for move in ("double", "float", "contiguous_format", "preserve_format"):
        ref, got = info.module_cls(*args, **kw), cls(*args, **kw, backend=backend)
        for m in (ref, got):
            if move.endswith("_format"):
                m.to(memory_format=getattr(torch, move))
            else:
                getattr(m, move)()
        assert meta(got) == meta(ref), move
        assert all(a is b for a, b in zip(got._flat_weights, got.parameters(), strict=True)), move


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS_SHORT)
def test_repr_copies_pickles_and_saved_state(info, index, backend):
    """repr / str as nn's (with the backend where not "auto"); copy.deepcopy, pickle, torch.save of the module and
    of its state_dict (loaded with weights_only=True into a fresh fused module and a fresh nn module): each copy
    has its own live parameters, the same backend and mode, and gives the original's outputs bit for bit; the
    fresh nn module gives them as nn does."""
    sample = _sample(info, index, requires_grad=False)
    ref, got = _build(info, sample, backend, training=False)
    want_repr = "Fused" + repr(ref)[:-1] + f", backend={backend!r})"
    assert repr(got) == str(got) == want_repr
    inputs = sample.forward_input.args
    _, results, grad_outputs = _results(got, inputs)
    want = [t for name, t in results if name.startswith("output")]

    buf = io.BytesIO()
    torch.save(got, buf)
    buf.seek(0)
    state = io.BytesIO()
    torch.save(got.state_dict(), state)
    state.seek(0)
    saved = torch.load(state, weights_only=True)
    args, kw = sample.constructor_input.args, sample.constructor_input.kwargs
    fresh = FUSED[info.module_cls](*args, **kw, backend=backend).eval()
    fresh.load_state_dict(saved)
    copies = {
        "deepcopy": copy.deepcopy(got),
        "pickle": pickle.loads(pickle.dumps(got)),
        "torch.save": torch.load(buf, weights_only=False),
        "state_dict": fresh,
    }
    for how, other in copies.items():
        assert type(other) is type(got) and repr(other) == want_repr and not other.training, how
        assert other.backend == backend and other._flat_weights_names == got._flat_weights_names, how
        params = list(other.parameters())
        assert all(a is b for a, b in zip(other._flat_weights, params, strict=True)), how
        assert not any(p is q for p, q in zip(params, got.parameters(), strict=True)), how
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(_tensors(other(*inputs)), want, strict=True)), how
    fresh_nn = info.module_cls(*args, **kw).eval()
    fresh_nn.load_state_dict(saved)
    _assert_as_nn(results, fresh_nn, inputs, grad_outputs, backend)


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS_SHORT)
def test_forward_reference_and_dtype_moves(info, index, backend):
    """The sample's own reference (the unbatched input run as a batch of one) and, after .double() and back to
    .float(), the forward as nn's in that dtype: bit-equal on "torch"; on "triton" float64 is refused and the
    float32 forward afterwards gives the first one's bits."""
    sample = _sample(info, index, requires_grad=False)
    ref, got = _build(info, sample, backend)
    inputs = sample.forward_input.args
    first = got(*inputs)
    reference = sample.reference_fn(got, *inputs)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(first), _tensors(reference), strict=True))
    ref.double(), got.double()
    assert all(p.dtype == torch.float64 for p in got._flat_weights)
    inputs64 = _clone(inputs, torch.float64)
    if backend == "triton":
        with pytest.raises(ValueError, match=FLOAT64_REFUSED):
            got(*inputs64)
    else:
        assert all(torch.equal(a, b) for a, b in zip(_tensors(got(*inputs64)), _tensors(ref(*inputs64)), strict=True))
    got.float()
    assert all(p.dtype == torch.float32 for p in got._flat_weights)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(got(*inputs)), _tensors(first), strict=True))


def _non_contiguous(obj):
    """obj's tensors as non-contiguous tensors holding the same values (requires_grad kept)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().repeat_interleave(2, dim=-1)[..., ::2]
        assert not t.is_contiguous()
        return t.requires_grad_(obj.requires_grad)
    return type(obj)(_non_contiguous(o) for o in obj)


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS_SHORT)
def test_non_contiguous_inputs_and_grad_outputs(info, index, backend):
    """Non-contiguous input, initial state and output gradients: outputs and gradients as nn's on the same
    non-contiguous tensors, and on "torch" the contiguous call's bits."""
    sample = _sample(info, index)
    ref, got = _build(info, sample, backend)
    inputs = sample.forward_input.args
    nc_inputs = _non_contiguous(_clone(inputs))
    assert not any(t.is_contiguous() for t in _tensors(_clone(nc_inputs)))
    grad_outputs = [torch.randn_like(t) for t in _tensors(ref(*_clone(inputs)))]
    nc_grad_outputs = _non_contiguous(grad_outputs)
    _, nc_results, _ = _results(got, nc_inputs, nc_grad_outputs)
    _assert_as_nn(nc_results, ref, nc_inputs, nc_grad_outputs, backend)
    if backend == "torch":
        results = _results(got, inputs, grad_outputs)[1]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(nc_results, results, strict=True))


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS_SHORT)
def test_train_and_eval_as_nn(info, index, backend):
    """``train_and_eval_differ``: the forward reads `training` (without it both modules raise nn's
    AttributeError); with the sample's two layers and dropout 0.5, training draws nn's masks for the same seed
    (outputs and gradients as nn's) and differs from eval where nn's does, and eval is as nn's."""
    assert info.train_and_eval_differ
    sample = _sample(info, index)
    inputs = sample.forward_input.args
    ref, got = _build(info, sample, backend)
    del ref.training, got.training
    (want_type, want_msg), _ = outcome(lambda: ref(*inputs))
    (got_type, got_msg), _ = outcome(lambda: got(*inputs))
    assert want_type is got_type is AttributeError and "'training'" in want_msg and "'training'" in got_msg
    ref, got = _build(info, sample, backend, dropout=0.5)
    assert ref.num_layers > 1 and got.dropout == ref.dropout == 0.5
    outs, want = {}, {}
    for training in (True, False):
        ref.train(training), got.train(training)
        seed = torch.seed()
        _, outs[training], grad_outputs = _results(got, inputs, seed=seed)
        want[training] = _assert_as_nn(outs[training], ref, inputs, grad_outputs, backend, seed=seed)

    def differ(results):  # the outputs (a relu layer may leave dropout only zeros to drop)
        pairs = zip(results[True], results[False], strict=True)
        return any(not torch.equal(a, b) for (name, a), (_, b) in pairs if name.startswith("output"))

    assert differ(outs) == differ(want)


@pytest.mark.parametrize("info, index, backend", SAMPLE_BACKENDS_SHORT)
def test_frozen_input_and_parameters_as_nn(info, index, backend):
    """test_modules' partial derivatives: with the input and the first layer's parameters frozen, the gradients of
    the initial state and of the other parameters are nn's."""
    sample = _sample(info, index)
    ref, got = _build(info, sample, backend)
    for module in (ref, got):
        for name, p in module.named_parameters():
            p.requires_grad_(not name.endswith("_l0"))
    x, *hx = sample.forward_input.args
    inputs = (x.detach(), *hx)
    _, results, grad_outputs = _results(got, inputs)
    assert [n for n, _ in results if n.startswith("input")] == [f"input {i}" for i in range(len(_tensors(hx)))]
    assert not any(n.endswith("_l0") for n, _ in results)
    _assert_as_nn(results, ref, inputs, grad_outputs, backend)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("info", [i for i in INFOS if i.module_error_inputs_func], ids=lambda i: i.module_cls.__name__)
def test_error_inputs_as_nn(info, backend, dtype):
    """The ModuleInfo's error inputs (bad constructor arguments, an input of the other dtype): nn's exception type
    and message exactly, which also match the error the ModuleInfo expects."""
    errors = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False, training=True)
    assert errors
    for error in errors:
        got, _ = outcome(_error_call(FUSED[info.module_cls], error, backend=backend))
        want, _ = outcome(_error_call(info.module_cls, error))
        assert got == want
        with pytest.raises(error.error_type, match=error.error_regex):
            _error_call(FUSED[info.module_cls], error, backend=backend)()


def _error_call(cls, error, **extra):
    """What an error input does: build the module, and run the forward for a forward error."""
    sample = error.module_error_input
    args, kw = sample.constructor_input.args, sample.constructor_input.kwargs

    def call():
        module = cls(*args, **kw, **extra)
        if error.error_on == ModuleErrorEnum.FORWARD_ERROR:
            module(*sample.forward_input.args, **sample.forward_input.kwargs)

    return call


def _gradcheck_fn(module, inputs):
    """(f, flat) for gradcheck: f(*flat) is the module's flat outputs, flat the inputs' leaves then the parameters
    (which gradcheck perturbs in place)."""
    leaves = _tensors(inputs)
    assert all(t.requires_grad for t in leaves)

    def f(*flat):
        it = iter(flat[: len(leaves)])
        rebuilt = tuple(next(it) if isinstance(t, torch.Tensor) else tuple(next(it) for _ in t) for t in inputs)
        return tuple(_tensors(module(*rebuilt)))

    return f, leaves + list(module.parameters())


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("info, index", SAMPLES)
def test_gradcheck_float64_on_torch(info, index, training):
    """test_modules' gradcheck (float64) on backend "torch", over every input and every parameter at once ("triton"
    refuses float64; its gradients are checked against nn's above)."""
    sample = _sample(info, index, torch.float64, training)
    _, got = _build(info, sample, "torch", torch.float64, training)
    assert gradcheck(*_gradcheck_fn(got, _clone(sample.forward_input.args)), fast_mode=True)


@pytest.mark.parametrize("info, index, backend", REPRESENTATIVE)
def test_double_backward(info, index, backend):
    """test_modules' gradgradcheck (float64) on "torch", PyTorch's path; on "triton" (float32) double backward
    raises a RuntimeError rather than giving a wrong second derivative: its backward has no derivative of its own."""
    if backend == "torch":
        sample = _sample(info, index, torch.float64)
        _, got = _build(info, sample, backend, torch.float64)
        assert gradgradcheck(*_gradcheck_fn(got, _clone(sample.forward_input.args)), fast_mode=True)
        return
    sample = _sample(info, index)
    _, got = _build(info, sample, backend)
    inputs = _clone(sample.forward_input.args)
    flat = _tensors(got(*inputs))
    grads = torch.autograd.grad(sum(t.pow(2).sum() for t in flat), _tensors(inputs), create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        torch.autograd.grad(sum(g.sum() for g in grads), list(got.parameters()))


@pytest.mark.parametrize("info, index, backend", [p for p in REPRESENTATIVE if p.values[0].module_cls is nn.LSTM])
def test_onednn_lstm_as_nn(info, index, backend, monkeypatch):
    """With oneDNN on, as by default: the fused LSTM's outputs and gradients as nn.LSTM's there."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    sample = _sample(info, index)
    ref, got = _build(info, sample, backend)
    _, results, grad_outputs = _results(got, sample.forward_input.args)
    _assert_as_nn(results, ref, sample.forward_input.args, grad_outputs, backend)
