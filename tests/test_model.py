"""FusedCharRNN is a drop-in for CharLoopModel: same parameters, outputs and gradients."""

import pytest
import torch
import torch.nn.functional as F
from helpers import TOL, rel_err

from fused_rnn import CharLoopModel, FusedCharRNN

V, NFAC = 13, 7


def pair(H, device):
    ref = CharLoopModel(V, NFAC, H).to(device)
    fused = FusedCharRNN(V, NFAC, H, backend="triton").to(device)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def test_state_dict_both_ways(device):
    ref, fused = pair(16, device)
    assert list(ref.state_dict()) == list(fused.state_dict())
    back = CharLoopModel(V, NFAC, 16).to(device)
    back.load_state_dict(fused.state_dict())
    for a, b in zip(back.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = CharLoopModel(V, NFAC, 16)
    torch.manual_seed(3)
    b = FusedCharRNN(V, NFAC, 16)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    "B,T,H",
    [
        pytest.param(1, 1, 20, id="B1-T1-H20"),
        pytest.param(17, 9, 100, id="B17-T9-H100"),
        pytest.param(3, 5, 256, id="B3-T5-H256"),
    ],
)
def test_forward_and_grads_match_reference(B, T, H, device, poison):
    torch.set_float32_matmul_precision("highest")
    ref, fused = pair(H, device)
    ref64 = CharLoopModel(V, NFAC, H).double()
    ref64.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, V, (B, T), device=device)
    target = torch.randint(0, V, (B,), device=device)
    out = fused(*tokens.t())
    out64 = ref64(*tokens.cpu().t())
    assert out.shape == (B, V)
    assert rel_err(out, out64) <= TOL["fp32"]["fwd"]
    F.nll_loss(out, target).backward()
    F.nll_loss(out64, target.cpu()).backward()
    for (name, p), p64 in zip(fused.named_parameters(), ref64.parameters(), strict=True):
        assert rel_err(p.grad, p64.grad) <= TOL["fp32"]["bwd"], name


def test_forward_is_last_position_of_forward_sequence(device):
    torch.set_float32_matmul_precision("highest")
    ref, fused = pair(20, device)
    tokens = torch.randint(0, V, (4, 6), device=device)
    logp, hn = fused.forward_sequence(tokens)
    assert logp.shape == (4, 6, V) and hn.shape == (4, 20)
    # bit-equal on the CPU; cuBLAS may pick another kernel for the (B, H) and (B * T, H) output layers
    exact = device.type == "cpu"
    torch.testing.assert_close(fused(*tokens.t()), logp[:, -1], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
    for t in range(6):  # every position is the many-to-one model on the prefix
        assert rel_err(logp[:, t], ref(*tokens[:, : t + 1].t())) <= TOL["fp32"]["fwd"]
    ref_logp, ref_hn = ref.forward_sequence(tokens)
    assert rel_err(logp, ref_logp) <= TOL["fp32"]["fwd"] and rel_err(hn, ref_hn) <= TOL["fp32"]["fwd"]


def test_state_carries_across_batches(device):
    """Two halves with h_n carried equal one pass over the whole sequence (truncated BPTT)."""
    torch.set_float32_matmul_precision("highest")
    _, fused = pair(20, device)
    tokens = torch.randint(0, V, (3, 10), device=device)
    whole, hn = fused.forward_sequence(tokens)
    first, h = fused.forward_sequence(tokens[:, :4])
    second, hn2 = fused.forward_sequence(tokens[:, 4:], h.detach())
    assert rel_err(torch.cat([first, second], 1), whole) <= TOL["fp32"]["fwd"]
    assert rel_err(hn2, hn) <= TOL["fp32"]["fwd"]


def test_loop_model_runs_on_the_given_device(device):
    model = CharLoopModel(V, NFAC, 8).to(device)
    out = model(torch.zeros(2, dtype=torch.long, device=device))
    assert out.device.type == device.type
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, device=device))
