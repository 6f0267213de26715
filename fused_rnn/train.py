"""Training loop: Adam, clipping, validation in nats and bits per character, checkpoints, DDP."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import DataError, Vocab, load_text, random_starts, split, stream_starts, windows
from .models import FusedCharRNN
from .ops import resolve_backend
from .reference import CharLoopModel

CHECKPOINT_FORMAT = "fused_rnn.checkpoint/1"


class CheckpointError(ValueError):
    """An unusable checkpoint; the message is one line, fit for the command line."""


@dataclass
class TrainConfig:
    """Everything `fused-rnn train` takes; saved in the checkpoint."""

    text: str | None = None
    steps: int = 600
    batch_size: int = 32
    seq_len: int = 64
    hidden: int = 128
    embed: int = 42
    lr: float = 3e-3
    clip: float = 1.0
    device: str = "auto"
    model: str = "fused"
    objective: str = "seq"
    carry_state: bool = False
    seed: int = 0
    out: str = "runs/default"
    resume: bool = False
    eval_every: int = 100
    eval_batches: int = 8
    val_fraction: float = 0.1
    quiet: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available")
    return torch.device(name)


def build_model(kind: str, vocab_size: int, embed: int, hidden: int) -> nn.Module:
    """`FusedCharRNN` ("fused") or the Python-loop `CharLoopModel` ("reference"): same parameters."""
    cls = {"fused": FusedCharRNN, "reference": CharLoopModel}[kind]
    return cls(vocab_size, embed, hidden)


class Objective(nn.Module):
    """The loss as a module, so DistributedDataParallel sees the forward.

    "seq": every position predicts its next character (`forward_sequence`); "last":
    the classic many-to-one model predicts the character after the window.
    Returns (mean loss in nats, h_n or None).
    """

    def __init__(self, model: nn.Module, objective: str) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, h0: torch.Tensor | None = None):
        if self.objective == "last":
            return F.nll_loss(self.model(*x.t()), y[:, -1]), None
        logp, hn = self.model.forward_sequence(x, h0)
        return F.nll_loss(logp.reshape(-1, logp.shape[-1]), y.reshape(-1)), hn


def save_checkpoint(path: Path, model: nn.Module, opt, vocab: Vocab, cfg: TrainConfig, step: int, history) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "vocab": vocab.chars,
            "config": asdict(cfg),
            "step": step,
            "history": history,
        },
        tmp,
    )
    os.replace(tmp, path)  # never leave a half-written checkpoint


def load_checkpoint(path: str | Path) -> dict:
    """Load without running code (weights_only); one-line CheckpointError for anything unusable."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint: no such file: {p}")
    with open(p, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, in its legacy format, a pickle from protocol 2 on)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"checkpoint: {p} is not a torch.save file (it starts with {head!r})")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle of arbitrary objects: nothing of it was run
        what = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln.split(" ")[:4]]
        detail = f" ({what[0][:160]})" if what else ""
        raise CheckpointError(
            f"checkpoint: {p} was refused: it holds objects other than tensors and plain data, "
            f"which could run code when loaded{detail}"
        ) from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint: {p} cannot be loaded safely ({type(exc).__name__}: {first[:200]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint: {p} is not a fused_rnn checkpoint")
    for key, kind in (("model", dict), ("vocab", str), ("config", dict), ("step", int)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"checkpoint: {p} is damaged: its {key!r} entry is missing or malformed")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path, kind: str = "fused") -> tuple[nn.Module, Vocab]:
    vocab = Vocab(ckpt["vocab"])
    c = ckpt["config"]
    try:
        model = build_model(kind, len(vocab), int(c["embed"]), int(c["hidden"]))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint: {path} does not match its own config ({first[:200]})") from None
    return model, vocab


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@torch.no_grad()
def evaluate(objective: Objective, val: torch.Tensor, cfg: TrainConfig, device: torch.device) -> float:
    """Mean validation loss (nats per predicted character) over fixed windows."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    total = 0.0
    for _ in range(cfg.eval_batches):
        x, y = windows(val, random_starts(len(val), cfg.batch_size, cfg.seq_len, g), cfg.seq_len)
        loss, _ = objective(x.to(device), y.to(device))
        total += float(loss)
    return total / cfg.eval_batches


def train(cfg: TrainConfig) -> dict:
    """Train per `cfg`; returns the last metrics. Writes cfg.out/checkpoint.pt and metrics.json (rank 0)."""
    if cfg.objective not in ("seq", "last"):
        raise DataError(f"--objective: expected 'seq' or 'last', got {cfg.objective!r}")
    if cfg.model not in ("fused", "reference"):
        raise DataError(f"--model: expected 'fused' or 'reference', got {cfg.model!r}")
    for name in ("steps", "batch_size", "seq_len", "hidden", "embed", "eval_every", "eval_batches"):
        if getattr(cfg, name) < 1:
            raise DataError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(cfg, name)}")
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"--val-fraction: must lie strictly between 0 and 1, got {cfg.val_fraction}")
    if not (cfg.lr > 0 and cfg.clip > 0):
        raise DataError(f"--lr and --clip: must be positive, got {cfg.lr} and {cfg.clip}")
    if cfg.carry_state and cfg.objective != "seq":
        raise DataError("--carry-state: needs --objective seq (the many-to-one objective starts every window at zero)")
    rank, world, local_rank = _dist_info()
    if cfg.batch_size % world:
        raise DataError(f"--batch-size {cfg.batch_size} does not split evenly over {world} processes")
    device = resolve_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, device, rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int) -> dict:
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        c = ckpt["config"]
        asked = (cfg.hidden, cfg.embed)
        held = (c.get("hidden"), c.get("embed"))
        if asked != held:  # the model kind may change: fused and reference share one state_dict
            raise CheckpointError(
                f"checkpoint: {ckpt_path} holds hidden={held[0]}, embed={held[1]}; "
                f"this run asks for hidden={asked[0]}, embed={asked[1]}"
            )
        if cfg.text is None and isinstance(c.get("text"), str):
            cfg = replace(cfg, text=c["text"])  # resume on the text the run started with
    text = load_text(cfg.text)
    if ckpt is not None:
        vocab = Vocab(ckpt["vocab"])
        if vocab.unknown(text):
            raise DataError(
                f"--text has characters the checkpoint's vocabulary lacks: {''.join(vocab.unknown(text))!r}"
            )
    else:
        vocab = Vocab.from_text(text)
    data = vocab.encode(text)
    train_data, val_data = split(data, cfg.val_fraction, cfg.seq_len)
    if cfg.carry_state and (len(train_data) - 1) // cfg.batch_size < cfg.seq_len:
        raise DataError(
            f"--carry-state: {len(train_data)} training characters are too few for {cfg.batch_size} streams"
        )

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(vocab), cfg.embed, cfg.hidden)
    start, history = 0, []
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint: {ckpt_path} does not fit this model ({first[:200]})") from None
        start, history = ckpt["step"], list(ckpt.get("history", []))
    model.to(device)
    objective = Objective(model, cfg.objective)
    runner = objective
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    backend = "python loop"
    if cfg.model == "fused":  # what fused_recurrence runs for this run's (T, B/world, H) input
        probe = torch.empty(cfg.seq_len, cfg.batch_size // world, cfg.hidden, device=device)
        backend = resolve_backend(probe, model.backend)[0]
    if ckpt is not None and "optimizer" in ckpt:
        try:
            opt.load_state_dict(ckpt["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint: {ckpt_path} has an unusable optimizer state ({first[:200]})") from None

    g = torch.Generator().manual_seed(cfg.seed + 1000 * start)  # resumed runs draw fresh batches
    shard = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    show = rank == 0 and not cfg.quiet
    # disable=None: a bar on a terminal only; validation lines are printed either way
    bar = tqdm(total=cfg.steps, initial=start, disable=None if show else True, unit="step", dynamic_ncols=True)
    h = None
    last = {"step": start}
    # chars/s over training steps only: no validation or checkpoint time, and no first (warm-up, compiling) step
    busy, chars, rate = 0.0, 0, float("nan")
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        if cfg.carry_state and cfg.objective == "seq":
            starts = stream_starts(len(train_data), cfg.batch_size, cfg.seq_len, step)
            if step % max(((len(train_data) - 1) // cfg.batch_size) // cfg.seq_len, 1) == 0:
                h = None  # streams start over: nothing to carry
        else:
            starts = random_starts(len(train_data), cfg.batch_size, cfg.seq_len, g)
        x, y = windows(train_data, starts[shard], cfg.seq_len)
        x, y = x.to(device), y.to(device)
        loss, hn = runner(x, y, h)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if cfg.carry_state and hn is not None:
            h = hn.detach()
        train_loss = loss.item()  # synchronises: the step's time is complete
        if world > 1:
            t = torch.tensor([train_loss], device=device)
            dist.all_reduce(t)
            train_loss = t.item() / world
        if step > start or cfg.steps - start == 1:
            busy += time.perf_counter() - t0
            chars += cfg.batch_size * cfg.seq_len  # the global batch: every process's share
            rate = chars / busy
        bar.set_postfix(loss=f"{train_loss:.3f}", chars_per_s=f"{rate:,.0f}")
        bar.update(1)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            val = evaluate(objective, val_data, cfg, device)
            last = dict(step=done, train_loss=train_loss, val_loss=val, val_bpc=val / math.log(2))
            last["chars_per_s"] = rate if chars else None  # None until a timed step has run
            history.append(last)
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                save_checkpoint(ckpt_path, model, opt, vocab, cfg, done, history)
                info = dict(model=cfg.model, backend=backend, device=device.type, processes=world)
                (out / "metrics.json").write_text(json.dumps(dict(last, **info, history=history), indent=1))
                if show:
                    bar.write(
                        f"step {done}: train {train_loss:.3f}  val {val:.3f} nats/char ({val / math.log(2):.3f} bpc)"
                    )
    bar.close()
    return dict(last, model=cfg.model, backend=backend, device=device.type, processes=world)
