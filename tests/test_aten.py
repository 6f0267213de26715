"""fused_rnn.enable(): unmodified nn.RNN code runs the kernels (aten::rnn_tanh / rnn_relu overridden), with gradients.

On a CPU-only machine the override is registered for the CPU keys too (the test-only `_cpu` switch), so the
kernels run in Triton's interpreter; on CUDA the tests run on the GPU with the real registration.
"""

import pytest
import torch
from helpers import TOL, rel_err
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_rnn
import fused_rnn.launch


@pytest.fixture
def cpu_keys(device):
    """The test-only CPU registration where the kernels run on the CPU (the interpreter)."""
    return device.type == "cpu"


@pytest.fixture(autouse=True)
def _always_disabled_after():
    yield
    fused_rnn.disable()


def _calls() -> int:
    return sum(fused_rnn.launch.LAUNCHER_CALLS.values())


def _run(rnn, x, hx, packed_lengths=None):
    """Output (padded if packed), h_n and every gradient of one forward + backward with fixed cotangents."""
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    hx = hx.detach().requires_grad_()
    inp = x if packed_lengths is None else pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
    out, hn = rnn(inp, hx)
    if packed_lengths is not None:
        out = pad_packed_sequence(out, total_length=x.shape[0])[0]
    g = torch.Generator(device="cpu").manual_seed(0)
    dout = torch.randn(out.shape, generator=g).to(out.device)
    dhn = torch.randn(hn.shape, generator=g).to(hn.device)
    ((out * dout).sum() + (hn * dhn).sum()).backward()
    return [out, hn, x.grad, hx.grad] + [p.grad for p in rnn.parameters()]


CASES = [
    pytest.param(dict(num_layers=2, bidirectional=True), False, id="tanh-2-layers-bidir"),
    pytest.param(dict(nonlinearity="relu", bias=False, batch_first=True), False, id="relu-no-bias-batch-first"),
    pytest.param(dict(num_layers=2), True, id="packed-2-layers"),
    pytest.param(dict(nonlinearity="relu", bidirectional=True), True, id="packed-relu-bidir"),
]


