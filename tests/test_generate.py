"""`FusedCharRNN.generate`: the one-launch kernel, the per-step path and the PyTorch path against float64.

The float64 truth is the same model in float64 run over the prime followed by the generated tokens
(teacher-forced): its log-probabilities at every generated position are what each token was drawn from.
"""

import copy

import pytest
import torch
import triton
import triton.language as tl

import fused_rnn.generate as G
from fused_rnn import FusedCharRNN
from fused_rnn import launch as L
from fused_rnn.reference import gumbel_noise, philox4x32, philox_uniform


def _model(V: int, H: int, device, scale: float = 1.0) -> FusedCharRNN:
    """A fresh model; `scale` sharpens the output distribution (larger logits)."""
    m = FusedCharRNN(V, 8, H).to(device)
    with torch.no_grad():
        m.l_out.weight.mul_(scale)
    return m


def _logp64(model: FusedCharRNN, prime: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Float64 log-probabilities (B, L, V) of every generated position, teacher-forced on `tokens`."""
    m64 = copy.deepcopy(model).cpu().double()
    seq = torch.cat([prime.cpu(), tokens.cpu()], 1)[:, :-1]
    with torch.no_grad():
        logp, _ = m64.forward_sequence(seq)
    return logp[:, prime.shape[1] - 1 :]


def _triton_or_skip(device):
    if L.unavailable_reason(device) is not None:
        pytest.skip(L.unavailable_reason(device))


# --------------------------------------------------------------------------------------------- Philox


def test_philox_known_answers():
    """Random123's Philox4x32-10 known-answer vectors (kat_vectors): the PyTorch function is Philox itself."""
    z, f = torch.zeros(1, dtype=torch.long), torch.full((1,), 0xFFFFFFFF)
    assert [int(x) for x in philox4x32(z, z, z, z, 0, 0)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert [int(x) for x in philox4x32(f, f, f, f, 0xFFFFFFFF, 0xFFFFFFFF)] == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD,
    ]  # fmt: skip


def test_philox_numpy_and_torch_give_the_same_bits():
    """CPU tensors run Philox in numpy, others in torch ops: the same function."""
    from fused_rnn.reference import _philox4x32_torch

    c = [torch.randint(0, 2**32, (300,)) for _ in range(4)]
    keys = (torch.randint(0, 2**32, ()).item(), torch.randint(0, 2**32, ()).item())
    for a, b in zip(philox4x32(*c, *keys), _philox4x32_torch(*c, *keys, 10), strict=True):
        assert torch.equal(a, b)


@triton.jit
def _rand_kernel(seed, offs, out, N, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < N
    tl.store(out + o, tl.rand(tl.load(seed), tl.load(offs + o, mask=m, other=0)), mask=m)


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 5, 2**63 - 1])
def test_philox_uniform_is_tl_rand_bit_for_bit(seed, device):
    _triton_or_skip(device)
    offs = torch.cat([torch.randint(0, 2**62, (200,)), torch.tensor([0, 1, 2**32 - 1, 2**32, 2**33 + 5])]).to(device)
    out = torch.empty(offs.shape, dtype=torch.float32, device=device)
    _rand_kernel[(1,)](torch.tensor([seed], device=device), offs, out, offs.numel(), BLOCK=256)
    assert torch.equal(out.cpu(), philox_uniform(seed, offs.cpu()))


@triton.jit
def _rand4x_kernel(seed, offs, out, N, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < N
    u0, u1, u2, u3 = tl.rand4x(tl.load(seed), tl.load(offs + o, mask=m, other=0))
    tl.store(out + o * 4, u0, mask=m)
    tl.store(out + o * 4 + 1, u1, mask=m)
    tl.store(out + o * 4 + 2, u2, mask=m)
    tl.store(out + o * 4 + 3, u3, mask=m)


def test_philox_uniform4_is_tl_rand4x_bit_for_bit(device):
    """The four words the generation kernels draw from, as `fused_rnn.reference.philox_uniform4` makes them."""
    _triton_or_skip(device)
    from fused_rnn.reference import philox_uniform4

    seed = 2**40 + 17
    offs = torch.randint(0, 2**62, (100,), device=device)
    out = torch.empty(100, 4, dtype=torch.float32, device=device)
    _rand4x_kernel[(1,)](torch.tensor([seed], device=device), offs, out, 100, BLOCK=128)
    assert torch.equal(out.cpu(), philox_uniform4(seed, offs.cpu()))


def test_gumbel_noise_is_keyed_by_stream_and_step():
    """A (stream, step) draw is the same whichever streams and steps are made with it."""
    V = 7
    big = gumbel_noise(3, torch.arange(5), torch.arange(9), V)
    assert torch.equal(big[3:4, 4:6], gumbel_noise(3, torch.tensor([3]), torch.tensor([4, 5]), V))
    assert not torch.equal(big, gumbel_noise(4, torch.arange(5), torch.arange(9), V))
    assert torch.isfinite(big).all() and abs(big.mean().item() - 0.5772) < 0.15  # Gumbel's mean is Euler's gamma


# --------------------------------------------------------------------------------------------- float64 truth


@pytest.mark.parametrize("B,H,V,L", [(1, 20, 17, 16), (17, 100, 65, 6)])
def test_greedy_is_the_float64_argmax_and_logp_matches(B, H, V, L, device, poison):
    _triton_or_skip(device)
    model = _model(V, H, device, scale=3.0)
    prime = torch.randint(0, V, (B, 3), device=device)
    tokens, logp = model.generate(prime, L, temperature=0, return_logp=True, backend="triton")
    assert tokens.shape == (B, L) and tokens.dtype == torch.int64 and logp.shape == (B, L, V)
    ref = _logp64(model, prime, tokens)
    assert (logp.cpu().double() - ref).abs().max() < 1e-4
    top2 = ref.topk(2, -1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-6  # a float32 model cannot separate closer ties
    assert clear.float().mean() > 0.9
    assert torch.equal(tokens.cpu()[clear], ref.argmax(-1)[clear])


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5), (1.3, 1)])
def test_sampled_logp_matches_float64_and_tokens_stay_in_the_top_k(temperature, top_k, device, poison):
    _triton_or_skip(device)
    B, H, V, Ln = 5, 32, 23, 10
    model = _model(V, H, device, scale=2.0)
    prime = torch.randint(0, V, (B, 2), device=device)
    tokens, logp = model.generate(prime, Ln, temperature=temperature, top_k=top_k, seed=7, return_logp=True)
    ref = _logp64(model, prime, tokens)
    assert (logp.cpu().double() - ref).abs().max() < 1e-4
    if top_k:  # the drawn token's log-probability is at least the k-th largest of its row (ties kept)
        kth = logp.topk(top_k, -1).values[..., -1]
        assert (logp.gather(-1, tokens[..., None])[..., 0] >= kth).all()


