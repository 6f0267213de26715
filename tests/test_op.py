"""The recurrence as a real PyTorch op: opcheck, torch.compile(fullgraph=True), export, meta/fake tensors, autocast."""

import pytest
import torch
from helpers import TOL, rel_err
from torch._subclasses.fake_tensor import FakeTensorMode

import fused_rnn.launch
from fused_rnn import CharLoopModel, FusedCharRNN, FusedRNN

BACKENDS = ["triton", "torch"]


def _rnn(backend, device):
    return FusedRNN(5, 20, 2, bidirectional=True, backend=backend).to(device)


def _char(backend, device):
    return FusedCharRNN(11, 5, 20, backend=backend).to(device)


@pytest.mark.parametrize(
    "lengths,reverse,relu",
    [
        pytest.param(None, False, False, id="plain"),
        pytest.param([4, 0, 2], True, False, id="lengths-reverse"),
        pytest.param([1, 4, 3], False, True, id="lengths-relu"),
    ],
)
def test_opcheck(lengths, reverse, relu, device):
    T, B, H = 4, 3, 20
    u, w, h0 = (torch.randn(*s, device=device, requires_grad=True) for s in ((T, B, H), (H, H), (B, H)))
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int32, device=device)
    torch.library.opcheck(torch.ops.fused_rnn.scan.default, (u, w, h0, lens, reverse, relu, ""))
    hs = torch.randn(T, B, H, device=device).tanh()
    args = (w.detach(), hs, torch.randn_like(hs), torch.randn(B, H, device=device), lens, reverse, relu, "")
    torch.library.opcheck(torch.ops.fused_rnn.scan_backward.default, args)


def _fwd_bwd(model, inputs, tokens: bool):
    """Outputs and every parameter's gradient (and the input's, for float inputs) of one forward + backward."""
    model.zero_grad()
    if tokens:
        out = model(*inputs)
        outs = [out]
    else:
        x = inputs[0].detach().requires_grad_()
        outs = list(model(x))
    sum(o.float().square().sum() for o in outs).backward()
    grads = [p.grad for p in model.parameters()] + ([] if tokens else [x.grad])
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["FusedRNN", "FusedCharRNN"])
def test_compile_fullgraph_forward_and_backward_equal_eager(which, backend, device):
    """The kernel path with inductor (the custom ops stay opaque), the torch path with aot_eager (quicker to build)."""
    torch.set_float32_matmul_precision("highest")
    torch._dynamo.reset()
    if which == "FusedRNN":
        model, inputs, tokens = _rnn(backend, device), (torch.randn(6, 3, 5, device=device),), False
    else:
        model, inputs, tokens = _char(backend, device), tuple(torch.randint(0, 11, (7, 3), device=device)), True
    compiled = torch.compile(model, fullgraph=True, backend="inductor" if backend == "triton" else "aot_eager")
    got_outs, got_grads = _fwd_bwd(compiled, inputs, tokens)
    want_outs, want_grads = _fwd_bwd(model, inputs, tokens)
    for got, want in zip(got_outs + got_grads, want_outs + want_grads, strict=True):
        assert rel_err(got, want) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_export(backend, device):
    x = torch.randn(6, 3, 5, device=device)
    model = _rnn(backend, device)
    ep = torch.export.export(model, (x,))
    ops = {str(n.target) for n in ep.graph.nodes}
    assert ("fused_rnn.scan.default" in ops) == (backend == "triton")
    for got, want in zip(ep.module()(x), model(x), strict=True):
        assert rel_err(got, want) <= TOL["fp32"]["fwd"]
    char = _char(backend, device)
    cs = tuple(torch.randint(0, 11, (7, 3), device=device))
    assert rel_err(torch.export.export(char, cs).module()(*cs), char(*cs)) <= TOL["fp32"]["fwd"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_meta_and_fake_tensors_propagate_shapes(backend):
    model = FusedRNN(5, 20, 2, bidirectional=True, backend=backend, device="meta")
    out, hn = model(torch.empty(6, 3, 5, device="meta"))
    assert out.shape == (6, 3, 40) and hn.shape == (4, 3, 20) and out.device.type == "meta"
    char = FusedCharRNN(11, 5, 20, backend=backend).to("meta")
    logp, hn = char.forward_sequence(torch.zeros(3, 7, dtype=torch.long, device="meta"))
    assert logp.shape == (3, 7, 11) and hn.shape == (3, 20)
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # where the triton backend runs (interpreter on CPU)
    with FakeTensorMode(), torch.device(dev):
        out, hn = FusedRNN(5, 20, 2, backend=backend)(torch.empty(6, 3, 5))
        assert out.shape == (6, 3, 20) and hn.shape == (2, 3, 20) and out.device.type == dev
        logp = FusedCharRNN(11, 5, 20, backend=backend)(*torch.zeros(7, 3, dtype=torch.long))
        assert logp.shape == (3, 11) and logp.device.type == dev


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_bfloat16_autocast_runs_like_nn_rnn(backend):
    if backend == "triton" and not fused_rnn.launch.interpreted():
        pytest.skip("CPU tensors run the triton backend only in Triton's interpreter (the CUDA test covers autocast)")
    torch.set_float32_matmul_precision("highest")
    ref = torch.nn.RNN(5, 20, 2, bidirectional=True)
    model = FusedRNN(5, 20, 2, bidirectional=True, backend=backend)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, hn = model(x)
        rout, rhn = ref(x)
    assert out.dtype == rout.dtype == torch.bfloat16 and hn.dtype == rhn.dtype
    exact = ref.double()(x.bfloat16().double())  # nn.RNN on the bf16-rounded input in float64
    assert rel_err(out, exact[0]) <= TOL[torch.bfloat16]["fwd"]
    char_ref = CharLoopModel(11, 5, 20)
    char = FusedCharRNN(11, 5, 20, backend=backend)
    char.load_state_dict(char_ref.state_dict())
    cs = tuple(torch.randint(0, 11, (7, 3)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, want = char(*cs), char_ref(*cs)
    assert logp.dtype == want.dtype
    assert rel_err(logp.exp(), char_ref.double()(*cs).exp()) <= TOL[torch.bfloat16]["fwd"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA autocast needs a GPU")
def test_cuda_float16_autocast_runs_like_nn_rnn():
    ref = torch.nn.RNN(5, 20, 2, bidirectional=True).cuda()
    model = FusedRNN(5, 20, 2, bidirectional=True).cuda()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 5, device="cuda")
    with torch.autocast("cuda"):
        out, hn = model(x)
        rout, rhn = ref(x)
    assert out.dtype == rout.dtype == torch.float16 and hn.dtype == rhn.dtype
    exact = ref.double()(x.half().double())
    assert rel_err(out, exact[0]) <= TOL[torch.float16]["fwd"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device-sync checks need a GPU")
def test_no_host_sync_in_any_forward():
    model = _rnn("auto", "cuda")
    char = _char("auto", "cuda")
    x = torch.randn(6, 3, 5, device="cuda")
    cs = tuple(torch.randint(0, 11, (7, 3), device="cuda"))
    model(x), char(*cs)  # warm up: compile the kernels and read the device properties once
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(x)
        char(*cs)
        char.forward_sequence(torch.stack(cs, 1))
    finally:
        torch.cuda.set_sync_debug_mode(0)
