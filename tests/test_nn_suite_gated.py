"""PyTorch's own nn.LSTM / nn.GRU tests from test/test_nn.py, rewritten with FusedLSTM / FusedGRU swapped in.

Each test here is named after the test_nn test whose idea it reimplements (the code is this repo's own). The
expectation is always the real nn module on the same arguments, parameters and inputs: the same exception types
and messages (`helpers.outcome`), the same outputs and gradients, bit for bit on backend "torch" (PyTorch's own
aten op underneath) and within ``TOL["fp32"]`` (`helpers.rel_err`) on backend "triton" in float32 (the fused
kernels, Triton's interpreter on the CPU). Where the kernels cannot take a case, the documented refusal is checked
instead: LSTM's ``proj_size`` at construction, float64 at the forward (so "triton" runs float32 where test_nn runs
float64). Where test_nn compares CPU with cuDNN, the fused module is compared with nn on the CPU instead.

Mirrored here (test_nn name -> what runs):
    test_rnn_args_check, test_projections_lstm_args_check, test_cudnn_forward_exception (not cuDNN-gated: it runs
    on the CPU in test_nn), test_error_RNN_seq_len_zero (bidirectional; cuDNN-gated in test_nn, its check is not),
    test_rnn_initial_hidden_state, test_projections_lstm_initial_hidden_state,
    test_RNN_cpu_vs_cudnn_no_dropout / _with_dropout (their grid of bias, bidirectional, batch_first,
    non-contiguous, packed, lengths as a tensor, LSTM projections: fused against nn on the CPU),
    test_rnn_weight_norm, test_RNN_cudnn_weight_norm (on the CPU), test_partial_flat_weights (``.to()`` on the CPU
    instead of ``.cuda()``), test_RNN_input_size_zero, test_RNN_dropout_state and test_RNN_change_dropout
    (both cuDNN-gated nn.RNN tests in test_nn; LSTM / GRU with seeded dropout here), test_cudnn_weight_tying (tied
    parameters and an SGD step, on the CPU), test_rnn_retain_variables, test_variable_sequence,
    test_save_lstm_compatibility, test_LSTM_differentiable_backward_using_oneDNN (backend "torch").

Already covered elsewhere in this repo:
    test_projections_errors_on_gru_and_rnn (tests/test_gated.py: constructor errors incl. proj_size, GRU's
    positional proj_size), test_error_RNN_seq_len_zero unidirectional (tests/test_gated.py, both backends),
    test_LSTM_grad_and_gradgrad / test_GRU_grad_and_gradgrad (tests/test_module_db.py: float64 gradcheck and
    gradgradcheck on "torch"; on "triton" double backward raises, which is also why
    test_LSTM_differentiable_backward_using_oneDNN runs on "torch" only), test_rnn_fused (CUDA-only in test_nn;
    fused against reference outputs and every gradient: tests/test_gated.py), test_RNN_nonlinearity /
    test_RNN_nonlinearity_passed_as_arg (nn.RNN: FusedRNN in tests/test_rnn_compat.py).

Left out:
    the cell classes (test_RNN_cell, test_RNN_cell_forward_zero_hidden_size, test_RNN_cell_no_broadcasting,
    test_LSTM_cell, test_LSTM_cell_forward_input_size, test_LSTM_cell_forward_hidden_size,
    test_lstmcell_backward_only_one_output_grad: nn.LSTMCell / nn.GRUCell have no fused twin);
    multi-GPU (test_rnn_check_device, test_projections_lstm_check_device, test_cudnn_rnn_dropout_states_device);
    cuDNN-specific (test_cudnn_weight_format: cuDNN's single weight buffer and its warning); CUDA-only
    PackedSequence checks (test_pack_sequence_batch_sizes_throw, test_device_mask: no module involved);
    test_RNN_dropout (nn.RNN with relu and all-one weights: its exact values are nn.RNN's, not LSTM's / GRU's).

test_save_lstm_compatibility__unpickled found that the fused modules' __setstate__ lacked nn.RNNBase's defaults for
states of older modules (proj_size = 0 before PyTorch 1.8; the Parameters under "all_weights" before 1.0); fixed
in fused_rnn/rnn.py, and both cases are checked here.
"""

import copy
import io
import itertools
import re
import warnings

import pytest
import torch
from helpers import TOL, outcome, rel_err
from torch import nn
from torch.nn.utils import rnn as rnn_utils

from fused_rnn import FusedGRU, FusedLSTM