def test_same_seed_same_tokens_other_seed_others(device):
    _triton_or_skip(device)
    model = _model(31, 24, device)
    prime = torch.randint(0, 31, (4, 3), device=device)
    a = model.generate(prime, 16, seed=11)
    assert torch.equal(a, model.generate(prime, 16, seed=11))
    assert not torch.equal(a, model.generate(prime, 16, seed=12))


def test_top_k_one_is_greedy(device):
    _triton_or_skip(device)
    model = _model(19, 20, device, scale=3.0)
    prime = torch.randint(0, 19, (3, 2), device=device)
    greedy = model.generate(prime, 12, temperature=0)
    assert torch.equal(model.generate(prime, 12, temperature=1.5, top_k=1, seed=3), greedy)


@pytest.mark.parametrize("path", ["one_launch", "steps"])
@pytest.mark.parametrize("temperature,top_k", [(0.0, 0), (0.9, 0), (1.0, 4)])
def test_kernels_and_pytorch_path_draw_the_same_tokens(path, temperature, top_k, device, monkeypatch):
    """Same seed, same text on the kernels (either path) and on the PyTorch path, and per stream whatever B is."""
    _triton_or_skip(device)
    if path == "steps":  # the per-step path on a small model, as larger models take it
        monkeypatch.setattr(G, "one_launch_config", lambda *a, **k: None)
    B, H, V, Ln = 17, 20, 29, 8
    model = _model(V, H, device, scale=2.0)
    prime = torch.randint(0, V, (B, 3), device=device)
    kw = dict(temperature=temperature, top_k=top_k, seed=2**40 + 3, return_logp=True)
    assert G.choose_path(model, B, "triton")[0] == path
    tk, lk = model.generate(prime, Ln, backend="triton", **kw)
    tt, lt = model.generate(prime, Ln, backend="torch", **kw)
    assert torch.equal(tk.cpu(), tt.cpu())
    assert (lk - lt).abs().max() < 1e-5
    # streams 0-4 alone (another B, one program instead of two) draw what they drew among 17
    assert torch.equal(model.generate(prime[:5], Ln, backend="triton", **kw)[0], tk[:5])


@pytest.mark.parametrize("draw", ["kernel", "pytorch"])
def test_per_step_path_transposes_the_weight_once(draw, device, monkeypatch):
    """The per-step path hands every T = 1 launch the same W^T, made once per call, not once per step."""
    _triton_or_skip(device)
    monkeypatch.setattr(G, "one_launch_config", lambda *a, **k: None)
    if draw == "pytorch":
        monkeypatch.setattr(G, "DRAW_CONFIGS", {})
    given, forward = [], L.forward

    def spy(*args, **kwargs):
        if kwargs.get("wt") is not None:
            given.append(kwargs["wt"])
        return forward(*args, **kwargs)

    monkeypatch.setattr(L, "forward", spy)
    model = _model(11, 20, device)
    prime = torch.randint(0, 11, (3, 2), device=device)
    tokens = model.generate(prime, 5, backend="triton", seed=1)
    assert tokens.shape == (3, 5)
    assert len(given) >= 4 and all(w is given[0] for w in given), len(given)
    assert torch.equal(given[0], model.l_hidden.weight.t()) and given[0].is_contiguous()


