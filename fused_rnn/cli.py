"""`fused-rnn` / `python -m fused_rnn`: train, sample, bench, demo."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from .data import DEFAULT_MODULES, DataError
from .train import CheckpointError, TrainConfig, train

DEFAULTS = TrainConfig()


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument(
        "--text", metavar="FILE", help="UTF-8 training text (default: the embedded standard-library sources)"
    )
    p.add_argument(
        "--steps",
        metavar="N",
        type=int,
        default=d.steps,
        help="total optimizer steps, counting resumed ones (%(default)s)",
    )
    p.add_argument(
        "--batch-size", metavar="B", type=int, default=d.batch_size, help="global batch of windows (%(default)s)"
    )
    p.add_argument("--seq-len", metavar="T", type=int, default=d.seq_len, help="characters per window, T (%(default)s)")
    p.add_argument("--hidden", metavar="H", type=int, default=d.hidden, help="hidden size H (%(default)s)")
    p.add_argument("--embed", metavar="F", type=int, default=d.embed, help="embedding width (n_fac) (%(default)s)")
    p.add_argument("--lr", metavar="LR", type=float, default=d.lr, help="Adam learning rate (%(default)s)")
    p.add_argument("--clip", metavar="NORM", type=float, default=d.clip, help="gradient-norm clip (%(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device, help="auto: CUDA if present")
    p.add_argument(
        "--model",
        choices=("fused", "reference"),
        default=d.model,
        help="fused: FusedCharRNN; reference: the Python-loop CharLoopModel, to compare speed (%(default)s)",
    )
    p.add_argument(
        "--objective",
        choices=("seq", "last"),
        default=d.objective,
        help="seq: predict every next character; last: only the one after the window (%(default)s)",
    )
    p.add_argument(
        "--carry-state",
        action="store_true",
        help="walk contiguous streams and carry the hidden state across batches (truncated BPTT; seq only)",
    )
    p.add_argument(
        "--seed", metavar="S", type=int, default=d.seed, help="seed for initialisation and batches (%(default)s)"
    )
    p.add_argument("--out", default=d.out, metavar="DIR", help="checkpoint.pt and metrics.json go here (%(default)s)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.pt: step count, optimizer, and its --text unless given",
    )
    p.add_argument(
        "--eval-every",
        metavar="N",
        type=int,
        default=d.eval_every,
        help="validate and checkpoint every N steps (%(default)s)",
    )
    p.add_argument(
        "--eval-batches",
        metavar="N",
        type=int,
        default=d.eval_batches,
        help="validation batches per evaluation (%(default)s)",
    )
    p.add_argument(
        "--val-fraction",
        metavar="X",
        type=float,
        default=d.val_fraction,
        help="share of the text held out (%(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or validation lines")


def _add_sample_args(p: argparse.ArgumentParser, standalone: bool = True) -> None:
    if standalone:
        p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint.pt written by train")
        p.add_argument(
            "--seed", dest="sample_seed", type=int, default=0, metavar="S", help="sampling seed (%(default)s)"
        )
    p.add_argument("--prime", default=None, metavar="TEXT", help="text to start from (default: a newline)")
    p.add_argument("--length", type=int, default=300, metavar="N", help="characters to generate (%(default)s)")
    p.add_argument(
        "--temperature", type=float, default=0.8, metavar="X", help="softmax temperature; 0 = greedy (%(default)s)"
    )
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K likeliest characters; 0 = all")


def _add_inspect_parser(sub) -> None:
    """`fused-rnn inspect`: the options of `fused_rnn.inspector.inspect_checkpoint`."""
    p = sub.add_parser(
        "inspect",
        help="figures of a checkpoint's insides: DIR/index.html, PNGs, inspect.json",
        description="Run a text through a checkpoint and write DIR/index.html with its PNG figures and "
        "DIR/inspect.json: the cell, the unrolled graph, the hidden state, per-character surprisal "
        "and memory through time (needs matplotlib).",
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
        type=int,
        default=2000,
        metavar="N",
        help="use the first N characters (the last N of the default text) (%(default)s)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="index.html, the PNGs and inspect.json go here")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fused-rnn", description="Train and sample character-level RNNs.")
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
    return TrainConfig(**{f.name: getattr(ns, f.name) for f in fields(TrainConfig)})


def _run_bench(args: list[str]) -> int:
    """Import the packaged benchmark (fused_rnn.bench.runner) lazily and hand it the remaining arguments."""
    from .bench import runner

    return runner.main(args) or 0


def _speed_line(cfg: TrainConfig) -> str:
    """Forward + backward of both models on one batch, three timed after a warm-up: chars/s and the ratio."""
    from .train import Objective, build_model, resolve_device

    device = resolve_device(cfg.device)
    x = torch.randint(0, 64, (cfg.batch_size, cfg.seq_len), device=device)
    rates = {}
    for kind in ("fused", "reference"):
        obj = Objective(build_model(kind, 64, cfg.embed, cfg.hidden).to(device), cfg.objective)
        for i in range(4):  # one warm-up, three timed
            if i == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            obj(x, x)[0].backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates[kind] = 3 * x.numel() / (time.perf_counter() - t0)
    from .ops import resolve_backend

    backend = resolve_backend(torch.empty(1, 1, cfg.hidden, device=device), "auto")[0]
    return (
        f"forward+backward speed, one batch B={cfg.batch_size} T={cfg.seq_len} H={cfg.hidden} "
        f"({device.type}, {backend} backend; no optimizer step): FusedCharRNN {rates['fused']:,.0f} chars/s, "
        f"CharLoopModel {rates['reference']:,.0f} chars/s ({rates['fused'] / rates['reference']:.1f}x)"
    )


def _demo_report(cfg: TrainConfig) -> str:
    """`fused-rnn inspect` on the demo's checkpoint and the last 2,000 characters of its (held-out) text."""
    ckpt = Path(cfg.out) / "checkpoint.pt"
    out = Path(cfg.out) / "inspect"
    if importlib.util.find_spec("matplotlib") is None:
        return (
            'inspect: skipped, matplotlib is not installed; pip install "fused_rnn[plot]", then '
            f"fused-rnn inspect --checkpoint {ckpt} --out {out}"
        )
    from .inspector import held_out_text, inspect_checkpoint

    inspect_checkpoint(ckpt, held_out_text(ckpt, 2000), out, device=cfg.device)
    return f"inspect: the model's insides on 2,000 held-out characters: open {out / 'index.html'} in a browser"