PAIRS = [pytest.param(nn.LSTM, FusedLSTM, id="lstm"), pytest.param(nn.GRU, FusedGRU, id="gru")]
BACKENDS = ["torch", "triton"]
#: backend="triton"'s documented refusal of LSTM projections (fused_rnn/rnn.py)
PROJ_REFUSED = r"^backend: 'triton' does not run proj_size > 0 yet"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module: its many tiny aten calls otherwise wait at OpenMP barriers whenever the
    other core is busy (tens of ms a call instead of a fraction of one). nn and the fused module run under the same
    setting, so every comparison holds as it would with more threads. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _native_lstm(monkeypatch):
    """aten's own CPU LSTM rather than oneDNN's (its float32 default), as tests/test_module_db.py does for time: nn
    and the fused "torch" path call the same op under the same flags either way
    (test_LSTM_differentiable_backward_using_oneDNN switches oneDNN on and off itself)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)


def _pair(ref_cls, cls, backend, *args, dtype=None, **kw):
    """(nn module, fused module) built from the same arguments, holding the same parameters (in `dtype` if given)."""
    ref = ref_cls(*args, **kw)
    got = cls(*args, **kw, backend=backend)
    got.load_state_dict(ref.state_dict())
    if dtype is not None:
        ref.to(dtype), got.to(dtype)
    return ref, got


def _tensors(obj) -> list[torch.Tensor | None]:
    """The tensors of an output structure, in order (a PackedSequence's data; None, a missing gradient, kept)."""
    if isinstance(obj, rnn_utils.PackedSequence):
        return [obj.data]
    if obj is None or isinstance(obj, torch.Tensor):
        return [obj]
    return [t for o in obj for t in _tensors(o)]


def _assert_as_nn(got, want, backend, kind="fwd") -> None:
    """Tensors (or output structures) as nn's: bit-equal on "torch", within the float32 tolerance on "triton"; a
    gradient that did not arrive (None) only where nn's did not either."""
    got, want = _tensors(got), _tensors(want)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is None or b is None:
            assert a is None and b is None, i
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, i
        if backend == "torch":
            assert torch.equal(a, b), i
        else:
            assert rel_err(a, b) <= TOL["fp32"][kind], (i, rel_err(a, b))


def _grads(module, *leaves) -> list[torch.Tensor | None]:
    """The gradients of `leaves` then of every parameter, after a backward (None where none arrived)."""
    return [t.grad for t in (*leaves, *module.parameters())]


def _refused(cls, backend, *args, **kw) -> bool:
    """True (after checking the documented ValueError) where backend "triton" refuses these constructor arguments:
    LSTM projections."""
    if backend == "triton" and kw.get("proj_size", 0) > 0:
        with pytest.raises(ValueError, match=PROJ_REFUSED):
            cls(*args, backend=backend, **kw)
        return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# argument and shape checks


def _bad_shapes(correct_x, correct_h, correct_c=None):
    """test_nn's cases: one dimension at a time of the input or of h_0 (and c_0) set to a size nothing divides."""
    bad = 7

    def with_dim(shape, dim, size):
        return tuple(size if i == dim else s for i, s in enumerate(shape))

    cases = [
        (with_dim(correct_x, 1, bad), correct_h, correct_c),  # input batch
        (correct_x, with_dim(correct_h, 1, bad), correct_c and with_dim(correct_c, 1, bad)),  # hidden batch
        (with_dim(correct_x, 2, bad), correct_h, correct_c),  # input size
        (correct_x, with_dim(correct_h, 2, bad), correct_c and with_dim(correct_c, 2, bad)),  # hidden size
        (correct_x, with_dim(correct_h, 0, bad), correct_c and with_dim(correct_c, 0, bad)),  # layers * directions
    ]
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_rnn_args_check(ref_cls, cls, backend):
    """Wrong input batch, hidden batch, input size, hidden size and first hidden dimension: nn's RuntimeError and
    message; for LSTM with h_0 or c_0 the wrong one (the other right)."""
    ref, got = _pair(ref_cls, cls, backend, 3, 5, 2)
    correct_x, correct_h = (6, 4, 3), (2, 4, 5)
    for x_shape, h_shape, _ in _bad_shapes(correct_x, correct_h):
        x, h = torch.randn(x_shape), torch.randn(h_shape)
        if ref_cls is nn.LSTM:
            good = torch.randn(correct_h)
            hiddens = [(h, h)] if h_shape == correct_h else [(h, good), (good, h)]
        else:
            hiddens = [h]
        for hx in hiddens:
            want, _ = outcome(lambda x=x, hx=hx: ref(x, hx))
            assert want[0] is RuntimeError, (x_shape, h_shape)
            assert outcome(lambda x=x, hx=hx: got(x, hx))[0] == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_projections_lstm_args_check(backend):
    """As test_rnn_args_check with proj_size: h_0 is (L*D, B, proj_size), c_0 (L*D, B, hidden_size); also h_0 the
    size of c_0, a wrong h_0 alone and a wrong c_0 alone."""
    if _refused(FusedLSTM, backend, 3, 5, 2, proj_size=2):
        return
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, 3, 5, 2, proj_size=2)
    correct_x, correct_h, correct_c = (6, 4, 3), (2, 4, 2), (2, 4, 5)
    cases = _bad_shapes(correct_x, correct_h, correct_c)
    cases += [
        (correct_x, (5, 4, 2), correct_c),  # h_0's first dimension the hidden size
        (correct_x, (7, 4, 2), correct_c),
        (correct_x, correct_h, (7, 4, 5)),
    ]
    for x_shape, h_shape, c_shape in cases:
        x, hx = torch.randn(x_shape), (torch.randn(h_shape), torch.randn(c_shape))
        want, _ = outcome(lambda x=x, hx=hx: ref(x, hx))
        assert want[0] is RuntimeError, (x_shape, h_shape, c_shape)
        assert outcome(lambda x=x, hx=hx: got(x, hx))[0] == want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru"])
