"""The self-contained, interactive `index.html` of `fused-rnn inspect`.

One file: the data embedded as JSON with little-endian arrays in base64 (quantised where that keeps the page
small), the script and styles inline (`fused_rnn/page/page.js`, `page.css`). It loads nothing from anywhere,
so it works from ``file://`` with no network and no server.

Embedded arrays (N characters, H units, V characters in the vocabulary, E embedding size, C character classes):

=============  ======  ==========  =====================================================================
name           dtype   shape       meaning
=============  ======  ==========  =====================================================================
tokens         uint16  (N,)        the text as vocabulary indices
h              int16   (N, H)      h_t, the state after reading c_t, quantised: value = q / 32767
top_idx        uint16  (N, k)      the k likeliest next characters after c_t (k = min(5, V))
top_p          uint16  (N, k)      their probabilities, quantised: p = q / 65535
surprisal      float32 (N-1,)      surprisal[i] = -log p(c_{i+1} | c_0..c_i), nats
features       float32 (C, N)      the character classes of `char_classes`
unit_order     uint16  (H,)        units in the heat map's (clustered) order
weights.*      float32             emb (V, E), w_in (H, E), b_in (H,), w_h (H, H), b_h (H,),
                                   w_out (V, H), b_out (V,): "trained" and "initial" (step 0, or null)
=============  ======  ==========  =====================================================================

`decode_page` reads them back (what the tests compare with the model's own numbers).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np

#: int16 quantisation of states in [-1, 1], and uint16 of probabilities in [0, 1].
H_SCALE = 32767
P_SCALE = 65535
TOP_K = 5
ASSETS = Path(__file__).with_name("page")
#: The state_dict names of FusedCharRNN behind each embedded weight.
WEIGHT_NAMES = {
    "emb": "e.weight",
    "w_in": "l_in.weight",
    "b_in": "l_in.bias",
    "w_h": "l_hidden.weight",
    "b_h": "l_hidden.bias",
    "w_out": "l_out.weight",
    "b_out": "l_out.bias",
}


def _blob(a: np.ndarray, dtype: str, scale: float | None = None) -> dict:
    """One array: dtype, shape, little-endian bytes in base64 and, for quantised ones, the scale to multiply by."""
    a = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    out = {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}
    if scale is not None:
        out["scale"] = scale
    return out


def _unblob(b: dict) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(b["b64"]), dtype=np.dtype(b["dtype"]).newbyteorder("<"))
    a = a.reshape(b["shape"])
    return a * b["scale"] if "scale" in b else a.astype(a.dtype.newbyteorder("="))


def quantise_states(hs: np.ndarray) -> np.ndarray:
    """(N, H) states in [-1, 1] -> int16 (q / 32767 is within half a step, 1.5e-5, of the value)."""
    return np.clip(np.rint(np.asarray(hs, np.float64) * H_SCALE), -H_SCALE, H_SCALE).astype(np.int16)


def weights_blobs(state: dict | None) -> dict | None:
    """A FusedCharRNN state_dict (tensors or arrays) -> the page's float32 weight blobs; None stays None."""
    if state is None:
        return None
    out = {}
    for key, name in WEIGHT_NAMES.items():
        t = state[name]
        a = t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, np.float32)
        out[key] = _blob(a, "float32")
    return out


def build_payload(
    *,
    meta: dict,
    vocab: list[str],
    tokens: np.ndarray,
    hs: np.ndarray,
    logp: np.ndarray,
    features: dict[str, np.ndarray],
    feature_doc: dict[str, str],
    unit_order: np.ndarray,
    grad_curve: dict | None,
    trained: dict,
    initial: dict | None,
) -> dict:
    """Everything the page shows, packed.

    Args:
        meta: plain values for the header (N, H, V, E and the run's facts).
        vocab: the V characters; tokens (N,) their indices in the text.
        hs: (N, H) states; logp: (N, V) log-probabilities, row t predicts c_{t+1}.
        features: class name -> (N,) values; feature_doc: name -> meaning.
        unit_order: (H,) the heat map's unit order.
        grad_curve: {"mean", "p10", "p90"} lists over distance k, or None.
        trained, initial: FusedCharRNN state_dicts (initial may be None).
    """
    n = len(tokens)
    k = min(TOP_K, len(vocab))
    top = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    top_p = np.exp(np.take_along_axis(logp, top, axis=1))
    surprisal = -logp[np.arange(n - 1), np.asarray(tokens)[1:]]
    names = list(features)
    feats = np.stack([np.asarray(features[c], np.float64) for c in names]) if names else np.zeros((0, n))
    return {
        "format": "fused_rnn.inspect/1",
        "meta": meta,
        "vocab": list(vocab),
        "top_k": k,
        "tokens": _blob(tokens, "uint16"),
        "h": _blob(quantise_states(hs), "int16", 1.0 / H_SCALE),
        "top_idx": _blob(top, "uint16"),
        "top_p": _blob(np.clip(np.rint(top_p * P_SCALE), 0, P_SCALE), "uint16", 1.0 / P_SCALE),
        "surprisal": _blob(surprisal, "float32"),
        "features": _blob(feats, "float32"),
        "feature_names": names,
        "feature_doc": {c: feature_doc.get(c, c) for c in names},
        "unit_order": _blob(unit_order, "uint16"),
        "grad_curve": grad_curve,
        "weights": {"trained": weights_blobs(trained), "initial": weights_blobs(initial)},
    }


