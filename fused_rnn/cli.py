"""`fused-rnn` / `python -m fused_rnn`: train, sample, bench, demo."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import statistics
import sys
from dataclasses import fields, replace
from pathlib import Path

from . import __version__
from .config import DEFAULT_MODULES, SEED_LIMIT, CheckpointError, DataError, OneLineParser, TrainConfig

# torch and the training code load only when a command runs: --help and --version answer at once

DEFAULTS = TrainConfig()
#: Options that, on --resume, take the checkpoint's value unless given.
FROM_CHECKPOINT = (
    "batch_size",
    "seq_len",
    "hidden",
    "embed",
    "lr",
    "clip",
    "model",
    "objective",
    "carry_state",
    "seed",
    "eval_every",
    "eval_batches",
    "val_fraction",
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every command stops the same way (exit 143)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def _number_type(name: str, cast, ok, want: str, doc: str):
    """An argparse type: cast(text) (int or float) for which ok(v) holds, else "`want`, got TEXT" (one line,
    exit 2)."""
    noun = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{want}, got {text}")
        return v

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"argparse type: {doc}."
    return parse


seed = _number_type(
    "seed", int, lambda v: 0 <= v < SEED_LIMIT, "must lie in [0, 2**63)", "an integer seed in [0, 2**63)"
)
positive_int = _number_type("positive_int", int, lambda v: v >= 1, "must be at least 1", "an integer >= 1")
count = _number_type("count", int, lambda v: v >= 0, "must be at least 0", "an integer >= 0")
positive_float = _number_type(
    "positive_float", float, lambda v: math.isfinite(v) and v > 0, "must be a finite number above 0",
    "a finite number > 0",
)  # fmt: skip
temperature = _number_type(
    "temperature", float, lambda v: math.isfinite(v) and v >= 0,
    "must be a finite number of at least 0 (0: greedy)", "a finite number >= 0 (0: greedy)",
)  # fmt: skip
fraction = _number_type(
    "fraction", float, lambda v: 0 < v < 1, "must lie strictly between 0 and 1", "a number strictly between 0 and 1"
)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    ck = "; on --resume the checkpoint's"
    p.add_argument(
        "--text",
        metavar="FILE",
        help="UTF-8 training text, or - for standard input (default: the embedded standard-library sources)",
    )
    p.add_argument(
        "--steps",
        metavar="N",
        type=positive_int,
        default=d.steps,
        help="total optimizer steps, counting resumed ones (%(default)s)",
    )
    p.add_argument("--batch-size", metavar="B", type=positive_int, help=f"global batch of windows ({d.batch_size}{ck})")
    p.add_argument("--seq-len", metavar="T", type=positive_int, help=f"characters per window, T ({d.seq_len}{ck})")
    p.add_argument("--hidden", metavar="H", type=positive_int, help=f"hidden size H ({d.hidden}{ck})")
    p.add_argument("--embed", metavar="F", type=positive_int, help=f"embedding width (n_fac) ({d.embed}{ck})")
    p.add_argument("--lr", metavar="LR", type=positive_float, help=f"Adam learning rate ({d.lr}{ck})")
    p.add_argument("--clip", metavar="NORM", type=positive_float, help=f"gradient-norm clip ({d.clip}{ck})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device, help="auto: CUDA if present")
    p.add_argument(
        "--model",
        choices=("fused", "reference"),
        help=f"fused: FusedCharRNN; reference: the Python-loop CharLoopModel, to compare speed ({d.model}{ck})",
    )
    p.add_argument(
        "--objective",
        choices=("seq", "last"),
        help=f"seq: predict every next character; last: only the one after the window ({d.objective}{ck})",
    )
    p.add_argument(
        "--carry-state",
        action="store_true",
        default=None,
        help="walk contiguous streams and carry the hidden state across batches (truncated BPTT; seq only)",
    )
    p.add_argument("--seed", metavar="S", type=seed, help=f"seed for initialisation and batches ({d.seed}{ck})")
    p.add_argument("--out", default=d.out, metavar="DIR", help="checkpoint.pt and metrics.json go here (%(default)s)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.pt: step count, optimizer, sizes and its --text unless given",
    )
    p.add_argument("--force", action="store_true", help="start over in an --out that holds a checkpoint, replacing it")
    p.add_argument(
        "--eval-every",
        metavar="N",
        type=positive_int,
        help=f"validate and checkpoint every N steps ({d.eval_every}{ck})",
    )
    p.add_argument(
        "--eval-batches",
        metavar="N",
        type=positive_int,
        help=f"validation batches per evaluation ({d.eval_batches}{ck})",
    )
    p.add_argument(
        "--val-fraction",
        metavar="X",
        type=fraction,
        help=f"share of the text held out ({d.val_fraction}{ck})",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=count,
        default=d.threads,
        help="CPU threads; 0 = measure 1, half and all on the first steps and keep the fastest (%(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or validation lines")


def _add_sample_args(p: argparse.ArgumentParser, standalone: bool = True) -> None:
    if standalone:
        p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint.pt written by train")
        p.add_argument(
            "--seed", dest="sample_seed", type=seed, default=0, metavar="S", help="sampling seed (%(default)s)"
        )
    p.add_argument("--prime", default=None, metavar="TEXT", help="text to start from (default: a newline)")
    p.add_argument("--length", type=count, default=300, metavar="N", help="characters to generate (%(default)s)")
    p.add_argument(
        "--temperature",
        type=temperature,
        default=0.8,
        metavar="X",
        help="softmax temperature, finite, >= 0; 0 = greedy (%(default)s)",
    )
    p.add_argument(
        "--top-k", type=count, default=0, metavar="K", help="sample among the K likeliest characters; 0 = all"
    )


def _add_inspect_parser(sub) -> None:
    """`fused-rnn inspect`: the options of `fused_rnn.inspector.inspect_checkpoint`."""
    p = sub.add_parser(
        "inspect",
        help="a checkpoint's insides as one interactive offline page: DIR/index.html",
        description="Run a text through a checkpoint and write DIR/index.html: one self-contained page (no "
        "network, no server) to explore the model with its own numbers: a character inspector, a neuron picker, "
        "the cell step by step, memory on hover, select and match, saturation, a state map, the step-0 weights "
        "and a what-if box. --json and --png add the numbers and the static figures.",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint.pt written by train")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--text",
        metavar="FILE",
        help="UTF-8 text to run through the model (default: the held-out end of the checkpoint's own training text)",
    )
    src.add_argument("--prime", metavar="TEXT", help="the text itself, given on the command line")
    p.add_argument(
        "--length",
        type=positive_int,
        default=2000,
        metavar="N",
        help="use the first N characters (the last N of the default text) (%(default)s)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="index.html (and inspect.json, the PNGs) go here")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present")
    p.add_argument("--json", action="store_true", help="also write DIR/inspect.json, the numbers behind the page")
    p.add_argument("--png", action="store_true", help="also write the static PNG figures (needs matplotlib)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fused-rnn", description="Train and sample character-level RNNs.")
    parser.add_argument("--version", action="version", version=f"fused-rnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model", description="Train a char-RNN; torchrun runs it on N processes.")
    _add_train_args(p)
    p = sub.add_parser(
        "sample",
        help="generate text from a checkpoint",
        description="Print the prime and N characters as they are drawn (the prime runs once; then one kernel "
        "launch per 64 characters where the model fits one), or B continuations with --streams.",
    )
    _add_sample_args(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present")
    p.add_argument(
        "--streams", type=int, default=1, metavar="B", help="B continuations of the prime at once (%(default)s)"
    )
    p = sub.add_parser(
        "demo",
        help="short training on the embedded default, a sample and a speed line",
        description=f"Train on the embedded default text (the sources of {', '.join(DEFAULT_MODULES)}), "
        "print a sample and the speed of the fused model against the Python-loop reference.",
    )
    _add_train_args(p)
    _add_sample_args(p, standalone=False)
    p.set_defaults(out="runs/demo", steps=1500, eval_every=250)
    _add_inspect_parser(sub)
    p = sub.add_parser("bench", help="the benchmark against nn.RNN and CharLoopModel; its options follow")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (see fused-rnn bench --help)")
    return parser


def _train_config(ns: argparse.Namespace) -> TrainConfig:
    """The options given, then (on --resume) the checkpoint's config, then the defaults."""
    given = {f.name: getattr(ns, f.name) for f in fields(TrainConfig) if hasattr(ns, f.name)}
    held: dict = {}
    if given.get("resume"):
        ckpt_path = Path(given["out"]) / "checkpoint.pt"
        if ckpt_path.exists():
            from .train import load_checkpoint

            held = load_checkpoint(ckpt_path)["config"]
    values = {}
    for name in FROM_CHECKPOINT:
        v = given.get(name)
        if v is None and name in held and held[name] is not None:
            v = held[name]
        values[name] = getattr(DEFAULTS, name) if v is None else v
    given.update(values)
    return replace(DEFAULTS, **given)