def test_cudnn_forward_exception(kind, backend):
    """batch_first modules: a hidden state of the wrong size and an input of the wrong size raise nn's
    RuntimeError and message (despite its name test_nn runs this on the CPU)."""
    ref_cls, cls = (nn.GRU, FusedGRU) if kind == "gru" else (nn.LSTM, FusedLSTM)
    kw = dict(batch_first=True, proj_size=10) if kind == "lstm_proj" else dict(batch_first=True)
    if _refused(cls, backend, 10, 20, **kw):
        return
    ref, got = _pair(ref_cls, cls, backend, 10, 20, **kw)
    hidden = torch.zeros(1, 2, 19)
    hidden = (hidden, hidden) if ref_cls is nn.LSTM else hidden
    for x, hx, pattern in [
        (torch.randn(2, 3, 10), hidden, "Expected hidden.*size.*got"),
        (torch.randn(2, 3, 3), None, r"input\.size\(-1\) must be equal to input_size"),
    ]:
        want, _ = outcome(lambda x=x, hx=hx: ref(x, hx))
        assert want[0] is RuntimeError and re.search(pattern, want[1])
        assert outcome(lambda x=x, hx=hx: got(x, hx))[0] == want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_error_RNN_seq_len_zero(ref_cls, cls, backend):
    """A sequence of length 0 into a bidirectional module: nn's RuntimeError and message."""
    ref, got = _pair(ref_cls, cls, backend, 5, 6, bidirectional=True)
    x = torch.ones(0, 10, 5)
    want, _ = outcome(lambda: ref(x))
    assert want == (RuntimeError, "Expected sequence length to be larger than 0 in RNN")
    assert outcome(lambda: got(x))[0] == want


# ---------------------------------------------------------------------------------------------------------------
# hidden states


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_rnn_initial_hidden_state(ref_cls, cls, backend):
    """A zero initial state passed explicitly gives what no initial state gives, and nn's outputs."""
    ref, got = _pair(ref_cls, cls, backend, 6, 5, 2)
    x = torch.randn(4, 3, 6)
    hidden = torch.zeros(2, 3, 5)
    hidden = (hidden, hidden) if ref_cls is nn.LSTM else hidden
    given, default = got(x, hidden), got(x)
    for a, b in zip(_tensors(given), _tensors(default), strict=True):
        assert torch.equal(a, b)
    _assert_as_nn(given, ref(x, hidden), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidir", "bidir"])
def test_projections_lstm_initial_hidden_state(bidirectional, backend):
    """As test_rnn_initial_hidden_state with proj_size: h_0 (L*D, B, proj_size), c_0 (L*D, B, hidden_size)."""
    kw = dict(num_layers=2, bidirectional=bidirectional, proj_size=3)
    if _refused(FusedLSTM, backend, 6, 5, **kw):
        return
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, 6, 5, **kw)
    D = 2 if bidirectional else 1
    x = torch.randn(4, 3, 6)
    hidden = (torch.zeros(2 * D, 3, 3), torch.zeros(2 * D, 3, 5))
    given, default = got(x, hidden), got(x)
    for a, b in zip(_tensors(given), _tensors(default), strict=True):
        assert torch.equal(a, b)
    _assert_as_nn(given, ref(x, hidden), backend)


