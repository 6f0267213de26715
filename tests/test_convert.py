"""fused_rnn.convert_rnns: every nn.RNN of a model becomes a FusedRNN with the same parameters; same outputs,
gradients and training."""

import copy
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import TOL, rel_err
from torch import nn
from torch.nn.utils import parametrize

from fused_rnn import FusedGRU, FusedLSTM, FusedRNN, convert_rnns


class Net(nn.Module):
    """Nested RNNs: bidirectional, multi-layer, batch_first, relu, one shared, beside an LSTM and a GRU."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.RNN(3, 6, num_layers=2, bidirectional=True)
        self.inner = nn.Sequential(nn.Linear(12, 5), nn.Tanh())
        self.blocks = nn.ModuleList(
            [nn.RNN(5, 4, nonlinearity="relu", batch_first=True), nn.RNN(4, 7, bias=False, num_layers=3)]
        )
        self.shared = self.blocks[0]
        self.lstm = nn.LSTM(7, 3)
        self.gru = nn.GRU(3, 2)

    def forward(self, x):  # x (T, B, 3)
        h, hn = self.encoder(x)
        h = self.inner(h)
        h, _ = self.blocks[0](h.transpose(0, 1))  # batch_first
        h, _ = self.blocks[1](h.transpose(0, 1))
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        return h, hn


def _grads(model, x):
    model.zero_grad()
    x = x.detach().requires_grad_()
    out, hn = model(x)
    (out.square().sum() + hn.sum()).backward()
    return [out, hn, x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_nested_model_converted_same_parameters_outputs_and_gradients(backend, device):
    torch.set_float32_matmul_precision("highest")
    dtype = torch.float64 if backend == "torch" else torch.float32
    ref = Net().to(device, dtype)
    ref.blocks[1].weight_hh_l1.requires_grad_(False)
    ref.encoder.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = convert_rnns(copy.deepcopy(ref), backend=backend)
    assert not [str(w.message) for w in caught if "convert_rnns" in str(w.message)]
    rnns = [m for m in model.modules() if type(m) in (nn.RNN, nn.LSTM, nn.GRU)]
    assert not rnns
    fused = [model.encoder, model.blocks[0], model.blocks[1]]
    assert all(type(m) is FusedRNN and m.backend == backend for m in fused)
    assert model.shared is model.blocks[0]  # a shared module stays shared
    assert type(model.lstm) is FusedLSTM and type(model.gru) is FusedGRU
    assert model.lstm.backend == model.gru.backend == backend
    assert not model.encoder.training and model.blocks[0].training
    assert [(n, p.shape, p.dtype, p.device, p.requires_grad) for n, p in model.named_parameters()] == [
        (n, p.shape, p.dtype, p.device, p.requires_grad) for n, p in ref.named_parameters()
    ]
    assert re.sub(r"Fused(RNN|LSTM|GRU)\(", r"\1(", repr(model)).replace(f", backend='{backend}'", "") == repr(ref)
    x = torch.randn(5, 3, 3, device=device, dtype=dtype)
    # the truth in float64: the kernels' float32 error alone is what the table bounds
    got, want = _grads(model, x), _grads(copy.deepcopy(ref).double(), x.double())
    tol = 1e-12 if dtype == torch.float64 else TOL["fp32"]["bwd"]
    for a, b in zip(got, want, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_err(a, b) <= tol


def test_the_same_parameter_objects_and_the_root_converts():
    rnn = nn.RNN(3, 4, 2, bidirectional=True)
    params = list(rnn.parameters())
    out = convert_rnns(rnn)
    assert type(out) is FusedRNN
    assert all(a is b for a, b in zip(out.parameters(), params, strict=True))
    assert all(a is b for a, b in zip(out._flat_weights, rnn._flat_weights, strict=True))
    opt = torch.optim.SGD(params, lr=1.0)  # an optimizer built on the old module still steps the new one
    out(torch.randn(4, 2, 3))[0].sum().backward()
    before = out.weight_hh_l0.detach().clone()
    opt.step()
    assert not torch.equal(before, out.weight_hh_l0)
    lstm = nn.LSTM(3, 4)
    out = convert_rnns(lstm)
    assert type(out) is FusedLSTM and all(a is b for a, b in zip(out.parameters(), lstm.parameters(), strict=True))

    class MyLSTM(nn.LSTM):  # a subclass's own code would be dropped: it stays
        pass

    mine = MyLSTM(3, 4)
    assert convert_rnns(mine) is mine


def test_weight_norm_hooks_follow_and_parametrized_rnns_stay_with_a_warning():
    rnn = nn.RNN(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.weight_norm(rnn, "weight_hh_l0")
    x = torch.randn(4, 2, 3)
    want = rnn(x)[0]
    fused = convert_rnns(rnn, backend="torch")
    assert type(fused) is FusedRNN and "weight_hh_l0_g" in dict(fused.named_parameters())
    assert "weight_hh_l0" not in dict(fused.named_parameters())
    assert torch.equal(fused(x)[0], want)
    with torch.no_grad():
        fused.weight_hh_l0_g.mul_(2)  # the pre-hook recomputes the weight from g and v at each call
    assert not torch.allclose(fused(x)[0], want)
    para = nn.RNN(3, 4)
    parametrize.register_parametrization(para, "weight_hh_l0", nn.Identity())
    with pytest.warns(UserWarning, match="parametrizations"):
        assert convert_rnns(para) is para


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(4, 20, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(40, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_converted_model_trains_step_by_step_as_the_original(backend, device):
    """20 Adam steps: float64 on PyTorch's path, float32 through the kernels (the interpreter on CPU)."""
    torch.set_float32_matmul_precision("highest")
    dtype = torch.float64 if backend == "torch" else torch.float32
    ref = Tagger().to(device, dtype)
    model = convert_rnns(copy.deepcopy(ref), backend=backend)
    assert type(model.rnn) is FusedRNN
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (ref, model)]
    x = torch.randn(3, 6, 4, device=device, dtype=dtype)
    y = torch.randint(0, 3, (3, 6), device=device)
    # float32: both runs round differently at each step, and 20 Adam steps carry that along
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for _ in range(20):
        losses = []
        for m, opt in zip((ref, model), opts, strict=True):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        assert rel_err(losses[1], losses[0]) <= tol
        for (n, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert rel_err(a, b) <= tol, n
    assert losses[0] < 0.9 * nn.functional.cross_entropy(Tagger().to(device, dtype)(x).flatten(0, 1), y.flatten())


def test_readme_convert_example_runs_as_written():
    """README's "Convert an existing model" example, verbatim, in a fresh process on the CPU."""
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("```python", text.index("### Convert an existing model")) + len("```python\n")
    code = text[start : text.index("```", start)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "FusedRNN True"