def test_draw_in_pytorch_ops_beyond_the_draw_kernel(device, monkeypatch):
    """No draw kernel for V on the card: the per-step path draws with PyTorch ops on the kernels' recurrence."""
    _triton_or_skip(device)
    monkeypatch.setattr(G, "one_launch_config", lambda *a, **k: None)
    monkeypatch.setattr(G, "DRAW_CONFIGS", {})
    model = _model(13, 20, device, scale=2.0)
    prime = torch.randint(0, 13, (3, 2), device=device)
    kw = dict(temperature=0.8, top_k=6, seed=5)
    got = model.generate(prime, 6, backend="triton", **kw)
    assert torch.equal(got, model.generate(prime, 6, backend="torch", **kw))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_frequencies_match_softmax_over_the_top_k(backend, device):
    """4,000 seeded streams from one prime: each first character's frequency within 5 sigma of
    softmax(logp / T) over the top k (float64), and nothing drawn outside the top k.

    Applying T twice (softmax(logp / T**2)) or ignoring top-k moves some probability by over 10 sigma.
    """
    if backend == "triton":
        _triton_or_skip(device)
    V, T, k, n = 12, 0.7, 5, 4000
    model = _model(V, 16, device, scale=0.3)
    with torch.no_grad():  # logits spread over about 6 nats, mostly by the bias: T and T**2 differ clearly
        model.l_out.bias.copy_(torch.linspace(-3.0, 3.0, V)[torch.randperm(V)])
    prime = torch.randint(0, V, (1, 3), device=device).expand(n, 3)
    tokens = model.generate(prime, 1, temperature=T, top_k=k, seed=1234, backend=backend)
    logp = _logp64(model, prime[:1], tokens[:1])[0, 0]
    z = logp / T
    keep = z >= z.topk(k).values[-1]
    p = torch.softmax(z.masked_fill(~keep, float("-inf")), -1)
    counts = torch.bincount(tokens[:, 0].cpu(), minlength=V).double()
    assert counts[~keep].sum() == 0
    sigma = (p * (1 - p) / n).sqrt()
    assert ((counts / n - p).abs() <= 5 * sigma + 1e-12).all(), (counts / n, p)
    wrong = torch.softmax((logp / T**2).masked_fill(~keep, float("-inf")), -1)
    assert ((counts / n - wrong).abs() > 10 * sigma).any()


# --------------------------------------------------------------------------------------------- edges and refusals


def test_empty_requests(device):
    model = _model(11, 16, device)
    prime = torch.randint(0, 11, (3, 2), device=device)
    assert model.generate(prime, 0).shape == (3, 0)
    tokens, logp = model.generate(prime[:0], 5, return_logp=True)
    assert tokens.shape == (0, 5) and logp.shape == (0, 5, 11)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(length=-1), "length"),
        (dict(length=2.0), "length"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**63), "seed"),
        (dict(backend="cuda"), "backend"),
        (dict(return_logp=1), "return_logp"),
        (dict(prime=torch.zeros(3, dtype=torch.long)), "prime"),  # 1-D
        (dict(prime=torch.zeros(2, 0, dtype=torch.long)), "prime"),  # P = 0
        (dict(prime=torch.zeros(2, 3)), "prime"),  # float
        (dict(prime=torch.full((2, 3), 11)), "prime"),  # index = V
        (dict(prime=torch.full((2, 3), -1)), "prime"),
        (dict(prime=[[1, 2]]), "prime"),
    ],
)
def test_bad_input_is_refused_before_any_launch(kwargs, name, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("ran before the arguments were checked")

    monkeypatch.setattr(G, "rnn_scan", boom)
    monkeypatch.setattr(G, "_generate_triton", boom)
    monkeypatch.setattr(G, "_generate_torch", boom)
    monkeypatch.setattr(G, "table_of", boom)
    model = _model(11, 16, "cpu")
    args = dict(prime=torch.randint(0, 11, (2, 3)), length=4) | kwargs
    with pytest.raises((ValueError, TypeError, IndexError), match=name):
        model.generate(args.pop("prime"), args.pop("length"), **args)


def test_length_limit_of_the_counters():
    model = _model(11, 16, "cpu")
    with pytest.raises(ValueError, match="length: at most"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 2**32 // 3 + 1)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)])
@pytest.mark.parametrize("path", ["one_launch", "steps"])
def test_half_precision_models(dtype, tol, path, device, poison, monkeypatch):
    """float16 / bfloat16 weights (tensor-core dots on a GPU): log-probabilities within the dtype's rounding of
    float64's (measured 4e-4 / 4e-3 at most over 3 seeds), tokens in range, every output written."""
    _triton_or_skip(device)
    if path == "steps":
        monkeypatch.setattr(G, "one_launch_config", lambda *a, **k: None)
    model = _model(23, 32, device, scale=2.0).to(dtype)
    prime = torch.randint(0, 23, (3, 2), device=device)
    assert G.choose_path(model, 3, "triton")[0] == path
    tokens, logp = model.generate(prime, 6, temperature=0.9, top_k=5, seed=1, return_logp=True)
    assert logp.dtype == torch.float32 and ((tokens >= 0) & (tokens < 23)).all()
    ref = _logp64(model, prime, tokens)
    assert (logp.cpu().double() - ref).abs().max() < tol