def _non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t's values in a non-contiguous tensor (every other element of a doubled last dimension)."""
    out = torch.stack([torch.zeros_like(t), t], t.dim()).select(t.dim(), 1)
    assert not out.is_contiguous()
    return out


#: (bias, bidirectional, batch_first, contiguous, variable lengths, lengths as a tensor): test_nn runs all 64; here
#: an orthogonal eighth (a, b, c, a^b, a^c, b^c over the bits a, b, c), in which every two flags take all four
#: combinations, twice
GRID = [(a, b, c, a ^ b, a ^ c, b ^ c) for a, b, c in itertools.product((True, False), repeat=3)]
#: the kernels' (interpreter-time) subset: every flag both ways, packed input with each layout and direction
GRID_TRITON = [
    (True, True, True, True, True, True),
    (False, True, False, False, True, False),
    (True, False, True, False, False, False),
    (False, False, False, True, True, True),
]


def _cpu_vs_cudnn_case(ref_cls, cls, backend, flags, dropout, proj_size, dtype):
    """One test_nn grid case: forward and backward of the fused module against nn on the same values (seeded alike
    for dropout): outputs, h_n (and c_n), and the gradients of the input, h_0, c_0 and every parameter."""
    bias, bidirectional, batch_first, contig, variable_len, lens_as_tensor = flags
    T, B, I, H, L = 5, 4, 6, 4, 2  # noqa: E741
    D = 2 if bidirectional else 1
    h_out = proj_size or H
    kw = dict(bias=bias, dropout=dropout, bidirectional=bidirectional, batch_first=batch_first)
    if proj_size:
        kw["proj_size"] = proj_size
    ref, got = _pair(ref_cls, cls, backend, I, H, L, dtype=dtype, **kw)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    grad_out = torch.randn((B, T, h_out * D) if batch_first else (T, B, h_out * D), dtype=dtype)
    h0 = torch.randn(L * D, B, h_out, dtype=dtype)
    c0 = torch.randn(L * D, B, H, dtype=dtype)
    grad_h, grad_c = torch.randn(L * D, B, h_out, dtype=dtype), torch.randn(L * D, B, H, dtype=dtype)
    if not contig:
        x, grad_out, h0, c0, grad_h, grad_c = map(_non_contiguous, (x, grad_out, h0, c0, grad_h, grad_c))
    lengths = [5, 4, 4, 1]
    if lens_as_tensor:
        lengths = torch.tensor(lengths)
    if variable_len:
        grad_out = rnn_utils.pack_padded_sequence(grad_out, lengths, batch_first=batch_first).data
    seed = torch.seed()
    results = []
    for module in (ref, got):
        leaf = x.detach().clone().requires_grad_()
        inp = rnn_utils.pack_padded_sequence(leaf, lengths, batch_first=batch_first) if variable_len else leaf
        hs = [h0.detach().clone().requires_grad_()]
        if ref_cls is nn.LSTM:
            hs.append(c0.detach().clone().requires_grad_())
        torch.manual_seed(seed)
        out, hn = module(inp, tuple(hs) if ref_cls is nn.LSTM else hs[0])
        flat = _tensors((out, hn))
        torch.autograd.backward(flat, [grad_out, grad_h, grad_c][: len(flat)])
        results.append((flat, _grads(module, leaf, *hs)))
    (want, want_grads), (out, grads) = results
    _assert_as_nn(out, want, backend)
    _assert_as_nn(grads, want_grads, backend, "bwd")


@pytest.mark.parametrize("dropout", [0.0, 1.0], ids=["no_dropout", "with_dropout"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "lstm_proj"])
def test_RNN_cpu_vs_cudnn(kind, backend, dropout):
    """test_nn's cuDNN-against-CPU grid, here the fused module against nn (dropout 0 and 1, the two values whose
    outputs do not depend on the masks): float64 on "torch" (as test_nn) over `GRID`, float32 on "triton" over a
    subset that flips every flag (half of it with dropout 1)."""
    ref_cls, cls = (nn.GRU, FusedGRU) if kind == "gru" else (nn.LSTM, FusedLSTM)
    proj_size = 3 if kind == "lstm_proj" else 0
    if _refused(cls, backend, 6, 4, 2, proj_size=proj_size):
        return
    grid, dtype = (
        (GRID, torch.float64) if backend == "torch" else (GRID_TRITON[: 4 if dropout == 0 else 2], torch.float32)
    )
    for flags in grid:
        _cpu_vs_cudnn_case(ref_cls, cls, backend, flags, dropout, proj_size, dtype)


