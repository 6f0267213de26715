"""FusedRNN against torch.nn.RNN in float64: every constructor argument and input kind, outputs and gradients."""

import random

import pytest
import torch
from helpers import TOL, rel_err
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from fused_rnn import FusedRNN

INPUT_KINDS = ("batched", "unbatched", "packed-sorted", "packed-unsorted")


@pytest.fixture(autouse=True)
def _no_tf32():
    """nn.RNN's float32 reference (cuDNN on a GPU) in true float32: cuDNN allows TF32 by default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def _configs(n: int = 16) -> list:
    """Random constructor arguments and input kinds, drawn once (the ids name them); inputs are fresh per run."""
    rng = random.Random(2026)
    out = []
    for i in range(n):
        c = dict(
            input_size=rng.choice([1, 3, 7]),
            hidden_size=rng.choice([1, 5, 20, 33]) if i else 150,  # one config on the split kernels
            num_layers=rng.choice([1, 2, 3]),
            nonlinearity=rng.choice(["tanh", "relu"]),
            bias=rng.random() < 0.7,
            batch_first=rng.random() < 0.5,
            bidirectional=rng.random() < 0.5,
        )
        kind = INPUT_KINDS[i % 4]
        T, B = rng.randint(1, 6), rng.randint(1, 5)
        with_hx = rng.random() < 0.6
        cid = (
            f"{kind}-T{T}-B{B}-I{c['input_size']}-H{c['hidden_size']}-L{c['num_layers']}-{c['nonlinearity']}"
            + ("-bias" if c["bias"] else "")
            + ("-bf" if c["batch_first"] else "")
            + ("-bi" if c["bidirectional"] else "")
            + ("-hx" if with_hx else "")
        )
        out.append(pytest.param(c, kind, T, B, with_hx, id=cid))
    return out


def _inputs(cfg, kind, T, B, device, dtype):
    """The input in `kind`'s form and hx (or None), as leaves that collect gradients."""
    D = 2 if cfg["bidirectional"] else 1
    x = torch.randn(T, B, cfg["input_size"], device=device, dtype=dtype)
    lengths = None
    if kind.startswith("packed"):
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        if kind == "packed-sorted":
            lengths = lengths.sort(descending=True).values
    if kind == "unbatched":
        x = x[:, 0]
        hx = torch.randn(D * cfg["num_layers"], cfg["hidden_size"], device=device, dtype=dtype)
    else:
        hx = torch.randn(D * cfg["num_layers"], x.shape[1], cfg["hidden_size"], device=device, dtype=dtype)
    return x.requires_grad_(), hx.requires_grad_(), lengths


def _run(model, x, hx, lengths, kind, batch_first):
    """Forward in `kind`'s form; returns a padded (T, B, *) output (zeros past lengths) and h_n."""
    if kind.startswith("packed"):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=kind == "packed-sorted")
        out, hn = model(packed, hx)
        assert isinstance(out, PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]
        return out, hn
    if kind == "batched" and batch_first:
        out, hn = model(x.transpose(0, 1), hx)
        return out.transpose(0, 1), hn
    return model(x, hx)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("cfg,kind,T,B,with_hx", _configs())
def test_matches_nn_rnn(cfg, kind, T, B, with_hx, backend, device, poison):
    torch.set_float32_matmul_precision("highest")
    ref = nn.RNN(**cfg).to(device)
    model = FusedRNN(**cfg, backend=backend).to(device)
    model.load_state_dict(ref.state_dict())
    ref32 = nn.RNN(**cfg).to(device)  # PyTorch's own float32, for the bound where cancellation dominates
    ref32.load_state_dict(ref.state_dict())
    ref = ref.double()
    x, hx, lengths = _inputs(cfg, kind, T, B, device, torch.float32)
    hx_arg = hx if with_hx else None
    out, hn = _run(model, x, hx_arg, lengths, kind, cfg["batch_first"])
    xr, hxr = (t.detach().double().requires_grad_() for t in (x, hx))
    rout, rhn = _run(ref, xr, hxr if with_hx else None, lengths, kind, cfg["batch_first"])
    x32, hx32 = (t.detach().clone().requires_grad_() for t in (x, hx))
    out32, hn32 = _run(ref32, x32, hx32 if with_hx else None, lengths, kind, cfg["batch_first"])
    assert out.shape == rout.shape and hn.shape == rhn.shape and out.dtype == torch.float32
    tol = TOL["fp32"]
    assert rel_err(out, rout) <= tol["fwd"]
    assert rel_err(hn, rhn) <= tol["fwd"]
    dout, dhn = torch.randn_like(rout), torch.randn_like(rhn)
    ((out * dout.float()).sum() + (hn * dhn.float()).sum()).backward()
    ((rout * dout).sum() + (rhn * dhn).sum()).backward()
    ((out32 * dout.float()).sum() + (hn32 * dhn.float()).sum()).backward()
    grads = [("input", x.grad, xr.grad, x32.grad)] + ([("hx", hx.grad, hxr.grad, hx32.grad)] if with_hx else [])
    ref_params, ref32_params = dict(ref.named_parameters()), dict(ref32.named_parameters())
    grads += [(n, p.grad, ref_params[n].grad, ref32_params[n].grad) for n, p in model.named_parameters()]
    # A small gradient that is a cancelling sum (H = 1: one number) is ill-conditioned beyond 1e-5 for any
    # float32 code (nn.RNN's own float32 reaches 2e-4 on such draws), so each gradient is held to 1e-5 of
    # itself, or of the largest gradient's norm, or to 4x nn.RNN's own float32 error, whichever is widest.
    scale = max(want.norm().item() for _, _, want, _ in grads)
    for name, got, want, torch32 in grads:
        assert got is not None and got.shape == want.shape, name
        err = (got.double() - want).norm().item()
        bound = max(tol["bwd"] * want.norm().item(), tol["bwd"] * scale, 4 * (torch32.double() - want).norm().item())
        assert not torch.isnan(got).any() and err <= bound, (name, err, bound)