def _resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted run: the same options, with --resume, without --force."""
    prog = "python -m fused_rnn" if Path(sys.argv[0]).name == "__main__.py" else "fused-rnn"
    args = [a for a in argv if a != "--force"]
    if "--resume" not in args:
        args.append("--resume")
    return f"{prog} {shlex.join(args)}"


def _run_bench(args: list[str]) -> int:
    """Import the packaged benchmark (fused_rnn.bench.runner) lazily and hand it the remaining arguments."""
    from .bench import runner

    return runner.main(args) or 0


#: The demo's comparison: the two models, and how many alternating rounds of the benchmark's timer each gets.
RATE_KINDS = ("fused", "reference")
SPEED_ROUNDS = 3


def _speed_line(cfg: TrainConfig) -> str:
    """Forward + backward of both models on one batch, timed as the benchmark times (a warm-up, then the
    median of repeats, one CPU thread), in SPEED_ROUNDS alternating rounds: chars/s (median round) and the
    median of the rounds' ratios."""
    import torch

    from .bench.runner import time_ms
    from .train import Objective, build_model, planned_backend, resolve_device

    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the benchmark runner: steady on a busy machine
    try:
        x = torch.randint(0, 64, (cfg.batch_size, cfg.seq_len), device=device)
        objs = {k: Objective(build_model(k, 64, cfg.embed, cfg.hidden).to(device), cfg.objective) for k in RATE_KINDS}
        times: dict[str, list[float]] = {k: [] for k in RATE_KINDS}
        for _ in range(SPEED_ROUNDS):  # alternate the two, so a burst of load elsewhere hits both
            for kind, obj in objs.items():
                times[kind].append(time_ms(lambda obj=obj: obj(x, x)[0].backward(), device, quick=False))
    finally:
        torch.set_num_threads(threads)
    rates = {k: x.numel() / (statistics.median(v) / 1e3) for k, v in times.items()}
    ratio = statistics.median(r / f for f, r in zip(times["fused"], times["reference"], strict=True))
    backend = planned_backend("fused", device, cfg.batch_size, cfg.hidden)
    return (
        f"forward+backward speed, one batch B={cfg.batch_size} T={cfg.seq_len} H={cfg.hidden} "
        f"({device.type}, {backend} backend; no optimizer step; median of repeats, as fused-rnn bench): "
        f"FusedCharRNN {rates['fused']:,.0f} chars/s, "
        f"CharLoopModel {rates['reference']:,.0f} chars/s ({ratio:.1f}x)"
    )