# ---------------------------------------------------------------------------------------------------------------
# weights: weight_norm, partial flat weights, tying


def _flat_parameters(module) -> int:
    return sum(isinstance(w, nn.Parameter) for w in module._flat_weights)


@pytest.mark.parametrize(
    "backend, name, kw",
    [
        pytest.param("torch", "weight_ih_l0", {}, id="torch-weight_ih_l0"),
        pytest.param("torch", "weight_hh_l0", dict(num_layers=2), id="torch-weight_hh_l0"),
        pytest.param("torch", "weight_hr_l0", dict(proj_size=3), id="torch-weight_hr_l0"),
        pytest.param("triton", "weight_ih_l0", {}, id="triton-weight_ih_l0"),
        pytest.param("triton", "weight_hh_l0", dict(num_layers=2), id="triton-weight_hh_l0"),
        pytest.param("triton", "weight_hr_l0", dict(proj_size=3), id="triton-weight_hr_l0"),
    ],
)
def test_rnn_weight_norm(backend, name, kw):
    """torch.nn.utils.weight_norm on an LSTM weight (test_RNN_cudnn_weight_norm's weight_hh_l0 and weight_hr_l0
    too, on the CPU): the weight leaves the Parameters in _flat_weights and comes back on removal, the module's
    parameters are named as nn's at each step, and the output is nn's and the one before weight_norm."""
    if _refused(FusedLSTM, backend, 6, 5, **kw):
        return
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, 6, 5, **kw)
    n_flat = len(got._flat_weights)
    x = torch.randn(4, 3, 6)
    before = got(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
        for module in (ref, got):
            torch.nn.utils.weight_norm(module, name=name)
    assert _flat_parameters(got) == _flat_parameters(ref) == n_flat - 1
    assert [n for n, _ in got.named_parameters()] == [n for n, _ in ref.named_parameters()]
    normed = got(x)
    _assert_as_nn(normed, ref(x), backend)
    _assert_as_nn(normed, before, "triton")  # the reparametrisation recomputes the weight: float32-close
    for module in (ref, got):
        torch.nn.utils.remove_weight_norm(module, name=name)
    assert _flat_parameters(got) == _flat_parameters(ref) == n_flat
    names = [n for n, _ in got.named_parameters()]
    assert names == [n for n, _ in ref.named_parameters()]
    assert name in got._parameters and name in names and f"{name}_g" not in names and f"{name}_v" not in names
    _assert_as_nn(got(x), ref(x), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_flat_weights(backend):
    """A weight deleted from the module, the module moved (test_nn moves it to CUDA; here ``.to()`` on the CPU,
    the same _apply), the weight put back: no error on the move, and the output is the one before."""
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, 6, 5, 2)
    x = torch.randn(3, 2, 6)
    expected = ref(x)
    for module in (ref, got):
        weight = module.weight_hh_l0
        del module.weight_hh_l0
        assert not hasattr(module, "weight_hh_l0")
        module.to("cpu", torch.float32)
        module.weight_hh_l0 = weight
    _assert_as_nn(ref(x), expected, "torch")
    _assert_as_nn(got(x), expected, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_cudnn_weight_tying(ref_cls, cls, backend):
    """One bias tied to another by assignment, an SGD step, and the next forward: as nn's (test_nn compares CUDA
    with CPU after the step; here the fused module with nn on the CPU)."""
    ref, got = _pair(ref_cls, cls, backend, 6, 5, batch_first=True, bidirectional=True)
    x = torch.randn(2, 4, 6)
    h0 = torch.randn(2, 2, 5)
    hx = (h0, torch.randn(2, 2, 5)) if ref_cls is nn.LSTM else h0
    outs = []
    for module in (ref, got):
        module.bias_ih_l0_reverse = module.bias_ih_l0
        assert module._flat_weights[module._flat_weights_names.index("bias_ih_l0_reverse")] is module.bias_ih_l0
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        opt.zero_grad()
        module(x, hx)[0].sum().backward()
        opt.step()
        outs.append((module(x, hx), [p.detach().clone() for p in module.parameters()]))
    assert len(list(got.parameters())) == len(list(ref.parameters()))
    _assert_as_nn(outs[1][1], outs[0][1], backend)
    _assert_as_nn(outs[1][0], outs[0][0], backend)


# ---------------------------------------------------------------------------------------------------------------
# empty batch, dropout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_RNN_input_size_zero(ref_cls, cls, backend):
    """A batch of 0: nn's output shapes, and the backward runs (zero gradients, as nn's)."""
    ref, got = _pair(ref_cls, cls, backend, 3, 4)
    results = []
    for module in (ref, got):
        x = torch.zeros(5, 0, 3, requires_grad=True)
        out = module(x)
        assert out[0].shape == (5, 0, 4)
        out[0].sum().backward()
        results.append((out, _grads(module, x)))
    _assert_as_nn(results[1][0], results[0][0], backend)
    _assert_as_nn(results[1][1], results[0][1], backend, "bwd")


#: (p, train, backend); on "triton" (interpreter time) p = 0 in eval is left to p = 0 in training and eval with p > 0
DROPOUT_STATES = [
    pytest.param(p, train, backend, id=f"p{p}-{'train' if train else 'eval'}-{backend}")
    for backend in BACKENDS
    for p in (0.0, 0.1234)
    for train in (True, False)
    if backend == "torch" or p > 0 or train
]


@pytest.mark.parametrize("p, train, backend", DROPOUT_STATES)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_RNN_dropout_state(ref_cls, cls, p, train, backend):
    """Two calls, and a third after torch.save / torch.load and flatten_parameters: equal where no dropout applies
    (p = 0 or eval), different otherwise, exactly where nn's are; and each call nn's for the same seed."""
    ref, got = _pair(ref_cls, cls, backend, 16, 16, 2, bias=False, dropout=p)
    ref.train(train), got.train(train)
    x = torch.rand(3, 4, 16)  # 192 elements dropped independently: two masks never coincide
    h0 = torch.rand(2, 4, 16)
    hx = (h0, torch.rand(2, 4, 16)) if ref_cls is nn.LSTM else h0
    seeds = [torch.seed() for _ in range(3)]
    calls = {}
    for name, module in (("nn", ref), ("fused", got)):
        outs = []
        for seed in seeds[:2]:
            torch.manual_seed(seed)
            outs.append(module(x, hx))
        buf = io.BytesIO()
        torch.save(module, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        assert type(loaded) is type(module) and loaded.dropout == p and loaded.training == train
        loaded.flatten_parameters()
        torch.manual_seed(seeds[2])
        outs.append(loaded(x, hx))
        calls[name] = outs
    for got_out, want_out in zip(calls["fused"], calls["nn"], strict=True):
        _assert_as_nn(got_out, want_out, backend)

    def same(a, b):
        return all(torch.equal(s, t) for s, t in zip(_tensors(a), _tensors(b), strict=True))

    for name, (first, second, third) in calls.items():
        deterministic = p == 0 or not train
        assert same(first, second) == same(first, third) == deterministic, name


#: test_nn's sequence of dropout values set after construction; the kernels' (interpreter-time) shorter one
CHANGED_DROPOUT = [0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0]
CHANGED_DROPOUT_TRITON = {True: [0, 0.5, 1, 0.2], False: [0.5, 0]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_RNN_change_dropout(ref_cls, cls, train, backend):
    """``module.dropout = p`` after construction takes effect: two calls agree where no dropout applies (p 0 or 1,
    or eval), differ otherwise, and differ from the previous p's outputs only in training; each call is nn's for
    the same seed (float64 on "torch" as test_nn; float32 and fewer values on "triton")."""
    dtype = torch.float64 if backend == "torch" else torch.float32
    ref, got = _pair(ref_cls, cls, backend, 8, 8, 2, dropout=0, dtype=dtype)
    ref.train(train), got.train(train)
    x = torch.rand(4, 3, 8, dtype=dtype)  # 96 elements dropped independently: two masks never coincide
    previous = None
    values = CHANGED_DROPOUT if backend == "torch" else CHANGED_DROPOUT_TRITON[train]
    for p in values:
        ref.dropout = got.dropout = p
        seeds = (torch.seed(), torch.seed())
        outs = []
        for seed in seeds:
            torch.manual_seed(seed)
            want = ref(x)
            torch.manual_seed(seed)
            out = got(x)
            _assert_as_nn(out, want, backend)
            outs.append(_tensors(out))
        first, second = outs
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True)) == (p in (0, 1) or not train), p
        if previous is not None:
            assert torch.equal(first[0], previous) == (not train), p
        previous = first[0]


# ---------------------------------------------------------------------------------------------------------------
# backward, packed sequences, saved modules


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_rnn_retain_variables(ref_cls, cls, backend):
    """The backward of one forward run again (retain_graph=True) gives the same gradients every time, and nn's
    (float64 on "torch" as test_nn on the CPU; float32 on "triton")."""
    dtype = torch.float64 if backend == "torch" else torch.float32
    ref, got = _pair(ref_cls, cls, backend, 6, 5, num_layers=2, dtype=dtype)
    x = torch.randn(4, 3, 6, dtype=dtype)
    results = []
    for module in (ref, got):
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        out[0].sum().backward(retain_graph=True)
        first = [g.clone() for g in _grads(module, leaf)]
        for _ in range(2):
            module.zero_grad()
            leaf.grad.zero_()
            out[0].sum().backward(retain_graph=True)
            assert all(torch.equal(a, b) for a, b in zip(_grads(module, leaf), first, strict=True))
        results.append(first)
    _assert_as_nn(results[1], results[0], backend, "bwd")


#: (enforce_sorted, lengths) from test_nn; the kernels' (interpreter-time) shorter list
VARIABLE_SEQUENCES = [
    (True, [5]),
    (False, [5]),
    (True, [6, 6, 4, 2, 2, 1, 1]),
    (False, [6, 6, 4, 2, 2, 1, 1]),
    (False, [2, 1, 3, 2, 6, 5, 3]),
]
VARIABLE_SEQUENCES_TRITON = [(True, [4, 2, 1]), (False, [2, 4, 1])]


def _variable_sequence_case(backend, enforce_sorted, lengths, default_hiddens, proj_size, dtype):
    """test_nn's check on the fused LSTM (packed == each sequence alone, outputs and gradients), and the packed
    outputs and gradients nn's."""
    I, H, L, D = 3, 4, 2, 2  # noqa: E741
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, I, H, L, bidirectional=True, proj_size=proj_size)
    ref.to("cpu", dtype), got.to("cpu", dtype)
    alone = copy.deepcopy(got).to("cpu", dtype)  # test_nn's deepcopy(lstm).to(device, dtype)
    assert alone.backend == backend and all(w.dtype == dtype for w in alone._flat_weights)
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, I, dtype=dtype)
    hidden0 = None
    if not default_hiddens:
        hidden0 = (torch.randn(L * D, B, proj_size or H, dtype=dtype), torch.randn(L * D, B, H, dtype=dtype))

    # each sequence alone
    leaf = x.clone().requires_grad_()
    outs, hiddens = [], []
    for i, n in enumerate(lengths):
        h_i = None if hidden0 is None else tuple(h[:, i : i + 1].contiguous() for h in hidden0)
        out, hid = alone(leaf[:n, i : i + 1], h_i)
        outs.append(torch.cat([out, out.new_zeros(T - n, *out.shape[1:])]))
        hiddens.append(hid)
    seq_out = torch.cat(outs, 1)
    seq_hidden = tuple(torch.cat(h, 1) for h in zip(*hiddens, strict=True))
    seq_out.sum().backward()
    seq_grads = _grads(alone, leaf)

    packed = {}
    for name, module in (("nn", ref), ("fused", got)):
        leaf_p = x.clone().requires_grad_()
        inp = rnn_utils.pack_padded_sequence(leaf_p, lengths, enforce_sorted=enforce_sorted)
        out, hidden = module(inp, hidden0)
        unpacked, unpacked_len = rnn_utils.pad_packed_sequence(out)
        assert unpacked_len.tolist() == lengths
        unpacked.sum().backward()
        packed[name] = ([unpacked, *hidden], _grads(module, leaf_p))
    _assert_as_nn(packed["fused"][0], packed["nn"][0], backend)
    _assert_as_nn(packed["fused"][1], packed["nn"][1], backend, "bwd")
    for a, b in zip(packed["fused"][0], [seq_out, *seq_hidden], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for a, b in zip(packed["fused"][1], seq_grads, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("proj_size", [0, 2], ids=["noproj", "proj"])
def test_variable_sequence(proj_size, backend):
    """A packed batch (sorted or not, default or given initial states) gives what each sequence gives alone, and
    nn's packed outputs and gradients (float64 on "torch", float32 on "triton"; the copy run on each sequence alone
    deep-copied and moved with ``.to(device, dtype)`` as in test_nn)."""
    if _refused(FusedLSTM, backend, 3, 4, 2, bidirectional=True, proj_size=proj_size):
        return
    cases = VARIABLE_SEQUENCES if backend == "torch" else VARIABLE_SEQUENCES_TRITON
    dtype = torch.float64 if backend == "torch" else torch.float32
    for (enforce_sorted, lengths), default_hiddens in itertools.product(cases, (True, False)):
        if backend == "triton" and default_hiddens == enforce_sorted:
            continue  # the interpreter's time: each sorting once with each kind of initial state
        _variable_sequence_case(backend, enforce_sorted, lengths, default_hiddens, proj_size, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_lstm_compatibility(backend):
    """A module state from before proj_size existed (test_nn: PyTorch <= 1.7 pickles), set into a new module,
    runs as the original."""
    ref, got = _pair(nn.LSTM, FusedLSTM, backend, 2, 3)
    x = torch.randn(4, 5, 2)
    expected = got(x)
    state = dict(got.__dict__)
    del state["proj_size"]
    loaded = FusedLSTM(2, 3, backend=backend)
    loaded.__setstate__(state)
    assert loaded.proj_size == 0
    _assert_as_nn(loaded(x), expected, "torch")
    _assert_as_nn(loaded(x), ref(x), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_save_lstm_compatibility__unpickled(ref_cls, cls, backend):
    """As test_save_lstm_compatibility, the way unpickling sets the state: into an object no constructor ran on.
    nn's module runs (its __setstate__ sets proj_size = 0); the fused one should run as it does."""
    x = torch.randn(4, 5, 2)
    modules = []
    for make in (lambda: ref_cls(2, 3), lambda: cls(2, 3, backend=backend)):
        original = make()
        state = dict(original.__dict__)
        del state["proj_size"]
        bare = type(original).__new__(type(original))
        bare.__setstate__(state)
        modules.append((original, bare))
    (ref, ref_bare), (got, got_bare) = modules
    assert ref_bare.proj_size == 0 and repr(ref_bare) == repr(ref)
    _assert_as_nn(ref_bare(x), ref(x), "torch")
    assert got_bare.proj_size == 0 and repr(got_bare) == repr(got)
    _assert_as_nn(got_bare(x), got(x), "torch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_cls, cls", PAIRS)
def test_save_lstm_compatibility__pre_1_0_state(ref_cls, cls, backend):
    """A state as modules pickled before PyTorch 1.0 kept it (the Parameters under "all_weights", no names): nn
    and the fused module rebuild the same weight names and run."""
    x = torch.randn(4, 5, 2)
    outs = []
    for make in (lambda: ref_cls(2, 3, num_layers=2, bidirectional=True), lambda: cls(2, 3, num_layers=2,
                 bidirectional=True, backend=backend)):  # fmt: skip
        original = make()
        state = dict(original.__dict__)
        state["all_weights"] = [[getattr(original, n) for n in names] for names in original._all_weights]
        bare = type(original).__new__(type(original))
        bare.__setstate__(state)
        assert bare._flat_weights_names == original._flat_weights_names
        assert all(a is b for a, b in zip(bare._flat_weights, original._flat_weights, strict=True))
        outs.append((bare(x), original(x)))
    _assert_as_nn(outs[1][0], outs[1][1], "torch")
    _assert_as_nn(outs[0][0], outs[0][1], "torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_LSTM_differentiable_backward_using_oneDNN(dtype):
    """Double backward through a deep batch_first LSTM with oneDNN off and on: the fused module on "torch" gives
    nn's first derivative and the input's gradient of its sum bit for bit, and the two settings agree (backend
    "triton" refuses double backward: tests/test_module_db.py)."""
    ref, got = _pair(nn.LSTM, FusedLSTM, "torch", 3, 3, 4, batch_first=True)
    ref.to(dtype), got.to(dtype)
    x = torch.rand(3, 5, 3, dtype=dtype)
    results = {}
    for enabled in (False, True):
        with torch.backends.mkldnn.flags(enabled=enabled):
            for name, module in (("nn", ref), ("fused", got)):
                leaf = x.clone().requires_grad_()
                out, _ = module(leaf)
                (der,) = torch.autograd.grad(out, leaf, torch.ones_like(out), retain_graph=True, create_graph=True)
                der.sum().backward(retain_graph=True)
                results[name, enabled] = (der.detach(), leaf.grad)
    for enabled in (False, True):
        _assert_as_nn(results["fused", enabled], results["nn", enabled], "torch")
    tol = dict(atol=1e-5, rtol=1.3e-6) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for a, b in zip(results["fused", False], results["fused", True], strict=True):
        torch.testing.assert_close(a, b, **tol)
