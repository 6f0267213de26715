"""`fused-rnn inspect`: what lies beneath a trained character RNN.

Runs a text through a checkpoint's `FusedCharRNN` and writes ``index.html``: one self-contained, interactive page
(`fused_rnn.inspect_page`: data, script and styles inline; it opens from ``file://`` offline) where a reader hovers
and clicks through the model's own numbers:

1. a character inspector (h_t as a colour grid, ||h_t||, surprisal, the top-5 next characters);
2. a neuron picker (the whole text coloured by one unit; a sortable table of every unit);
3. the cell step by step (e, relu(W_in e + b_in), + h_{t-1}, W_h(.) + b_h, tanh, W_out, softmax) with real
   vectors, and the unrolled graph around it;
4. memory on hover: the previous <= 64 characters coloured by ||d log p(c_{t+1}) / d h_{t-k}||;
5. select and match (as LSTMVis): the units on throughout a span, and the other spans where they are on;
6. saturation per unit; 7. a PCA state map with nearest states; 8. the step-0 weights; 9. what-if on typed text.

Options: ``inspect.json`` (the numbers behind the page) and the PNG figures of earlier versions:
cell, unrolled, hidden, units, surprisal, gradients (the mean memory curve through autograd on the fused
recurrence) and eigenvalues (of W_h).

Positions: the text is c_0 .. c_{N-1}; h_t is the state after reading c_t
(h_{-1} = 0), and the output at t predicts c_{t+1}.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import DataError, load_text
from .files import atomic_save, atomic_write, check_dir, ensure_dir
from .models import FusedCharRNN
from .ops import fused_recurrence
from .train import CheckpointError, load_checkpoint, model_from_checkpoint, planned_backend, resolve_device

#: What the error line says when matplotlib is missing.
PLOT_HINT = 'inspect needs matplotlib: pip install "fused_rnn[plot]"'
DEFAULT_LENGTH = 2000
DPI = 110
#: The PNGs written beside index.html, in the page's order.
FIGURES = ("cell.png", "unrolled.png", "hidden.png", "units.png", "surprisal.png", "gradients.png", "eigenvalues.png")

#: Simple character classes a hidden unit may track (see `char_classes`).
CLASS_DOC = {
    "quote": "the character is a quote (' \" `)",
    "in_quotes": "inside a quoted string on the current line",
    "whitespace": "space, tab or newline",
    "newline": "a newline",
    "line_start": "the first character of a line",
    "indent": "leading whitespace of a line",
    "column": "characters since the last newline",
    "digit": "a digit",
    "letter": "a letter",
    "punctuation": "neither letter, digit nor whitespace",
}


def _require_matplotlib() -> type:
    """The `matplotlib.figure.Figure` class, used without pyplot (no global backend state)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise DataError(PLOT_HINT) from None
    return Figure


#: The fonts the figures draw text with: tick labels in the monospace one, the rest in matplotlib's default.
FONTS = ("DejaVu Sans Mono", "DejaVu Sans")


@functools.cache
def has_glyph(c: str) -> bool:
    """Whether every font of FONTS has a glyph for the character c (else matplotlib draws a box and warns)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    for family in FONTS:
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=True)
        if FT2Font(path).get_char_index(ord(c)) == 0:
            return False
    return True


def show_char(c: str) -> str:
    """A visible stand-in for one character in figure labels, drawn with a glyph the fonts have.

    Newline, space, tab and CR get a symbol; other unprintable characters, and any the fonts lack
    (CJK, emoji), an escape such as \\x00 or \\u4e2d, which is plain ASCII.
    """
    special = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}
    if c in special and has_glyph(special[c]):
        return special[c]
    if c == "$":  # matplotlib's mathtext reads a dollar: escaped, it draws as itself
        return "\\$"
    if c.isprintable() and has_glyph(c):
        return c
    o = ord(c)
    return f"\\x{o:02x}" if o < 256 else (f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")


def char_classes(text: str) -> dict[str, np.ndarray]:
    """Per-character features of `text` (length N): name -> (N,) float64, aligned with h_t after c_t.

    All are 0/1 indicators except "column" (characters since the last newline).
    "in_quotes" is 1 from an opening quote up to (not including) its closing quote; a
    newline ends it.
    """
    n = len(text)
    out = {name: np.zeros(n) for name in CLASS_DOC}
    open_quote, col, indent = None, 0, True
    for t, c in enumerate(text):
        if c in "'\"`":
            out["quote"][t] = 1
            if open_quote is None:
                open_quote = c
            elif c == open_quote:
                open_quote = None
        if c == "\n":
            open_quote = None
        out["in_quotes"][t] = open_quote is not None
        out["whitespace"][t] = c.isspace()
        out["newline"][t] = c == "\n"
        out["line_start"][t] = t == 0 or text[t - 1] == "\n"
        if t == 0 or text[t - 1] == "\n":
            col, indent = 0, True
        else:
            col += 1
        indent = indent and c in " \t"
        out["indent"][t] = indent
        out["column"][t] = col
        out["digit"][t] = c.isdigit()
        out["letter"][t] = c.isalpha()
        out["punctuation"][t] = not (c.isalnum() or c.isspace())
    return out


def correlations(hs: np.ndarray, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pearson correlation of every unit with every feature: hs (N, H) -> name -> (H,).

    Features that are constant over the text are left out; constant (dead) units get 0.
    """
    z = hs - hs.mean(0)
    zn = np.linalg.norm(z, axis=0)
    out = {}
    for name, f in feats.items():
        f = f - f.mean()
        fn = np.linalg.norm(f)
        if fn == 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (f @ z) / (fn * zn)
        out[name] = np.nan_to_num(r, nan=0.0)
    return out


