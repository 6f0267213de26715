"""Generation: one character at a time through the fused path, carrying the hidden state."""

from __future__ import annotations

import torch

from .data import DataError
from .train import load_checkpoint, model_from_checkpoint, resolve_device


def token_probs(logp: torch.Tensor, temperature: float, top_k: int = 0) -> torch.Tensor:
    """The distribution `next_token` draws from: softmax(logp / temperature) over the top_k likeliest.

    logp: (V,) log-probabilities. temperature > 0. top_k 0 keeps every character;
    ties at the k-th value are all kept. Returns (V,) float32 probabilities on the CPU.
    """
    logits = logp.float().cpu() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, -1)


def next_token(logp: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """Draw one index from log-probabilities (V,): temperature 0 is argmax; top_k 0 keeps every character."""
    if temperature <= 0:
        return int(logp.argmax())
    return int(torch.multinomial(token_probs(logp, temperature, top_k), 1, generator=generator))


@torch.no_grad()
def sample(
    checkpoint: str,
    prime: str | None = None,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
) -> str:
    """Prime text followed by `length` generated characters.

    The prime runs through the model once (B = 1, T = len(prime)); every new
    character is one step (T = 1) from the carried state, never the whole prefix again.
    """
    if length < 0:
        raise DataError(f"--length: must be at least 0, got {length}")
    if temperature < 0 or top_k < 0:
        raise DataError(f"--temperature and --top-k: must be at least 0, got {temperature} and {top_k}")
    ckpt = load_checkpoint(checkpoint)
    model, vocab = model_from_checkpoint(ckpt, checkpoint)
    dev = resolve_device(device)
    model.to(dev).eval()
    if prime is None or prime == "":
        prime = "\n" if "\n" in vocab.index else vocab.chars[0]
    missing = vocab.unknown(prime)
    if missing:
        raise DataError(f"--prime: characters not in the checkpoint's vocabulary: {''.join(missing)!r}")
    g = torch.Generator().manual_seed(seed)
    logp, h = model.forward_sequence(vocab.encode(prime)[None].to(dev))
    out = []
    for _ in range(length):
        tok = next_token(logp[0, -1], temperature, top_k, g)
        out.append(tok)
        logp, h = model.forward_sequence(torch.tensor([[tok]], device=dev), h)
    return prime + vocab.decode(out)