def _json_for_script(obj) -> str:
    """JSON that cannot end its <script> element early: every '<' is written as \\u003c."""
    # allow_nan=False: a NaN would be written as a bare NaN, which JSON.parse refuses (the page would not load)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render(payload: dict) -> str:
    """The page: one HTML document with its data, script and styles inline."""
    m = payload["meta"]
    esc = html.escape
    css = (ASSETS / "page.css").read_text(encoding="utf-8")
    js = (ASSETS / "page.js").read_text(encoding="utf-8").replace("</", "<\\/")
    note = f'<p class="note"><b>Note:</b> {esc(m["source"])}.</p>' if m.get("source") else ""
    has_initial = payload["weights"]["initial"] is not None
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>fused-rnn inspect: {esc(m["checkpoint"])}</title>
<style>{css}</style></head>
<body data-ready="0">
<h1>What lies beneath: {esc(m["checkpoint"])}</h1>
<p>Step {m["step"]} of training; V = {m["V"]} characters, embedding {m["E"]}, H = {m["H"]} units,
{m["n_params"]:,} parameters. {m["N"]:,} characters run on {esc(m["device"])} ({esc(m["backend"])} recurrence): mean
surprisal {m["mean_nats"]:.3f} nats per character ({m["bits_per_char"]:.3f} bits); spectral radius of W_h
{m["spectral_radius"]:.3f}. States are stored to 1/32767 and probabilities to 1/65535; the cell step, the memory, the
what-if run and the step-0 view are computed in this page in float64 from the model's float32 weights.</p>
{note}
<noscript><p class="note">This page needs JavaScript (it runs offline; nothing is fetched).</p></noscript>
<div class="controls" role="toolbar" aria-label="view controls">
<fieldset><legend>Weights</legend>
<label><input type="radio" name="weights" id="w-trained" value="trained" checked> trained (step {m["step"]})</label>
<label id="w-initial-label"><input type="radio" name="weights" id="w-initial" value="initial"> before training (step 0)
</label><span id="w-note" class="muted">{"" if has_initial else "(no step-0 weights in this checkpoint)"}</span>
</fieldset>
<fieldset><legend>Colour the text by</legend>
<label><input type="radio" name="mode" id="m-surprisal" value="surprisal" checked> surprisal</label>
<label><input type="radio" name="mode" id="m-unit" value="unit"> unit</label>
<label><input type="number" id="unit-input" min="0" value="0" style="width:4.5em" aria-label="unit"></label>
<label><input type="radio" name="mode" id="m-memory" value="memory"> memory (hover)</label>
</fieldset>
<span class="muted" id="keys"><kbd>←</kbd><kbd>→</kbd> character, <kbd>↑</kbd><kbd>↓</kbd> unit,
<kbd>Shift</kbd>+<kbd>←</kbd><kbd>→</kbd> select, <kbd>[</kbd><kbd>]</kbd> cell step, <kbd>Esc</kbd> clear</span>
</div>

<h2>1. The text and the character inspector</h2>
<p>Hover over a character, or click it to keep it. <span id="text-legend"></span></p>
<div class="main">
<div id="text" class="text" tabindex="0" aria-label="the text, one element per character"></div>
<aside class="panel" id="ci" aria-live="polite">
<h3>Character <code id="ci-char"></code> <span class="muted">at <span id="ci-pos"></span></span></h3>
<div class="kv"><span>surprisal</span><span id="ci-sur"></span><span>‖h_t‖</span><span id="ci-norm"></span>
<span>unit</span><span id="ci-unit"></span></div>
<p class="muted" style="margin-top:.4em">
h_t, one square per unit (blue −1, white 0, orange +1); click one to pick it:</p>
<div id="ci-grid" class="grid"></div>
<p><b>Top {payload["top_k"]} guesses for the next character</b> <span class="muted" id="ci-next"></span></p>
<div id="ci-bars" class="bars"></div>
<span id="mem-values" hidden></span>
</aside>
</div>