def memory_curve(
    model: FusedCharRNN, tokens: torch.Tensor, hs: torch.Tensor, max_distance: int, max_positions: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-position ||d log p(c_{s+1} | c_0..c_s) / d h_{s-k}|| for k = 0..K, through the fused recurrence.

    For every end position s (at most `max_positions`, evenly spread over [K, N-2]),
    the window c_{s-K+1} .. c_s runs as one batch row from the true state h_{s-K},
    through `fused_recurrence` (the op `FusedCharRNN.recur` runs; its backward is the
    Triton kernel on GPU). The loss reads only the last state, so the gradient of the
    per-step input inp[j] equals the total gradient of the state h_{s-K+j} that it is
    added to: one backward pass gives every distance at once.

    Args:
        model: the model, on the device of `tokens`.
        tokens: (N,) character indices, N >= 2.
        hs: (N, H) hidden states of the whole text from h_{-1} = 0 (no grad needed).
        max_distance: the largest k; K = min(max_distance, N - 2).
        max_positions: the most end positions s to average over.

    Returns:
        positions (M,) int64 end positions s, and norms (M, K + 1) float64 where
        norms[m, k] is the gradient norm k steps back from the end s = positions[m].
    """
    n = tokens.numel()
    k_max = max(0, min(max_distance, n - 2))
    ends = np.arange(k_max, n - 1)
    if len(ends) > max_positions:
        ends = np.unique(np.linspace(k_max, n - 2, max_positions).round().astype(np.int64))
    dev = tokens.device
    ends_t = torch.as_tensor(ends, device=dev)
    idx = ends_t[:, None] - k_max + 1 + torch.arange(k_max, device=dev)  # (M, K): c_{s-K+1} .. c_s
    with torch.no_grad():
        table = F.relu(model.l_in(model.e.weight))  # (V, H), as in FusedCharRNN.recur
        inp = F.embedding(tokens[idx].t(), table)  # (K, M, H)
        h0 = hs[ends_t - k_max]  # h_{s-K}: (M, H)
    # the weights are constants here: autograd computes the state gradients and nothing else
    w, b = model.l_hidden.weight.detach(), model.l_hidden.bias.detach()
    w_out, b_out = model.l_out.weight.detach(), model.l_out.bias.detach()
    with torch.enable_grad():
        inp.requires_grad_()
        _, hn = fused_recurrence(inp, w, b, h0, backend=model.backend)
        if k_max == 0:
            hn = hn.detach().requires_grad_()  # the empty window returns h0 itself
        logp = F.log_softmax(F.linear(hn, w_out, b_out), dim=-1)
        loss = logp.gather(1, tokens[ends_t + 1][:, None]).sum()  # rows are independent: a sum keeps each
        want = [hn, inp] if k_max else [hn]
        grads = torch.autograd.grad(loss, want)
    norms = [grads[0].norm(dim=-1)]  # distance 0
    if k_max:
        norms += list(grads[1].norm(dim=-1).flip(0))  # inp[K-k] feeds on h_{s-k}: distance k
    return ends, torch.stack(norms, dim=1).double().cpu().numpy()


def cluster_order(hs: np.ndarray) -> np.ndarray:
    """Units in the leaf order of average-linkage clustering on 1 - correlation: hs (N, H) -> (H,) indices.

    Each merge joins the two clusters end to end in whichever orientation puts the
    closest pair of end units side by side, so related units sit together in the heatmap.
    Constant units correlate with nothing (distance 1).
    """
    h = hs.shape[1]
    z = hs - hs.mean(0)
    zn = np.linalg.norm(z, axis=0)
    zn[zn == 0] = np.inf
    z = z / zn
    d0 = 1.0 - z.T @ z
    d = d0.copy()
    np.fill_diagonal(d, np.inf)
    leaves = {i: [i] for i in range(h)}
    size = np.ones(h)
    for _ in range(h - 1):
        i, j = np.unravel_index(np.argmin(d), d.shape)
        i, j = min(i, j), max(i, j)
        merged = (d[i] * size[i] + d[j] * size[j]) / (size[i] + size[j])
        d[i, :] = merged
        d[:, i] = merged
        d[i, i] = np.inf
        d[j, :] = np.inf
        d[:, j] = np.inf
        a, b = leaves[i], leaves.pop(j)
        ends = {(0, 0): d0[a[-1], b[0]], (0, 1): d0[a[-1], b[-1]], (1, 0): d0[a[0], b[0]], (1, 1): d0[a[0], b[-1]]}
        flip_a, flip_b = min(ends, key=ends.get)
        leaves[i] = (a[::-1] if flip_a else a) + (b[::-1] if flip_b else b)
        size[i] += size[j]
    return np.array(next(iter(leaves.values())), dtype=np.int64)


def _hex(rgba) -> str:
    r, g, b = (int(round(255 * x)) for x in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _box(ax, x: float, y: float, text: str, w: float, h: float, color: str, fontsize: float = 9) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=color, ec="#333", lw=1.2
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, linespacing=1.35)


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], text: str = "", **kw) -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color=kw.pop("color", "#333"), lw=1.4, **kw))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.18, text, ha="center", va="bottom", fontsize=8.5)


def layer_params(vocab_size: int, n_fac: int, n_hidden: int) -> dict[str, int]:
    """Parameter count of each layer of the cell (weights and biases)."""
    v, f, h = vocab_size, n_fac, n_hidden
    return {"e": v * f, "l_in": f * h + h, "l_hidden": h * h + h, "l_out": h * v + v}


def plot_cell(Figure: type, path: Path, vocab_size: int, n_fac: int, n_hidden: int) -> None:
    """Figure 1: the cell drawn from the checkpoint's sizes, each layer with its parameter count."""
    from matplotlib.patches import Circle

    v, f, h = vocab_size, n_fac, n_hidden
    p = layer_params(v, f, h)
    fig = Figure(figsize=(15, 4.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 19.2)
    ax.set_ylim(0, 5.6)
    ax.axis("off")
    y, bw, bh = 3.2, 2.05, 1.45
    ax.text(0.8, y, "$c_t$", ha="center", va="center", fontsize=15)
    _box(ax, 2.8, y, f"e: Embedding\n{v} × {f}\n{p['e']:,} params", bw, bh, "#e8eefc")
    _box(ax, 5.6, y, f"l_in: Linear\n{f} → {h}\n{p['l_in']:,} params", bw, bh, "#fde9c9")
    _box(ax, 7.75, y, "relu", 0.95, 0.75, "#f4f4f4")
    ax.add_patch(Circle((9.15, y), 0.36, fc="#fff", ec="#333"))
    ax.text(9.15, y, "+", ha="center", va="center", fontsize=18)
    _box(ax, 11.0, y, f"l_hidden: Linear\n{h} → {h}\n{p['l_hidden']:,} params", bw + 0.2, bh, "#fde9c9")
    _box(ax, 13.15, y, "tanh", 0.95, 0.75, "#f4f4f4")
    ax.text(14.4, y, "$h_t$", ha="center", va="center", fontsize=15)
    _box(ax, 16.2, y, f"l_out: Linear\n{h} → {v}\n{p['l_out']:,} params", bw, bh, "#e2f3e2")
    ax.text(18.4, y + 0.25, "log_softmax", ha="center", va="center", fontsize=9)
    ax.text(18.4, y - 0.2, "$p(c_{t+1})$", ha="center", va="center", fontsize=13)
    _arrow(ax, (1.1, y), (2.8 - bw / 2, y), "index")
    _arrow(ax, (2.8 + bw / 2, y), (5.6 - bw / 2, y), f"{f}")
    _arrow(ax, (5.6 + bw / 2, y), (7.75 - 0.475, y), f"{h}")
    _arrow(ax, (7.75 + 0.475, y), (9.15 - 0.36, y))
    _arrow(ax, (9.15 + 0.36, y), (11.0 - (bw + 0.2) / 2, y), f"{h}")
    _arrow(ax, (11.0 + (bw + 0.2) / 2, y), (13.15 - 0.475, y))
    _arrow(ax, (13.15 + 0.475, y), (14.15, y))
    _arrow(ax, (14.65, y), (16.2 - bw / 2, y), f"{h}")
    _arrow(ax, (16.2 + bw / 2, y), (17.75, y), f"{v}")
    # the recurrence: h_t comes back, one step later, as h_{t-1} into the add
    ax.plot([14.4, 14.4, 9.15], [y - 0.3, 1.2, 1.2], color="#b03030", lw=1.6)
    _arrow(ax, (9.15, 1.2), (9.15, y - 0.36), color="#b03030")
    ax.text(11.8, 0.75, "$h_{t-1}$: the state, fed back one character later", ha="center", fontsize=10, color="#b03030")
    total = sum(p.values())
    ax.text(
        9.6,
        5.15,
        "two fully connected layers (l_in, l_hidden) and an add:  "
        "$h_t = \\tanh(W_h\\,(h_{t-1} + \\mathrm{relu}(W_{in} e_{c_t} + b_{in})) + b_h)$",
        ha="center",
        fontsize=11.5,
    )
    ax.text(0.3, 0.3, f"V = {v} characters, n_fac = {f}, H = {h};  {total:,} parameters in all", fontsize=9.5)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_unrolled(
    Figure: type,
    path: Path,
    text: str,
    norms: np.ndarray,
    guesses: list[list[tuple[str, float]]],
    p_next: list[float | None],
) -> None:
    """Figure 2: the cell unrolled over len(norms) characters; h_t nodes coloured by ||h_t||.

    Args:
        text: the first n characters. norms: (n,) ||h_t||. guesses: n lists of (char, p),
        the top guesses after each character. p_next: n values p(c_{t+1}) (None past the text).
    """
    import matplotlib as mpl
    from matplotlib.patches import Circle

    n = len(text)
    fig = Figure(figsize=(max(7.5, 1.55 * n + 2.6), 5.2))
    ax = fig.add_axes((0.0, 0.02, 0.9, 0.96))
    cax = fig.add_axes((0.915, 0.2, 0.015, 0.6))
    dx, x0 = 1.55, 1.9
    ax.set_xlim(0, x0 + dx * n - 0.3)
    ax.set_ylim(-0.2, 5.4)
    ax.axis("off")
    cmap = mpl.colormaps["viridis"]
    hi = float(norms.max()) if n else 1.0
    norm = mpl.colors.Normalize(vmin=0.0, vmax=max(hi, 1e-6))
    yc, yi, yh, yo = 0.45, 1.6, 2.95, 4.45
    for name, yy in (("input $c_t$", yc), ("relu(l_in(e))", yi), ("$h_t$", yh), ("l_out: guess", yo)):
        ax.text(0.05, yy, name, ha="left", va="center", fontsize=9, color="#555")
    ax.add_patch(Circle((x0 - dx + 0.55, yh), 0.32, fc="#fff", ec="#999", ls="--"))
    ax.text(x0 - dx + 0.55, yh, "0", ha="center", va="center", fontsize=9)
    ax.text(x0 - dx + 0.55, yh - 0.55, "$h_{-1}$", ha="center", va="top", fontsize=9)
    for t, c in enumerate(text):
        x = x0 + dx * t
        _box(ax, x, yc, f"'{show_char(c)}'", 0.8, 0.55, "#e8eefc", fontsize=11)
        _box(ax, x, yi, "$W_{in}$", 0.8, 0.45, "#fde9c9", fontsize=9)
        rgba = cmap(norm(norms[t]))
        ax.add_patch(Circle((x, yh), 0.38, fc=rgba, ec="#222", lw=1.2))
        light = sum(rgba[:3]) / 3 < 0.5
        ax.text(x, yh, f"{norms[t]:.2f}", ha="center", va="center", fontsize=8, color="w" if light else "k")
        g = guesses[t][0]
        label = f"'{show_char(g[0])}' {g[1]:.0%}"
        if p_next[t] is not None and t + 1 < n:
            label += f"\nnext '{show_char(text[t + 1])}':\np = {p_next[t]:.2f}"
        _box(ax, x, yo, label, 1.25, 1.05, "#e2f3e2", fontsize=8)
        _arrow(ax, (x, yc + 0.28), (x, yi - 0.23))
        _arrow(ax, (x, yi + 0.23), (x, yh - 0.38))
        _arrow(ax, (x, yh + 0.38), (x, yo - 0.53))
        prev = x0 - dx + 0.55 + 0.32 if t == 0 else x - dx + 0.38
        _arrow(ax, (prev, yh), (x - 0.38, yh), "$W_h$" if t == 0 else "", color="#b03030")
    cb = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    cb.set_label("$\\|h_t\\|$")
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def _spread(ys: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Sorted label positions moved apart to at least `gap`, kept within [lo, hi] where they fit."""
    out = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else max(y, lo))
    for i in range(len(out) - 1, -1, -1):  # push back up from the bottom edge
        limit = hi if i == len(out) - 1 else out[i + 1] - gap
        out[i] = min(out[i], limit)
    return out


def plot_hidden(Figure: type, path: Path, text: str, hs: np.ndarray, order: np.ndarray, marks: list[dict]) -> None:
    """Figure 3: hidden state heatmap, hs (W, H) for the W characters of `text`, rows in `order`.

    `marks` (dicts with "unit" and "class") are labelled on the right, one label per unit.
    """
    h = hs.shape[1]
    w = len(text)
    names: dict[int, list[str]] = {}
    for m in marks:
        names.setdefault(m["unit"], []).append(m["class"])
    labels = {u: f"u{u} {', '.join(c)}" for u, c in names.items()}
    label_w = 0.3 + 0.056 * max((len(t) for t in labels.values()), default=0)  # inches, for 7 pt text
    plot_w, plot_h = max(5.0, 0.145 * w), 5.1
    width = 0.6 + plot_w + label_w + 0.15 + 0.13 + 0.55
    fig = Figure(figsize=(width, 6.4))
    ax = fig.add_axes((0.6 / width, 0.13, plot_w / width, plot_h / 6.4))
    cax = fig.add_axes(((width - 0.68) / width, 0.13, 0.13 / width, plot_h / 6.4))
    im = ax.imshow(hs[:, order].T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(range(w))
    ax.set_xticklabels([show_char(c) for c in text], fontsize=7, family="DejaVu Sans Mono")
    ax.tick_params(axis="x", length=0, pad=2)
    ax.set_xlabel(f"the first {w} characters of the text")
    ax.set_ylabel(f"hidden unit ({h}), clustered by correlation")
    ax.set_yticks([])
    rank = {int(u): i for i, u in enumerate(order)}
    units = sorted(labels, key=rank.get)
    rows_per_inch = h / plot_h
    ys = _spread([float(rank[u]) for u in units], 0.13 * rows_per_inch, -0.5, h - 0.5)
    x_text = w - 0.5 + 0.3 * w / plot_w  # 0.3 in right of the heatmap
    for u, y in zip(units, ys, strict=True):
        ax.annotate(
            labels[u],
            xy=(w - 0.5, rank[u]),
            xytext=(x_text, y),
            fontsize=7,
            va="center",
            annotation_clip=False,
            arrowprops=dict(arrowstyle="-", lw=0.6, color="#555", shrinkA=0, shrinkB=1),
        )
    ax.set_title("hidden state $h_t$ (blue −1 … red +1)", fontsize=11)
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=8)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_units(
    Figure: type, path: Path, text: str, hs: np.ndarray, feats: dict[str, np.ndarray], marks: list[dict]
) -> None:
    """Figure 3b: each picked unit's activation over the window (line) against its class (shaded).

    hs: (W, H) states for the W characters of `text`; feats: name -> (N,) over the whole text (N >= W).
    """
    w = len(text)
    rows = max(1, len(marks))
    fig = Figure(figsize=(max(8.0, 0.145 * w + 1.6), 0.95 * rows + 1.0))
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(w)
    for ax, m in zip(axes, marks, strict=False):
        full = feats[m["class"]]  # over the whole text: 0 stays unshaded even where the window has no 1
        f = full[:w] / max(float(full.max()), 1e-12)
        on = f > 0
        ax.bar(x[on], 2 * f[on], bottom=-1, width=1.0, color="#f3c98b", alpha=0.6, lw=0)
        ax.plot(x, hs[:, m["unit"]], color="#1f4e9c", lw=1.2)
        ax.set_ylim(-1.08, 1.08)
        ax.set_yticks([-1, 0, 1])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel(f"u{m['unit']}", fontsize=8, rotation=0, ha="right", va="center")
        ax.text(
            1.002, 0.5, f"{m['class']}\nr = {m['correlation']:+.2f}", transform=ax.transAxes, fontsize=7.5, va="center"
        )
    axes[-1].set_xticks(range(w))
    axes[-1].set_xticklabels([show_char(c) for c in text], fontsize=7, family="DejaVu Sans Mono")
    axes[-1].tick_params(axis="x", length=0)
    axes[0].set_title("units that track a character class best: activation (line), class (shaded)", fontsize=10)
    fig.subplots_adjust(
        left=0.05, right=0.93, top=1 - 0.45 / (0.95 * rows + 1.0), bottom=0.5 / (0.95 * rows + 1.0), hspace=0.15
    )
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_surprisal(Figure: type, path: Path, surprisal: np.ndarray, vocab_size: int) -> None:
    """Figure 4: surprisal (N-1,) in nats per predicted character, with a running mean."""
    fig = Figure(figsize=(12, 3.4))
    ax = fig.add_axes((0.06, 0.17, 0.92, 0.72))
    x = np.arange(1, len(surprisal) + 1)
    ax.plot(x, surprisal, lw=0.6, color="#c0504d", alpha=0.7, label="−log p(character)")
    k = min(50, len(surprisal))
    if k > 1:
        run = np.convolve(surprisal, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1 :], run, lw=1.8, color="#222", label=f"mean of the last {k}")
    ax.axhline(math.log(vocab_size), color="#777", ls="--", lw=1, label=f"uniform guess: log {vocab_size}")
    ax.set_xlim(0, len(surprisal) + 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("character position in the text")
    ax.set_ylabel("surprisal (nats)")
    ax.set_title(
        f"surprisal per character: mean {surprisal.mean():.3f} nats ({surprisal.mean() / math.log(2):.3f} bits)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right")
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_gradients(Figure: type, path: Path, norms: np.ndarray) -> None:
    """Figure 5a: mean gradient norm (K+1,) against distance, with the 10-90 % band over positions (M, K+1)."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_axes((0.14, 0.13, 0.82, 0.78))
    k = np.arange(norms.shape[1])
    lo, hi = np.percentile(norms, [10, 90], axis=0)
    mean = norms.mean(0)
    positive = mean[mean > 0]
    # an exactly-zero gradient (tanh saturated to +-1 in float32, or underflow) has no place on a log
    # axis: keep it off and say where it starts
    floor = positive.min() / 10 if positive.size else None
    if floor is not None:
        lo, hi = np.maximum(lo, floor), np.maximum(hi, floor)
    ax.fill_between(k, lo, hi, color="#9ecae1", alpha=0.6, lw=0, label="10–90 % of positions")
    shown = mean > 0
    ax.plot(k[shown], mean[shown], "o-", ms=3, color="#08519c", lw=1.5, label="mean")
    if floor is not None:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        if not shown.all():
            first = int(k[~shown][0])
            ax.axvline(first, color="#b2182b", lw=1, ls="--", label=f"exactly 0 from k = {first}")
    ax.set_xlabel("distance k = T − t (characters back)")
    ax.set_ylabel("$\\|\\partial \\log p(c_{T+1}) / \\partial h_{T-k}\\|$")
    ax.set_title(f"memory through time (mean over {norms.shape[0]} positions)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_eigenvalues(Figure: type, path: Path, eig: np.ndarray) -> None:
    """Figure 5b: eigenvalues (H,) complex of W_h against the unit circle."""
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_axes((0.14, 0.2, 0.8, 0.72))
    th = np.linspace(0, 2 * np.pi, 400)
    rho = float(np.abs(eig).max())
    ax.plot(np.cos(th), np.sin(th), color="#444", lw=1, label="unit circle")
    ax.plot(rho * np.cos(th), rho * np.sin(th), color="#c0504d", lw=1, ls="--", label=f"spectral radius {rho:.3f}")
    ax.scatter(eig.real, eig.imag, s=10, color="#08519c", alpha=0.75, label="eigenvalues", zorder=3)
    r = max(1.1, rho * 1.1)
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.axhline(0, color="#bbb", lw=0.6)
    ax.axvline(0, color="#bbb", lw=0.6)
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_title("eigenvalues of $W_h$ (l_hidden.weight)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def inspect_checkpoint(
    checkpoint: str | Path,
    text: str,
    out_dir: str | Path,
    length: int = DEFAULT_LENGTH,
    device: str = "auto",
    *,
    window: int = 100,
    unroll: int = 8,
    max_distance: int = 64,
    max_positions: int = 256,
    training_chars: int = 0,
    write_json: bool = False,
    write_png: bool = False,
) -> dict:
    """Run the first `length` characters of `text` through `checkpoint` and write ``index.html`` (and, if asked,
    ``inspect.json`` and the PNG figures).

    Args:
        checkpoint: a checkpoint.pt written by `fused-rnn train`.
        text: the text itself (at least 2 characters, all in the checkpoint's vocabulary).
        out_dir: created if missing; receives index.html (and inspect.json, the PNGs).
        length: use text[:length].
        device: "auto" (CUDA if present), "cpu" or "cuda".
        window: characters of the PNG hidden-state figures and of ``hidden`` in the JSON.
        unroll: characters in the unrolled graph (PNG and JSON).
        max_distance: the largest distance k of the gradient curve.
        max_positions: the most end positions the gradient curve averages over.
        training_chars: how many characters at the start of `text` the model was trained on (labelled so).
        write_json: also write inspect.json.
        write_png: also write the PNG figures (needs matplotlib).

    Returns:
        The dict inspect.json holds. With N = len(text[:length]):
        ``surprisal`` (N-1,) nats, surprisal[i] = -log p(c_{i+1} | c_0..c_i);
        ``top3`` (N-1, 3) of [char, p]; ``grad_norms`` (K+1,), index k = k steps back
        from the end state h_s, averaged over ``grad_positions`` s; ``spectral_radius``
        and ``eigenvalues`` (H, 2) [re, im] of W_h; ``hidden`` (the heatmap: values
        (H, W) in ``unit_order``); ``units`` (best unit per character class);
        ``unit_class_correlation`` {class: (H,)}; ``unrolled``; ``params`` per layer;
        ``files``: what was written; ``page_bytes``: the size of index.html.

    Raises:
        DataError: matplotlib missing (with write_png), empty or too short text, unknown characters, bad sizes.
        CheckpointError: a missing, foreign or damaged checkpoint.
    """
    from . import inspect_page

    t_start = time.perf_counter()
    Figure = _require_matplotlib() if write_png else None
    for name, val, lo in (
        ("--length", length, 2),
        ("window", window, 1),
        ("unroll", unroll, 1),
        ("max_distance", max_distance, 0),
        ("max_positions", max_positions, 1),
    ):
        if val < lo:
            raise DataError(f"{name}: must be at least {lo}, got {val}")
    if not text:
        raise DataError("the text to inspect is empty")
    ckpt = load_checkpoint(checkpoint)
    model, vocab = model_from_checkpoint(ckpt, checkpoint)
    initial = ckpt.get("initial_model")
    if initial is not None and (
        set(initial) != set(ckpt["model"])
        or any(getattr(initial[k], "shape", None) != ckpt["model"][k].shape for k in ckpt["model"])
    ):
        raise CheckpointError(f"checkpoint: {checkpoint} is damaged: its step-0 weights do not fit its model")
    for which, state in (("weights", ckpt["model"]), ("step-0 weights", initial or {})):
        bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
        if bad:
            raise CheckpointError(
                f"checkpoint: {checkpoint} has non-finite {which} (NaN or inf in {', '.join(bad)}): nothing to inspect"
            )
    text = text[:length]
    missing = vocab.unknown(text)
    if missing:
        raise DataError(f"the text has characters not in the checkpoint's vocabulary: {''.join(missing)!r}")
    if len(text) < 2:
        raise DataError("the text to inspect needs at least 2 characters: one to read and one to predict")
    dev = resolve_device(device)
    out = ensure_dir(out_dir, "--out")

    model.to(dev).eval()
    tokens = vocab.encode(text).to(dev)
    n, h_size = len(text), model.n_hidden
    with torch.no_grad():
        hs_t, _ = model.recur(tokens[None])  # (N, 1, H)
        hs_t = hs_t[:, 0]
        logp_t = F.log_softmax(model.l_out(hs_t), dim=-1)  # (N, V): row t predicts c_{t+1}
    backend = planned_backend("fused", dev, 1, h_size) if model.backend == "auto" else model.backend
    positions, gnorms = memory_curve(model, tokens, hs_t, max_distance, max_positions)

    hs = hs_t.double().cpu().numpy()
    logp = logp_t.double().cpu().numpy()
    tok = tokens.cpu().numpy()
    surprisal = -logp[np.arange(n - 1), tok[1:]]
    top_i = np.argsort(-logp, axis=1)[:, :3]
    top3 = [[[vocab.chars[j], float(np.exp(logp[t, j]))] for j in top_i[t]] for t in range(n)]

    w_h = model.l_hidden.weight.detach().double().cpu().numpy()
    eig = np.linalg.eigvals(w_h)
    rho = float(np.abs(eig).max())

    order = cluster_order(hs)
    feats = char_classes(text)
    corr = correlations(hs, feats)
    units = []
    for name, r in corr.items():
        u = int(np.argmax(np.abs(r)))
        units.append({"class": name, "unit": u, "correlation": float(r[u])})
    units.sort(key=lambda m: -abs(m["correlation"]))

    wn = min(window, n)
    un = min(unroll, n)
    unorms = np.linalg.norm(hs[:un], axis=1)
    p_next = [float(np.exp(logp[t, tok[t + 1]])) if t + 1 < n else None for t in range(un)]
    params = layer_params(len(vocab), model.e.embedding_dim, h_size)
    source = (
        f"the first {min(training_chars, n):,} of these {n:,} characters are training text, not held out "
        "(--length is longer than the held-out end)"
        if training_chars
        else None
    )
    summary = {"mean_nats": float(surprisal.mean()), "bits_per_char": float(surprisal.mean() / math.log(2))}
    figures = list(FIGURES) if write_png else []
    files = ["index.html", *(["inspect.json"] if write_json else []), *figures]
    data = {
        "checkpoint": str(checkpoint),
        "step": int(ckpt["step"]),
        "vocab": vocab.chars,
        "vocab_size": len(vocab),
        "n_fac": model.e.embedding_dim,
        "n_hidden": h_size,
        "params": params,
        "device": dev.type,
        "backend": backend,
        "length": n,
        "text": text,
        "summary": summary,
        "surprisal": surprisal.tolist(),
        "top3": top3[: n - 1],
        "grad_norms": gnorms.mean(0).tolist(),
        "grad_norms_p10": np.percentile(gnorms, 10, axis=0).tolist(),
        "grad_norms_p90": np.percentile(gnorms, 90, axis=0).tolist(),
        "grad_positions": positions.tolist(),
        "grad_positions_count": len(positions),
        "spectral_radius": rho,
        "eigenvalues": [[float(z.real), float(z.imag)] for z in eig],
        "hidden": {
            "chars": text[:wn],
            "unit_order": order.tolist(),
            "values": np.round(hs[:wn, order].T, 5).tolist(),
        },
        "units": units,
        "unit_class_correlation": {k: np.round(v, 5).tolist() for k, v in corr.items()},
        "unrolled": {"chars": text[:un], "h_norms": unorms.tolist(), "p_next": p_next},
        "figures": figures,
        "files": files,
        "has_initial_weights": initial is not None,
        "training_chars": min(training_chars, n),
        "source": source,
        "notes": {
            "positions": "h_t is the state after reading c_t (h_{-1} = 0); the output at t predicts c_{t+1}",
            "surprisal": "surprisal[i] = -log p(c_{i+1} | c_0..c_i) in nats; top3[i] are the guesses for c_{i+1}",
            "grad_norms": "grad_norms[k] = mean over s in grad_positions of ||d log p(c_{s+1}) / d h_{s-k}||",
            "hidden": "values[r][t] = h_t[unit_order[r]]; unit_order: average-linkage clustering on 1 - correlation",
            "units": {k: v for k, v in CLASS_DOC.items() if k in corr},
        },
    }

    meta = {
        "checkpoint": str(checkpoint),
        "step": int(ckpt["step"]),
        "N": n,
        "H": h_size,
        "V": len(vocab),
        "E": model.e.embedding_dim,
        "n_params": sum(params.values()),
        "device": dev.type,
        "backend": backend,
        "spectral_radius": rho,
        "source": source,
        "training_chars": min(training_chars, n),
        **summary,
    }
    payload = inspect_page.build_payload(
        meta=meta,
        vocab=vocab.chars,
        tokens=tok,
        hs=hs,
        logp=logp,
        features=feats,
        feature_doc=CLASS_DOC,
        unit_order=order,
        grad_curve={k: data[f"grad_norms{s}"] for k, s in (("mean", ""), ("p10", "_p10"), ("p90", "_p90"))},
        trained={k: v.detach().cpu() for k, v in model.state_dict().items()},
        initial=initial,
    )
    page = inspect_page.render(payload)
    atomic_write(out / "index.html", page)
    data["page_bytes"] = len(page.encode("utf-8"))
    if write_png:
        plot_cell(Figure, out / "cell.png", len(vocab), model.e.embedding_dim, h_size)
        plot_unrolled(Figure, out / "unrolled.png", text[:un], unorms, top3[:un], p_next)
        plot_hidden(Figure, out / "hidden.png", text[:wn], hs[:wn], order, units)
        plot_units(Figure, out / "units.png", text[:wn], hs[:wn], feats, units[:6])
        plot_surprisal(Figure, out / "surprisal.png", surprisal, len(vocab))
        plot_gradients(Figure, out / "gradients.png", gnorms)
        plot_eigenvalues(Figure, out / "eigenvalues.png", eig)
    data["seconds"] = time.perf_counter() - t_start
    if write_json:
        atomic_write(out / "inspect.json", json.dumps(data, indent=1, ensure_ascii=False))
    return data


def held_out_part(checkpoint: str | Path, length: int = DEFAULT_LENGTH) -> tuple[str, int]:
    """The last `length` characters of the text the checkpoint was trained on, and how many of them (at the
    start) are training text: the held-out end is the last max(10% (--val-fraction), --seq-len + 1) characters."""
    c = load_checkpoint(checkpoint)["config"]
    text = load_text(c.get("text"))
    n_val = max(int(len(text) * float(c.get("val_fraction", 0.1))), int(c.get("seq_len", 0)) + 1)
    part = text[-length:]
    return part, max(0, len(part) - n_val)


def held_out_text(checkpoint: str | Path, length: int = DEFAULT_LENGTH) -> str:
    """The last `length` characters of the text the checkpoint was trained on (the validation end)."""
    return held_out_part(checkpoint, length)[0]


def inspect_command(
    checkpoint: str,
    text_path: str | None,
    prime: str | None,
    length: int,
    out: str,
    device: str = "auto",
    *,
    write_json: bool = False,
    write_png: bool = False,
) -> str:
    """`fused-rnn inspect`: read --text FILE, or take --prime TEXT, or else the held-out end of the
    checkpoint's own training text; inspect, and return the report lines."""
    if write_png:
        _require_matplotlib()
    check_dir(out, "--out")  # before any work; created once the inputs are known to be good
    training = 0
    if text_path is not None:
        text = load_text(text_path)
    elif prime is not None:
        text = prime
    else:
        text, training = held_out_part(checkpoint, length)
    data = inspect_checkpoint(
        checkpoint,
        text,
        out,
        length=length,
        device=device,
        training_chars=training,
        write_json=write_json,
        write_png=write_png,
    )
    page = Path(out) / "index.html"
    best = ", ".join(f"u{m['unit']} {m['class']} r={m['correlation']:+.2f}" for m in data["units"][:3])
    extra = (["inspect.json"] if write_json else []) + ([f"{len(data['figures'])} PNGs"] if data["figures"] else [])
    also = f" (and {' and '.join(extra)})"
    return (
        f"inspected {data['length']} characters in {data['seconds']:.1f}s ({data['device']}, {data['backend']}): "
        f"{data['summary']['mean_nats']:.3f} nats/char, spectral radius of W_h {data['spectral_radius']:.3f}\n"
        f"units: {best}\n"
        f"wrote {page}, one self-contained page ({data['page_bytes'] / 1e6:.2f} MB){also if extra else ''}: "
        f"open it in a browser, offline"
        + (
            ""
            if data["has_initial_weights"]
            else "\nnote: this checkpoint has no step-0 weights; the page has no before-training view"
        )
        + (f"\nnote: {data['source']}" if training else "")
    )


__all__ = [
    "DEFAULT_LENGTH",
    "FIGURES",
    "char_classes",
    "held_out_text",
    "inspect_checkpoint",
    "inspect_command",
    "memory_curve",
]