def _demo_report(cfg: TrainConfig) -> str:
    """`fused-rnn inspect` on the demo's checkpoint and the last 2,000 characters of its (held-out) text."""
    ckpt = Path(cfg.out) / "checkpoint.pt"
    out = Path(cfg.out) / "inspect"
    from .inspector import held_out_part, inspect_checkpoint

    text, training = held_out_part(ckpt, 2000)
    data = inspect_checkpoint(ckpt, text, out, device=cfg.device, training_chars=training)
    what = "held-out characters" if not training else f"characters ({data['training_chars']:,} of them training text)"
    return (
        f"inspect: the model's insides on {data['length']:,} {what}, one interactive page: open "
        f"{out / 'index.html'} in a browser (offline)"
    )


def _memory_error(exc: BaseException) -> str | None:
    """One line for an allocation that failed despite the checks, or None for any other error."""
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text:
        first = text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__
        return f"out of memory: {first}; use smaller sizes"
    return None


def main(argv: list[str] | None = None) -> int:
    """The `fused-rnn` command line; returns the exit status.

    2: unusable input, with one `error:` line; 130 / 143: stopped by SIGINT / SIGTERM (training saved
    its last step and printed how to resume); never a traceback for these.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    old_term = None
    if threading_main():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        name = "SIGTERM" if code == 143 else "SIGINT"
        sys.stdout.flush()
        print(f"\n{name}: stopped", file=sys.stderr)
        return code
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:  # everything after it is the benchmark's own, options included
        return _run_bench(argv[1:])
    ns = build_parser().parse_args(argv)
    from .train import TrainingStopped

    try:
        if ns.command == "sample":
            from .sample import print_sample

            args = (ns.checkpoint, ns.prime, ns.length, ns.temperature, ns.top_k, ns.sample_seed, ns.device)
            print_sample(*args, streams=ns.streams)  # printed as it is made
            return 0
        if ns.command == "inspect":
            from .inspector import inspect_command

            print(
                inspect_command(
                    ns.checkpoint,
                    ns.text,
                    ns.prime,
                    ns.length,
                    ns.out,
                    ns.device,
                    write_json=ns.json,
                    write_png=ns.png,
                )
            )
            return 0
        cfg = _train_config(ns)
        from .train import train

        try:
            last = train(cfg)
        except TrainingStopped as exc:
            if exc.code == 2:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if os.environ.get("RANK", "0") == "0":
                print(f"\n{exc}; resume with: {_resume_command(argv)}", file=sys.stderr)
            return exc.code
        if os.environ.get("RANK", "0") != "0":
            return 0  # one report, from rank 0
        if "val_loss" not in last:
            print(f"nothing to do: {cfg.out} is already at step {last['step']} of --steps {cfg.steps}")
        else:
            model = {"fused": "FusedCharRNN", "reference": "CharLoopModel"}[last["model"]]
            procs = f"{last['processes']} process{'es' if last['processes'] > 1 else ''}"
            where = last["device"] if last["device"] != "cpu" else f"cpu, {last['threads']}"
            print(
                f"training speed: {last['chars_per_s']:,.0f} chars/s ({model}, {last['backend']} backend, "
                f"{where}, {procs}; training steps only, validation and checkpoints excluded)"
            )
            print(f"final: step {last['step']}, val {last['val_loss']:.3f} nats/char ({last['val_bpc']:.3f} bpc)")
        if ns.command == "demo":
            from .sample import sample

            print("sample:")
            print(
                sample(
                    str(Path(cfg.out) / "checkpoint.pt"), ns.prime, ns.length, ns.temperature, ns.top_k, 0, cfg.device
                )
            )
            print(_speed_line(cfg))
            print(_demo_report(cfg))
        return 0
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        line = _memory_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be written or read: a full disk, a folder in a file's place
        if isinstance(exc, BrokenPipeError):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
