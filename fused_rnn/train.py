"""Training loop: Adam, clipping, validation in nats and bits per character, checkpoints, DDP."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import SEED_LIMIT, CheckpointError, DataError, TrainConfig
from .data import Vocab, load_text, random_starts, split, stream_starts, text_digest, text_source, windows
from .files import atomic_save, atomic_write, check_dir, ensure_dir
from .models import FusedCharRNN
from .reference import CharLoopModel

__all__ = ["CheckpointError", "TrainConfig", "TrainingStopped", "load_checkpoint", "train"]

CHECKPOINT_FORMAT = "fused_rnn.checkpoint/1"
#: Share of the free memory a run may plan to use (the rest: the allocator's slack, the OS, other programs).
MEMORY_SHARE = 0.8


class TrainingStopped(Exception):
    """Training stopped early (a signal, or a loss that is not finite); `code` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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


def _tensors(obj, prefix: str = ""):
    """(name, tensor) of every tensor inside nested dicts / lists, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def payload_digest(ckpt: dict) -> str:
    """sha256 over the checkpoint's tensors (model, optimizer and the step-0 weights where kept): names, dtypes,
    shapes and bytes. A checkpoint without step-0 weights digests as before they were kept."""
    h = hashlib.sha256()
    parts = {"model": ckpt.get("model"), "optimizer": ckpt.get("optimizer")}
    if ckpt.get("initial_model") is not None:
        parts["initial_model"] = ckpt["initial_model"]
    for name, t in _tensors(parts):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt,
    vocab: Vocab,
    cfg: TrainConfig,
    step: int,
    history,
    text_sha256=None,
    initial: dict | None = None,
) -> None:
    """Write the checkpoint atomically (a temp file, then os.replace): a crash leaves the last good one.

    `initial` is the model's state_dict at step 0 (what `fused-rnn inspect` compares the trained model with);
    kept as "initial_model" when given."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "vocab": vocab.chars,
        "config": asdict(cfg),
        "step": step,
        "history": history,
        "text_sha256": text_sha256,
    }
    if initial is not None:
        ckpt["initial_model"] = initial
    ckpt["digest"] = payload_digest(ckpt)
    atomic_save(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Load without running code (weights_only); one-line CheckpointError for anything unusable.

    A checkpoint with a "digest" (sha256 of its tensors) is checked against it; older ones without
    a digest still load.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint: {p} is a directory; give the checkpoint.pt inside it")
    if not p.is_file():
        raise CheckpointError(f"checkpoint: no such file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint: {p} is empty (0 bytes): damaged, or a write that never finished")
    with open(p, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, in its legacy format, a pickle from protocol 2 on)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"checkpoint: {p} is not a torch.save file (it starts with {head!r})")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle of arbitrary objects: nothing of it was run
        what = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln.split(" ")[:4]]
        if not what and "weights_only" not in str(exc) and "Unsupported" not in str(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"checkpoint: {p} is damaged or truncated ({size:,} bytes): its data cannot be read ({first[:160]})"
            ) from None
        detail = f" ({what[0][:160]})" if what else ""
        raise CheckpointError(
            f"checkpoint: {p} was refused: it holds objects other than tensors and plain data, "
            f"which could run code when loaded{detail}"
        ) from None
    except Exception as exc:  # corrupt zip, truncated file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0].rstrip(".")  # its first sentence, whole
        raise CheckpointError(
            f"checkpoint: {p} is damaged or truncated ({size:,} bytes): torch.load cannot read it "
            f"({type(exc).__name__}: {first[:160]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint: {p} is not a fused_rnn checkpoint")
    for key, kind in (("model", dict), ("vocab", str), ("config", dict), ("step", int)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"checkpoint: {p} is damaged: its {key!r} entry is missing or malformed")
    if "initial_model" in ckpt and not isinstance(ckpt["initial_model"], dict):
        raise CheckpointError(f"checkpoint: {p} is damaged: its 'initial_model' entry is malformed")
    stored = ckpt.get("digest")
    if stored is not None:
        if not isinstance(stored, str) or payload_digest(ckpt) != stored:
            raise CheckpointError(
                f"checkpoint: {p} is damaged: its tensor data does not match the sha256 digest written with it "
                "(the file changed after it was saved)"
            )
    return ckpt