def main(argv: list[str] | None = None) -> int:
    """The `fused-rnn` command line; returns the exit status (2 for unusable input, with one `error:` line)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["bench"]:  # everything after it is the benchmark's own, options included
        return _run_bench(argv[1:])
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "sample":
            from .sample import print_sample

            args = (ns.checkpoint, ns.prime, ns.length, ns.temperature, ns.top_k, ns.sample_seed, ns.device)
            print_sample(*args, streams=ns.streams)  # printed as it is made
            return 0
        if ns.command == "inspect":
            from .inspector import inspect_command

            print(inspect_command(ns.checkpoint, ns.text, ns.prime, ns.length, ns.out, ns.device))
            return 0
        cfg = _train_config(ns)
        last = train(cfg)
        if os.environ.get("RANK", "0") != "0":
            return 0  # one report, from rank 0
        if "val_loss" not in last:
            print(f"nothing to do: {cfg.out} is already at step {last['step']} of --steps {cfg.steps}")
        else:
            model = {"fused": "FusedCharRNN", "reference": "CharLoopModel"}[last["model"]]
            procs = f"{last['processes']} process{'es' if last['processes'] > 1 else ''}"
            print(
                f"training speed: {last['chars_per_s']:,.0f} chars/s ({model}, {last['backend']} backend, "
                f"{last['device']}, {procs}; training steps only, validation and checkpoints excluded)"
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
