"""Generation from a checkpoint: `fused-rnn sample`, through `FusedCharRNN.generate`'s machinery.

`token_probs` / `next_token` state the distribution every generated character is drawn from
(softmax(logp / temperature) over the top k), for tests and for callers drawing one token on the host.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import TextIO

import torch

from .data import DataError
from .generate import generate_chunks
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


#: Characters per generation call while streaming: each piece is printed as soon as it is made.
CHUNK = 64


def stream_sample(
    checkpoint: str,
    prime: str | None = None,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
    streams: int = 1,
    chunk: int = CHUNK,
) -> tuple[str, Iterator[list[str]]]:
    """The prime text, and the generated text of `streams` continuations in pieces of `chunk` characters.

    The prime runs through the model once; then `FusedCharRNN.generate`'s machinery draws each piece
    (one kernel launch per piece where the model fits one, see README), carrying the hidden state and
    the draws' counters, so the pieces joined are one `generate` call's text: seed, not chunking,
    decides it. Every stream continues the same prime with its own draws.
    """
    if length < 0:
        raise DataError(f"--length: must be at least 0, got {length}")
    if not temperature >= 0 or math.isinf(temperature) or top_k < 0:
        raise DataError(f"--temperature and --top-k: must be finite and at least 0, got {temperature} and {top_k}")
    if streams < 1:
        raise DataError(f"--streams: must be at least 1, got {streams}")
    if not 0 <= seed < 2**63:
        raise DataError(f"--seed: must lie in [0, 2**63), got {seed}")
    ckpt = load_checkpoint(checkpoint)
    model, vocab = model_from_checkpoint(ckpt, checkpoint)
    dev = resolve_device(device)
    model.to(dev).eval()
    if prime is None or prime == "":
        prime = "\n" if "\n" in vocab.index else vocab.chars[0]
    missing = vocab.unknown(prime)
    if missing:
        raise DataError(f"--prime: characters not in the checkpoint's vocabulary: {''.join(missing)!r}")
    primes = vocab.encode(prime)[None].expand(streams, -1).to(dev)
    pieces = generate_chunks(model, primes, length, chunk, temperature=temperature, top_k=top_k, seed=seed)

    def text() -> Iterator[list[str]]:
        for tokens in pieces:
            yield [vocab.decode(row) for row in tokens.cpu().tolist()]

    return prime, text()


def sample(
    checkpoint: str,
    prime: str | None = None,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
) -> str:
    """Prime text followed by `length` generated characters (one stream; see `stream_sample`)."""
    prime, pieces = stream_sample(checkpoint, prime, length, temperature, top_k, seed, device)
    return prime + "".join(p[0] for p in pieces)


def print_sample(
    checkpoint: str,
    prime: str | None = None,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
    streams: int = 1,
    out: TextIO | None = None,
) -> None:
    """`fused-rnn sample`: print the prime and the text as it is made (one stream), or B streams in blocks.

    One stream is printed piece by piece, flushed, so an interrupt leaves every character printed so far.
    Several streams are made together and printed one block each under a `--- stream i of B ---` line;
    an interrupt prints the blocks as far as they got, then stops.
    """
    out = sys.stdout if out is None else out
    prime, pieces = stream_sample(checkpoint, prime, length, temperature, top_k, seed, device, streams)
    if streams == 1:
        print(prime, end="", file=out, flush=True)
        for piece in pieces:
            print(piece[0], end="", file=out, flush=True)
        print(file=out, flush=True)
        return
    texts = [prime] * streams
    try:
        for piece in pieces:
            texts = [t + p for t, p in zip(texts, piece, strict=True)]
    finally:  # on an interrupt too: what was made is printed
        for i, t in enumerate(texts):
            print(f"--- stream {i + 1} of {streams} ---", file=out)
            print(t, file=out, flush=True)