def state_mismatch(model: nn.Module, state: dict) -> str | None:
    """What differs between a model's parameters and a state_dict: missing, unexpected, other shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} is {tuple(state[k].shape)}, the config needs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    shapes += [f"{k} is not a tensor" for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    parts = []
    if shapes:
        parts.append("; ".join(shapes[:3]) + (f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else ""))
    if missing:
        parts.append(f"missing {', '.join(missing[:4])}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:4])}")
    return "; ".join(parts) or None


def _sizes(c: dict) -> str:
    return ", ".join(f"{k}={c.get(k)}" for k in ("hidden", "embed"))


def model_from_checkpoint(ckpt: dict, path: str | Path, kind: str = "fused") -> tuple[nn.Module, Vocab]:
    """The model and vocabulary of a loaded checkpoint; CheckpointError saying what does not fit."""
    vocab = Vocab(ckpt["vocab"])
    c = ckpt["config"]
    try:
        model = build_model(kind, len(vocab), int(c["embed"]), int(c["hidden"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint: {path} has an unusable config ({_sizes(c)}: {exc})") from None
    why = state_mismatch(model, ckpt["model"])
    if why:
        raise CheckpointError(
            f"checkpoint: {path} does not match its own config ({_sizes(c)}, vocabulary {len(vocab)}): {why}"
        )
    model.load_state_dict(ckpt["model"])
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


def check_config(cfg: TrainConfig) -> None:
    """Every option's range, before anything is read or allocated; one-line DataError naming the option."""
    if cfg.objective not in ("seq", "last"):
        raise DataError(f"--objective: expected 'seq' or 'last', got {cfg.objective!r}")
    if cfg.model not in ("fused", "reference"):
        raise DataError(f"--model: expected 'fused' or 'reference', got {cfg.model!r}")
    for name in ("steps", "batch_size", "seq_len", "hidden", "embed", "eval_every", "eval_batches"):
        if getattr(cfg, name) < 1:
            raise DataError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(cfg, name)}")
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"--val-fraction: must lie strictly between 0 and 1, got {cfg.val_fraction}")
    for name in ("lr", "clip"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise DataError(f"--{name}: must be a finite number above 0, got {v}")
    if not 0 <= cfg.seed < SEED_LIMIT:
        raise DataError(f"--seed: must lie in [0, 2**63), got {cfg.seed}")
    if cfg.threads < 0:
        raise DataError(f"--threads: must be at least 0 (0: measure), got {cfg.threads}")
    if cfg.carry_state and cfg.objective != "seq":
        raise DataError("--carry-state: needs --objective seq (the many-to-one objective starts every window at zero)")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**27 else f"{n / 2**20:,.0f} MiB"


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this run on `device` (CPU: MemAvailable; CUDA: the free device memory); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_bytes(cfg: TrainConfig, vocab_size: int, world: int = 1) -> int:
    """An estimate of the memory one process needs (float32): parameters with their gradients and Adam's two
    moments, the activations of one step that backward keeps, and the index windows of a global batch."""
    V, E, H = vocab_size, cfg.embed, cfg.hidden
    params = V * E + E * H + H + H * H + H + H * V + V
    b, T = cfg.batch_size // world, cfg.seq_len
    per_char = 6 * H + 2 * E + (4 * V if cfg.objective == "seq" else 0)
    acts = b * T * per_char + (4 * b * V if cfg.objective == "last" else 0) + 2 * V * H  # + the (V, H) table
    return 4 * (4 * params + acts) + 3 * 8 * cfg.batch_size * (T + 1)


def check_memory(cfg: TrainConfig, vocab_size: int, device: torch.device, world: int) -> None:
    """Refuse sizes that cannot fit, before anything is allocated, saying how much they would need."""
    need = training_bytes(cfg, vocab_size, world)
    free = available_memory(device)
    if free is None or need <= MEMORY_SHARE * free:
        return
    sizes = (
        f"--hidden {cfg.hidden}, --embed {cfg.embed}, --batch-size {cfg.batch_size}, --seq-len {cfg.seq_len}, "
        f"{vocab_size} characters"
    )
    raise DataError(
        f"sizes: {sizes} need about {_gib(need)} of memory; {device.type} has {_gib(free)} free. Use smaller sizes"
    )


def planned_backend(model: str, device: torch.device, batch: int, hidden: int) -> str:
    """The backend fused_recurrence's "auto" runs for a (T, batch, hidden) float32 input on `device`.

    Shapes, dtypes and the device only: nothing is allocated to find out.
    """
    if model != "fused":
        return "python loop"
    from . import launch
    from .dispatch import unsupported_reason

    if launch.unavailable_reason(device) is not None or batch * hidden >= 2**31:
        return "torch"
    return "torch" if unsupported_reason(hidden, torch.float32, launch.device_key(device)[0]) else "triton"


def check_out(cfg: TrainConfig, rank: int) -> Path:
    """--out is a writable folder (created now), and holds no checkpoint that this run would replace unasked."""
    out = Path(cfg.out)
    ckpt = out / "checkpoint.pt"
    if cfg.resume:
        if not ckpt.exists() and not out.is_dir():
            raise DataError(f"--resume: {out} does not exist; there is nothing to resume")
        if not ckpt.exists():
            raise DataError(f"--resume: {out} holds no checkpoint.pt; drop --resume to start a new run there")
    elif ckpt.exists() and not cfg.force:
        raise DataError(
            f"--out {out} already holds a checkpoint; continue it with --resume, replace it with --force, "
            "or choose another --out"
        )
    if rank == 0:
        check_dir(out, "--out")  # created (ensure_dir) once the text and the sizes are known to be good
    return out


def train(cfg: TrainConfig) -> dict:
    """Train per `cfg`; returns the last metrics. Writes cfg.out/checkpoint.pt and metrics.json (rank 0).

    Raises DataError / CheckpointError (unusable input, before any step), TrainingStopped (a signal:
    the step finished and was saved; or a loss that is not finite: nothing saved past the last good step).
    """
    check_config(cfg)
    rank, world, local_rank = _dist_info()
    if cfg.batch_size % world:
        raise DataError(f"--batch-size {cfg.batch_size} does not split evenly over {world} processes")
    device = resolve_device(cfg.device)
    check_out(cfg, rank)
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


class _Signals:
    """SIGINT / SIGTERM while training: remember it, so the current step finishes and is saved.

    A second signal stops at once (KeyboardInterrupt), for a step that takes too long.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _step_fn(runner, opt, model, cfg: TrainConfig):
    def step(x, y, h):
        loss, hn = runner(x, y, h)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        return loss, hn

    return step


class ThreadChooser:
    """Choose the CPU thread count from the first training steps: each candidate runs two timed steps
    (the training itself, so it costs nothing), the fastest median wins. Candidates: 1, half and all
    of torch's default pool."""

    def __init__(self, enabled: bool, fixed: int) -> None:
        self.default = torch.get_num_threads()
        self.fixed = fixed
        if fixed:
            torch.set_num_threads(fixed)
        cands = sorted({1, max(1, self.default // 2), self.default}) if enabled and not fixed else []
        self.plan = [c for c in cands for _ in range(2)]
        self.times: dict[int, list[float]] = {}
        self.chosen = fixed or (None if self.plan else self.default)
        self.current: int | None = None

    def before(self) -> None:
        if self.plan:
            self.current = self.plan.pop(0)
            torch.set_num_threads(self.current)

    def after(self, seconds: float) -> None:
        if self.current is None:
            return
        self.times.setdefault(self.current, []).append(seconds)
        self.current = None
        if not self.plan:
            self.chosen = min(self.times, key=lambda c: sorted(self.times[c])[len(self.times[c]) // 2])
            torch.set_num_threads(self.chosen)

    def describe(self) -> str:
        if self.fixed:
            return f"{self.fixed} thread{'s' if self.fixed > 1 else ''}"
        if self.times and self.chosen is not None and not self.plan:
            n = self.chosen
            return f"{n} thread{'s' if n > 1 else ''}, measured"
        n = torch.get_num_threads()
        return f"{n} thread{'s' if n > 1 else ''}"

    def restore(self) -> None:
        torch.set_num_threads(self.default)


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
        if cfg.text is None and c.get("text") == "-":
            raise DataError(
                f"--resume: {ckpt_path} was trained on standard input or a pipe; give the text again with --text"
            )
        if cfg.text is None and isinstance(c.get("text"), str):
            cfg = replace(cfg, text=c["text"])  # resume on the text the run started with
            text = load_text(cfg.text)
            held_sha = ckpt.get("text_sha256")
            if held_sha and text_digest(text) != held_sha:
                raise DataError(
                    f"--resume: the text {cfg.text} changed since {ckpt_path} was written (its sha256 differs); "
                    "give --text to train on it as it is now"
                )
        else:
            text = load_text(cfg.text)
            held_sha = ckpt.get("text_sha256")
            if rank == 0 and held_sha and text_digest(text) != held_sha:
                print(
                    f"note: --text {cfg.text} is not the text {ckpt_path} was trained on "
                    f"({c.get('text') or 'the embedded default'}; the sha256 differs): training goes on with it",
                    file=sys.stderr,
                )
    else:
        text = load_text(cfg.text)
    cfg = replace(cfg, text=text_source(cfg.text))
    if ckpt is not None:
        vocab = Vocab(ckpt["vocab"])
        if vocab.unknown(text):
            raise DataError(
                f"--text has characters the checkpoint's vocabulary lacks: {''.join(vocab.unknown(text))!r}"
            )
    else:
        vocab = Vocab.from_text(text)
    check_memory(cfg, len(vocab), device, world)
    data = vocab.encode(text)
    sha = text_digest(text)
    del text
    train_data, val_data = split(data, cfg.val_fraction, cfg.seq_len)
    if cfg.carry_state and (len(train_data) - 1) // cfg.batch_size < cfg.seq_len:
        raise DataError(
            f"--carry-state: {len(train_data)} training characters are too few for {cfg.batch_size} streams"
        )
    if rank == 0:
        ensure_dir(out, "--out")  # every input is good: the folder is made (and written to) before the first step

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(vocab), cfg.embed, cfg.hidden)
    start, history = 0, []
    if ckpt is not None:
        why = state_mismatch(model, ckpt["model"])
        if why:
            raise CheckpointError(f"checkpoint: {ckpt_path} does not fit this model: {why}")
        model.load_state_dict(ckpt["model"])
        start, history = ckpt["step"], list(ckpt.get("history", []))
    # the step-0 weights travel with every checkpoint of the run (an old checkpoint's run goes on without them)
    if ckpt is None:
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        initial = ckpt.get("initial_model")
    model.to(device)
    objective = Objective(model, cfg.objective)
    runner = objective
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    backend = planned_backend(cfg.model, device, cfg.batch_size // world, cfg.hidden)
    if ckpt is not None and "optimizer" in ckpt:
        try:
            opt.load_state_dict(ckpt["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint: {ckpt_path} has an unusable optimizer state ({first[:200]})") from None
        for group in opt.param_groups:  # this run's --lr (the checkpoint's own unless given) applies
            group["lr"] = cfg.lr

    g = torch.Generator().manual_seed(cfg.seed + 1000 * start)  # resumed runs draw fresh batches
    shard = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    show = rank == 0 and not cfg.quiet
    info = dict(model=cfg.model, backend=backend, device=device.type, processes=world)
    step_fn = _step_fn(runner, opt, model, cfg)
    threads = ThreadChooser(device.type == "cpu" and world == 1 and cfg.steps - start > 8, cfg.threads)
    # disable=None: a bar on a terminal only; validation lines are printed either way
    bar = tqdm(total=cfg.steps, initial=start, disable=None if show else True, unit="step", dynamic_ncols=True)
    h = None
    last = {"step": start}
    saved = start
    # chars/s over training steps only: no validation or checkpoint time, and no first (warm-up, compiling) step
    busy, chars, rate = 0.0, 0, float("nan")
    try:
        with _Signals() as signals:
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                if step > start:
                    threads.before()
                if cfg.carry_state and cfg.objective == "seq":
                    starts = stream_starts(len(train_data), cfg.batch_size, cfg.seq_len, step)
                    if step % max(((len(train_data) - 1) // cfg.batch_size) // cfg.seq_len, 1) == 0:
                        h = None  # streams start over: nothing to carry
                else:
                    starts = random_starts(len(train_data), cfg.batch_size, cfg.seq_len, g)
                x, y = windows(train_data, starts[shard], cfg.seq_len)
                x, y = x.to(device), y.to(device)
                loss, hn = step_fn(x, y, h)
                if cfg.carry_state and hn is not None:
                    h = hn.detach()
                train_loss = loss.item()  # synchronises: the step's time is complete
                stop = signals.received is not None
                if world > 1:  # every process stops after the same step when any one got a signal
                    t = torch.tensor([train_loss, float(stop)], device=device)
                    dist.all_reduce(t)
                    train_loss, stop = t[0].item() / world, t[1].item() > 0
                done = step + 1
                if not math.isfinite(train_loss):
                    kept = f"{ckpt_path} keeps step {saved}" if saved else "no checkpoint was written"
                    raise TrainingStopped(
                        f"step {done}: the training loss is {train_loss}; the learning rate (--lr {cfg.lr:g}) is "
                        f"likely too high for this model; {kept}",
                        2,
                    )
                if step > start or cfg.steps - start == 1:
                    busy += time.perf_counter() - t0
                    chars += cfg.batch_size * cfg.seq_len  # the global batch: every process's share
                    rate = chars / busy
                    threads.after(time.perf_counter() - t0)
                bar.set_postfix(loss=f"{train_loss:.3f}", chars_per_s=f"{rate:,.0f}")
                bar.update(1)
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    val = evaluate(objective, val_data, cfg, device)
                    last = dict(step=done, train_loss=train_loss, val_loss=val, val_bpc=val / math.log(2))
                    last["chars_per_s"] = rate if chars else None  # None until a timed step has run
                    last.update(lr=cfg.lr, clip=cfg.clip)
                    history.append(last)
                    if rank == 0:
                        save_checkpoint(ckpt_path, model, opt, vocab, cfg, done, history, sha, initial)
                        metrics = dict(last, **info, threads=threads.describe(), history=history)
                        atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))
                        if show:
                            bar.write(
                                f"step {done}: train {train_loss:.3f}  val {val:.3f} nats/char "
                                f"({val / math.log(2):.3f} bpc)"
                            )
                    saved = done
                if stop and done < cfg.steps:
                    if rank == 0 and saved != done:
                        save_checkpoint(ckpt_path, model, opt, vocab, cfg, done, history, sha, initial)
                    signum = signals.received or signal.SIGTERM
                    name = signal.Signals(signum).name
                    msg = f"{name}: stopped after step {done} of {cfg.steps}; saved {ckpt_path}"
                    raise TrainingStopped(msg, 128 + signum)
    finally:
        bar.close()
        threads.restore()
    return dict(last, **info, threads=threads.describe())