@pytest.mark.parametrize("kw,packed", CASES)
def test_nn_rnn_runs_the_kernels_while_enabled_with_the_same_outputs_and_gradients(kw, packed, device, cpu_keys):
    torch.set_float32_matmul_precision("highest")
    rnn = nn.RNN(3, 20, **kw).to(device)
    T, B = 5, 3
    x = torch.randn(B, T, 3, device=device) if kw.get("batch_first") else torch.randn(T, B, 3, device=device)
    hx = torch.randn((2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1), B, 20, device=device)
    lengths = torch.tensor([5, 2, 4]) if packed else None
    want = _run(rnn, x, hx, lengths)
    start = dict(fused_rnn.launch.LAUNCHER_CALLS)
    with fused_rnn.enabled(_cpu=cpu_keys):
        assert fused_rnn.is_enabled()
        got = _run(rnn, x, hx, lengths)
    assert not fused_rnn.is_enabled()
    # the kernels ran: one forward and one backward per layer and direction
    layers = (2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1)
    ran = {k: v - start[k] for k, v in fused_rnn.launch.LAUNCHER_CALLS.items()}
    assert ran == dict(forward=layers, backward=layers)
    ran = _calls()
    again = _run(rnn, x, hx, lengths)  # after disable: PyTorch's own, bit for bit the first run
    assert _calls() == ran
    for a, b, c in zip(got, want, again, strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["bwd"]
        assert torch.equal(c, b)


def test_enable_disable_and_inference_mode(device, cpu_keys):
    rnn = nn.RNN(4, 16).to(device)
    x = torch.randn(6, 2, 4, device=device)
    with torch.no_grad():
        want = rnn(x)[0]
    fused_rnn.enable(_cpu=cpu_keys)
    fused_rnn.enable(_cpu=cpu_keys)  # idempotent
    start = _calls()
    with torch.inference_mode():  # no autograd keys: the plain device key's registration
        got = rnn(x)[0]
    assert _calls() == start + 1
    with torch.no_grad():
        rnn(x)
    assert _calls() == start + 2
    fused_rnn.disable()
    fused_rnn.disable()
    rnn(x)
    assert _calls() == start + 2
    assert rel_err(got, want) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize(
    "what",
    ["float64", "H over the kernels' limit", "hx float64", "T = 0"],
)
def test_what_the_kernels_do_not_take_runs_pytorch_unchanged(what, device, cpu_keys):
    H = 1100 if what.startswith("H over") else 8
    dtype = torch.float64 if what == "float64" else torch.float32
    rnn = nn.RNN(2, H).to(device, dtype)
    x = torch.randn(0 if what == "T = 0" else 3, 2, 2, device=device, dtype=dtype)
    hx = torch.randn(1, 2, H, device=device, dtype=torch.float64 if what == "hx float64" else dtype)

    def outcome():
        try:
            return rnn(x, hx)
        except Exception as exc:  # noqa: BLE001 - compared with PyTorch's own
            return type(exc), str(exc)

    want = outcome()
    start = _calls()
    with fused_rnn.enabled(_cpu=cpu_keys):
        got = outcome()
    assert _calls() == start  # no kernel ran
    if isinstance(want, tuple) and isinstance(want[0], type):
        assert got == want
    else:
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def _run_gated(mod, x, hx, packed_lengths=None):
    """Output, h_n (and c_n) and every gradient of one forward + backward of nn.LSTM / nn.GRU."""
    mod.zero_grad()
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in hx) if isinstance(hx, tuple) else hx.detach().requires_grad_()
    inp = x if packed_lengths is None else pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
    out, hn = mod(inp, hx)
    if packed_lengths is not None:
        out = pad_packed_sequence(out, total_length=x.shape[0])[0]
    states = list(hn) if isinstance(hn, tuple) else [hn]
    g = torch.Generator(device="cpu").manual_seed(0)
    loss = (out * torch.randn(out.shape, generator=g).to(out.device)).sum()
    for s in states:
        loss = loss + (s * torch.randn(s.shape, generator=g).to(s.device)).sum()
    loss.backward()
    hgrads = [h.grad for h in hx] if isinstance(hx, tuple) else [hx.grad]
    return [out, *states, x.grad, *hgrads] + [p.grad for p in mod.parameters()]


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_nn_lstm_and_gru_run_the_kernels_while_enabled(kind, packed, device, cpu_keys):
    """aten::lstm / aten::gru overridden: nn.LSTM / nn.GRU run the gated kernels, outputs and gradients as PyTorch's
    own within the fp32 table; after disable() PyTorch's own, bit for bit."""
    torch.set_float32_matmul_precision("highest")
    mod = kind(3, 20, num_layers=2, bidirectional=True).to(device)
    T, B = 5, 3
    x = torch.randn(T, B, 3, device=device)
    h = torch.randn(4, B, 20, device=device)
    hx = (h, torch.randn_like(h)) if kind is nn.LSTM else h
    lengths = torch.tensor([5, 2, 4]) if packed else None
    want = _run_gated(mod, x, hx, lengths)
    start = dict(fused_rnn.launch.GATED_CALLS)
    with fused_rnn.enabled(_cpu=cpu_keys):
        got = _run_gated(mod, x, hx, lengths)
    ran = {k: v - start[k] for k, v in fused_rnn.launch.GATED_CALLS.items()}
    assert ran == dict(forward=4, backward=4)  # one per layer and direction, each way
    again = _run_gated(mod, x, hx, lengths)
    for a, b, c in zip(got, want, again, strict=True):
        assert rel_err(a, b) <= TOL["fp32"]["bwd"]
        assert torch.equal(c, b)


def test_lstm_projections_stay_on_pytorchs_kernel_while_enabled(device, cpu_keys):
    mod = nn.LSTM(3, 8, proj_size=4).to(device)
    x = torch.randn(5, 2, 3, device=device)
    want = mod(x)[0]
    start = dict(fused_rnn.launch.GATED_CALLS)
    with fused_rnn.enabled(_cpu=cpu_keys):
        got = mod(x)[0]
    assert fused_rnn.launch.GATED_CALLS == start and torch.equal(got, want)