<h2>2. The cell, step by step</h2>
<p>The state of the character picked above going through the cell with the model's real numbers, from its stored
h<sub>t−1</sub>. <span class="stage"><button id="cs-prev" aria-label="previous stage">◀ Prev</button>
<button id="cs-next" aria-label="next stage">Next ▶</button> <b id="cs-stage" aria-live="polite"></b></span></p>
<p id="cs-formula"></p>
<div id="cs-vec" class="vec" aria-label="the stage's vector, one square per element"></div>
<p id="cs-nums" class="nums"></p>
<svg id="cs-svg" viewBox="0 0 860 230" width="860" height="230" role="img"
aria-label="the cell unrolled around the character"></svg>

<h2>3. The hidden state over the whole text</h2>
<p>Every unit (rows, in clustered order: units that move together sit together) over all {m["N"]:,} characters
(columns). Click to pick a unit and a character; the blue lines mark them.</p>
<div class="wide"><canvas id="heat" tabindex="0"
aria-label="heat map of h, units by characters; arrows move the picked unit and character"></canvas></div>

<h2>4. Every unit</h2>
<p>Click a column to sort, a row (or Enter) to pick the unit. <i>best class</i>: the character class it follows best
(Pearson r over the text).</p>
<div class="tablebox"><table><thead><tr id="units-head"></tr></thead><tbody id="units-body"></tbody></table></div>

<h2>5. Select and match</h2>
<p>Drag over a span of the text; the units that stay at or above the threshold throughout it are listed, and every
other span where all of them are on is marked in the text and ranked by length.
<label>threshold
<input type="number" id="sm-thr" value="0.5" step="0.05" min="-1" max="1" style="width:5em"></label></p>
<p id="sm-info"></p><div id="sm-result" data-units="[]" data-matches="[]"></div>

<h2>6. Saturation and the state map</h2>
<div class="two"><div><p>One dot per unit; click one to pick it. <span id="sat-info" class="muted"></span></p>
<svg id="sat" width="520" height="360" role="img" aria-label="saturation of every unit"></svg></div>
<div><p>The states h<sub>t</sub> on their first two principal components, coloured by the picked unit; click a dot to
pick its character. The five nearest states of the picked character (in all H dimensions):</p>
<svg id="pca" width="520" height="360" role="img" aria-label="principal components of the states"></svg>
<ol id="pca-nn" class="list"></ol></div></div>

<h2>7. Memory through time</h2>
<p>Choose <i>memory</i> above and hover over a character: the {64} characters before it are coloured by
‖∂ log p(c<sub>t+1</sub>) / ∂h<sub>t−k</sub>‖. Averaged over positions (autograd on the fused recurrence, run by
inspect):</p>
<svg id="memcurve" width="520" height="360" role="img" aria-label="mean gradient norm against distance"></svg>

<h2>8. What if</h2>
<p>Type a text; the model (the weights chosen above) reads it from h = 0 in this page. Hover for the guesses.</p>
<textarea id="wi-text" aria-label="your text" spellcheck="false"></textarea>
<p><button id="wi-run">Run the model</button> <span id="wi-msg" role="status"></span></p>
<div id="wi-out" class="text" style="max-height:none"></div>

<script type="application/json" id="fr-data">{_json_for_script(payload)}</script>
<script>{js}</script>
</body></html>
"""


def write(path: str | Path, payload: dict) -> None:
    """Write the page atomically."""
    from .files import atomic_write

    atomic_write(path, render(payload))


def decode_page(page: str) -> dict:
    """The arrays embedded in a page, decoded: name -> np.ndarray (weights as {"trained": {...}, "initial": ...}),
    plus "payload" (the JSON itself). Quantised arrays come back as float64 values."""
    found = re.search(r'<script type="application/json" id="fr-data">(.*?)</script>', page, re.S)
    if not found:
        raise ValueError("no fused-rnn inspect data in this page")
    p = json.loads(found.group(1))
    out = {k: _unblob(p[k]) for k in ("tokens", "h", "top_idx", "top_p", "surprisal", "features", "unit_order")}
    out["weights"] = {
        name: None if w is None else {k: _unblob(b) for k, b in w.items()} for name, w in p["weights"].items()
    }
    out["payload"] = p
    return out