def test_state_dict_both_ways_and_parameter_names(device):
    for kw in (dict(num_layers=2, bidirectional=True), dict(bias=False, nonlinearity="relu")):
        ref = nn.RNN(4, 6, **kw)
        model = FusedRNN(4, 6, **kw)
        assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
        model.load_state_dict(ref.state_dict())
        ref.load_state_dict(FusedRNN(4, 6, **kw).state_dict())
        assert [len(w) for w in model.all_weights] == [len(w) for w in ref.all_weights]


def test_bfloat16_matches_nn_rnn_float64(device):
    cfg = dict(input_size=5, hidden_size=20, num_layers=2, bidirectional=True)
    ref = nn.RNN(**cfg).to(device)
    model = FusedRNN(**cfg, backend="triton").to(device, torch.bfloat16)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(6, 17, 5, device=device)
    lengths = torch.randint(1, 7, (17,))
    out, hn = model(pack_padded_sequence(x.bfloat16(), lengths, enforce_sorted=False))
    rout, rhn = ref.double()(pack_padded_sequence(x.bfloat16().double(), lengths, enforce_sorted=False))
    assert out.data.dtype == torch.bfloat16
    assert rel_err(out.data, rout.data) <= TOL[torch.bfloat16]["fwd"]
    assert rel_err(hn, rhn) <= TOL[torch.bfloat16]["fwd"]


def test_dropout_between_layers_in_training_only(device):
    cfg = dict(input_size=3, hidden_size=8, num_layers=3, dropout=1.0)
    torch.set_float32_matmul_precision("highest")
    ref = nn.RNN(**cfg)  # on the CPU: cuDNN's own dropout at p = 1 is not the reference here
    model = FusedRNN(**cfg, backend="triton").to(device)
    model.load_state_dict(ref.state_dict())
    ref.double()
    x = torch.randn(4, 2, 3, device=device)
    outs = {}
    for train in (True, False):  # p = 1 zeroes every layer's input but the first: deterministic
        ref.train(train)
        model.train(train)
        outs[train] = model(x)[0]
        assert rel_err(outs[train], ref(x.cpu().double())[0]) <= TOL["fp32"]["fwd"]
    assert not torch.allclose(outs[True], outs[False])
    model.dropout = 0.5
    model.train()
    a, b = model(x)[0], model(x)[0]
    assert not torch.equal(a, b)  # fresh masks each call
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize(
    "make,err,match",
    [
        pytest.param(lambda m: m(torch.randn(5, 3, 7)), RuntimeError, "Expected 10, got 7", id="input-size"),
        pytest.param(lambda m: m(torch.randn(2, 5, 3, 10)), ValueError, "Expected input to be 2D or 3D", id="4d"),
        pytest.param(
            lambda m: m(torch.randn(5, 3, 10), torch.randn(1, 3, 20)), RuntimeError, r"hidden size \(2, 3, 20\)",
            id="hx-shape",
        ),
        pytest.param(
            lambda m: m(torch.randn(5, 10), torch.randn(2, 1, 20)), RuntimeError, "hx should also be 2-D",
            id="hx-unbatched",
        ),
        pytest.param(
            lambda m: m(torch.randn(5, 3, 10).double()), ValueError, "does not match weight dtype", id="dtype"
        ),
    ],
)  # fmt: skip
def test_bad_input_raises_like_nn_rnn(make, err, match, device):
    model = FusedRNN(10, 20, 2)
    with pytest.raises(err, match=match):
        make(model)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(hidden_size=0), "hidden_size must be greater than zero"),
        (dict(nonlinearity="gelu"), "Unknown nonlinearity 'gelu'"),
        (dict(dropout=2), "dropout should be a number in range"),
        (dict(num_layers=0), "num_layers must be greater than zero"),
        (dict(backend="cuda"), "backend"),
    ],
)
def test_bad_constructor_arguments(kw, match):
    args = dict(input_size=10, hidden_size=20) | kw
    with pytest.raises(ValueError, match=match):
        FusedRNN(**args)
