"""The interactive `fused-rnn inspect` page: its embedded data (no browser), then every feature driven in headless
Chromium through the DevTools protocol with real mouse, keyboard and typing, against float64 torch and numpy.

Set FUSED_RNN_SCREENSHOT=PATH to keep the page's screenshot (the README's picture is made so).
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cdp import CHROMIUM, Browser

from fused_rnn import inspect_page
from fused_rnn.data import Vocab
from fused_rnn.inspector import char_classes, inspect_checkpoint
from fused_rnn.models import FusedCharRNN
from fused_rnn.reference import CharLoopModel
from fused_rnn.train import TrainConfig, load_checkpoint, save_checkpoint

TEXT = (
    'def f(x, n=10):\n    """Say "hi" 3 times."""\n    s = \'a\' + str(n * 42)\n    return [x, s]\n\n'
    "class Box:\n    def __init__(self, size):\n        self.size = size  # 3 < 4 </script>\n\n"
) * 3
H, EMBED = 24, 8
Q_H = 0.5 / inspect_page.H_SCALE  # half a quantisation step of the states
Q_P = 0.5 / inspect_page.P_SCALE
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (Debian: chromium)")


def trained_checkpoint(path: Path, steps: int = 150, keep_initial: bool = True) -> Path:
    """A small FusedCharRNN trained for a few Adam steps on TEXT (torch path), saved as `fused-rnn train` saves it,
    with its step-0 weights."""
    vocab = Vocab.from_text(TEXT)
    model = FusedCharRNN(len(vocab), EMBED, H, backend="torch")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    data = vocab.encode(TEXT)
    seq = 32
    for i in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (8,), generator=torch.Generator().manual_seed(i))
        x = torch.stack([data[s : s + seq] for s in starts])
        y = torch.stack([data[s + 1 : s + seq + 1] for s in starts])
        logp, _ = model.forward_sequence(x)
        loss = F.nll_loss(logp.reshape(-1, logp.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(hidden=H, embed=EMBED)
    save_checkpoint(path, model, opt, vocab, cfg, steps, [], initial=initial if keep_initial else None)
    return path


def reference(state: dict, n_vocab: int) -> CharLoopModel:
    ref = CharLoopModel(n_vocab, EMBED, H)
    ref.load_state_dict(state)
    return ref.double()


def states_and_logp(ref: CharLoopModel, toks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """float64 h_t (N, H) and log p (N, V) of the loop model from h_{-1} = 0."""
    with torch.no_grad():
        h = torch.zeros(1, H, dtype=torch.float64)
        hs = []
        for c in toks:
            h = ref.step(h, c[None])
            hs.append(h[0])
        hs = torch.stack(hs)
        return hs.numpy(), F.log_softmax(ref.l_out(hs), dim=-1).numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    ck = trained_checkpoint(root / "run" / "checkpoint.pt")
    out = root / "out"
    data = inspect_checkpoint(ck, TEXT, out, device="cpu", max_distance=16, max_positions=32)
    ckpt = load_checkpoint(ck)
    vocab = Vocab(ckpt["vocab"])
    toks = vocab.encode(TEXT)
    page = (out / "index.html").read_text(encoding="utf-8")
    ref = reference(ckpt["model"], len(vocab))
    hs, logp = states_and_logp(ref, toks)
    return {
        "ck": ck,
        "out": out,
        "data": data,
        "ckpt": ckpt,
        "vocab": vocab,
        "toks": toks,
        "page": page,
        "dec": inspect_page.decode_page(page),
        "ref": ref,
        "hs": hs,
        "logp": logp,
    }


# ------------------------------------------------------------------------------------------ without a browser
def test_one_self_contained_file(run):
    out, page = run["out"], run["page"]
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # inspect.json and PNGs are options now
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs == ["data:,"], refs  # the empty favicon only: no file, no URL
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page
    assert page.count("<script") == 2 and "<script src" not in page and '<link rel="stylesheet' not in page
    # the text holds "</script>": it must not end the data element early
    assert page.count("</script>") == 2


def test_embedded_data_decodes_to_the_models_numbers(run):
    dec, vocab, toks, hs, logp = run["dec"], run["vocab"], run["toks"], run["hs"], run["logp"]
    n = len(TEXT)
    assert dec["tokens"].tolist() == toks.tolist()
    assert dec["h"].shape == (n, H)
    np.testing.assert_allclose(dec["h"], hs, rtol=0, atol=Q_H + 2e-6)  # fp32 run + half a step
    k = dec["payload"]["top_k"]
    assert k == 5 and dec["top_idx"].shape == (n, 5)
    p_ref = np.exp(logp)
    got_p = dec["top_p"]
    np.testing.assert_allclose(got_p, np.take_along_axis(p_ref, dec["top_idx"].astype(np.int64), 1), atol=Q_P + 1e-6)
    np.testing.assert_allclose(got_p, -np.sort(-p_ref, axis=1)[:, :5], atol=Q_P + 1e-6)  # they are the top 5
    np.testing.assert_allclose(dec["surprisal"], -logp[np.arange(n - 1), toks[1:].numpy()], rtol=1e-5, atol=1e-6)
    feats = char_classes(TEXT)
    assert dec["payload"]["feature_names"] == list(feats)
    np.testing.assert_array_equal(dec["features"], np.stack(list(feats.values())).astype(np.float32))
    assert sorted(dec["unit_order"].tolist()) == list(range(H))
    for which in ("trained", "initial"):
        state = run["ckpt"]["model" if which == "trained" else "initial_model"]
        for key, name in inspect_page.WEIGHT_NAMES.items():
            np.testing.assert_array_equal(dec["weights"][which][key], state[name].numpy(), err_msg=f"{which} {key}")
    meta = dec["payload"]["meta"]
    assert (meta["N"], meta["H"], meta["V"], meta["E"], meta["step"]) == (n, H, len(vocab), EMBED, 150)


def test_without_step0_weights_the_page_still_renders(tmp_path):
    ck = trained_checkpoint(tmp_path / "ck.pt", steps=2, keep_initial=False)
    assert "initial_model" not in load_checkpoint(ck)
    data = inspect_checkpoint(ck, TEXT[:60], tmp_path / "o", device="cpu", max_distance=4)
    dec = inspect_page.decode_page((tmp_path / "o" / "index.html").read_text(encoding="utf-8"))
    assert dec["weights"]["initial"] is None and data["has_initial_weights"] is False


def test_page_stays_under_3_mb_at_h256_and_2000_characters():
    """The default excerpt (2,000 characters) of an H = 256 model with its step-0 weights: at most 3 MB."""
    n, h, v, e = 2000, 256, 96, 42
    rng = np.random.default_rng()
    state = lambda: {  # noqa: E731
        "e.weight": rng.standard_normal((v, e)),
        "l_in.weight": rng.standard_normal((h, e)),
        "l_in.bias": rng.standard_normal(h),
        "l_hidden.weight": rng.standard_normal((h, h)),
        "l_hidden.bias": rng.standard_normal(h),
        "l_out.weight": rng.standard_normal((v, h)),
        "l_out.bias": rng.standard_normal(v),
    }
    text = "".join(chr(32 + i % 95) for i in range(n))
    logp = np.log(rng.dirichlet(np.ones(v), size=n))
    meta = dict(checkpoint="c.pt", step=1, N=n, H=h, V=v, E=e, n_params=1, device="cpu", backend="torch")
    meta.update(spectral_radius=1.0, source=None, training_chars=0, mean_nats=1.0, bits_per_char=1.0)
    payload = inspect_page.build_payload(
        meta=meta,
        vocab=[chr(32 + i) for i in range(v)],
        tokens=rng.integers(0, v, n),
        hs=np.tanh(rng.standard_normal((n, h))),
        logp=logp,
        features=char_classes(text),
        feature_doc={},
        unit_order=np.arange(h),
        grad_curve={"mean": [1.0] * 65, "p10": [1.0] * 65, "p90": [1.0] * 65},
        trained=state(),
        initial=state(),
    )
    size = len(inspect_page.render(payload).encode("utf-8"))
    assert size <= 3_000_000, size


def test_quantisation_round_trips():
    x = np.concatenate([np.linspace(-1, 1, 1001), np.tanh(np.random.default_rng().standard_normal(5000))])
    q = inspect_page.quantise_states(x)
    assert q.dtype == np.int16 and np.abs(q / inspect_page.H_SCALE - x).max() <= Q_H + 1e-12


# ------------------------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def browser(run, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (Debian package: chromium)")
    with Browser(tmp_path_factory.mktemp("profile")) as b:
        b.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        b.open((run["out"] / "index.html").as_uri())
        assert b.js("document.body.dataset.ready") == "1", b.console
        yield b
        # after every test of the module: nothing went to the console, nothing but the page was fetched
        assert not b.console, b.console
        page_url = (run["out"] / "index.html").as_uri()
        assert all(u == page_url or u.startswith("data:") for u in b.requests), b.requests


def char(t: int) -> str:
    return f'#text span[data-t="{t}"]'


@needs_chromium
def test_character_inspector_on_hover_and_click(run, browser):
    b, hs, logp, vocab = browser, run["hs"], run["logp"], run["vocab"]
    for t in (0, 1, 37, len(TEXT) - 1):
        b.hover(char(t))
        assert b.js("+document.getElementById('ci').dataset.t") == t
        grid = np.array(b.js("[...document.querySelectorAll('#ci-grid [data-u]')].map(c => +c.dataset.v)"))
        np.testing.assert_allclose(grid, hs[t], atol=Q_H + 2e-6)  # the model's state, within the quantisation
        assert float(b.js("document.getElementById('ci-norm').textContent")) == pytest.approx(
            np.linalg.norm(hs[t]), abs=1e-3
        )
        bars = b.js("[...document.querySelectorAll('#ci-bars .bar')].map(e => [e.dataset.char, +e.dataset.p])")
        assert len(bars) == 5
        for c, p in bars:
            assert p == pytest.approx(np.exp(logp[t, vocab.index[c]]), abs=Q_P + 1e-6)
        assert [p for _, p in bars] == sorted((p for _, p in bars), reverse=True)
        np.testing.assert_allclose([p for _, p in bars], -np.sort(-np.exp(logp[t]))[:5], atol=Q_P + 1e-6)
        if t:
            sur = b.js("document.getElementById('ci-sur').textContent")
            assert float(sur.split()[0]) == pytest.approx(-logp[t - 1, run["toks"][t]], abs=1e-4)
    b.click(char(12))
    b.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 1270, "y": 890})  # off the text
    assert b.js("+document.getElementById('ci').dataset.t") == 12
    assert b.js("document.querySelector('#text .cur').dataset.t") == "12"


@needs_chromium
def test_neuron_picker_by_grid_table_heatmap_and_arrows(run, browser):
    b, dec = browser, run["dec"]
    b.click('#ci-grid [data-u="5"]')
    assert (
        b.js("document.getElementById('m-unit').checked") and b.js("+document.getElementById('unit-input').value") == 5
    )
    colours = b.js("[...document.querySelectorAll('#text span')].map(s => s.style.background)")
    assert len(set(colours)) > 10  # the text is coloured by h_t[5]
    lo, hi = int(np.argmin(dec["h"][:, 5])), int(np.argmax(dec["h"][:, 5]))
    blue = b.js(f"getComputedStyle(document.querySelector('{char(lo)}')).backgroundColor")
    orange = b.js(f"getComputedStyle(document.querySelector('{char(hi)}')).backgroundColor")
    rgb = lambda s: [int(x) for x in re.findall(r"\d+", s)[:3]]  # noqa: E731
    if dec["h"][lo, 5] < -0.5 and dec["h"][hi, 5] > 0.5:
        assert rgb(blue)[2] > rgb(blue)[0] and rgb(orange)[0] > rgb(orange)[2]
    b.key("ArrowDown")
    assert b.js("+document.getElementById('unit-input').value") == 6
    b.key("ArrowUp")
    b.key("ArrowUp")
    assert b.js("+document.getElementById('unit-input').value") == 4
    # the units table lists every unit; sorting by |r| orders it; a click or Enter on a row picks it
    assert b.js("document.querySelectorAll('#units-body tr').length") == H
    b.click('#units-head button[data-key="r"]')
    rs = b.js("[...document.querySelectorAll('#units-body tr')].map(r => +r.children[2].textContent.replace('−','-'))")
    assert [abs(r) for r in rs] == sorted((abs(r) for r in rs), reverse=True)
    first = b.js("+document.querySelector('#units-body tr').dataset.u")
    b.click("#units-body tr:nth-child(3)")
    third = b.js("+document.querySelector('#units-body tr:nth-child(3)').dataset.u")
    assert b.js("+document.getElementById('unit-input').value") == third
    b.js("document.querySelector('#units-body tr').focus()")
    b.key("Enter")
    assert b.js("+document.getElementById('unit-input').value") == first
    # the heat map: a click picks the unit of that row (clustered order) and the character of that column
    order = dec["unit_order"].tolist()
    x, y = b.center("#heat")
    w, h = b.js(
        "[document.getElementById('heat').getBoundingClientRect().width, "
        "document.getElementById('heat').getBoundingClientRect().height]"
    )
    row, col = 7, 100
    px, py = x - w / 2 + (col + 0.5) * w / len(TEXT), y - h / 2 + (row + 0.5) * h / H
    b.mouse("mouseMoved", px, py)
    b.mouse("mousePressed", px, py, 1)
    b.mouse("mouseReleased", px, py)
    assert b.js("+document.getElementById('unit-input').value") == order[row]
    assert b.js("+document.getElementById('ci').dataset.t") == col
    # ArrowRight / ArrowLeft step through the characters
    b.key("ArrowRight")
    assert b.js("+document.getElementById('ci').dataset.t") == col + 1


@needs_chromium
def test_cell_step_equals_torch(run, browser):
    b, dec = browser, run["dec"]
    w = {k: torch.from_numpy(v.astype(np.float64)) for k, v in dec["weights"]["trained"].items()}
    for t in (0, 41):
        b.click(char(t))
        while b.js("+document.getElementById('cs-stage').dataset.stage") > 0:
            b.click("#cs-prev")
        assert b.js("+document.getElementById('cs-vec').dataset.t") == t
        h_prev = torch.from_numpy(dec["h"][t - 1]) if t else torch.zeros(H, dtype=torch.float64)
        e = w["emb"][run["toks"][t]]
        x = F.relu(w["w_in"] @ e + w["b_in"])
        s = h_prev + x
        z = w["w_h"] @ s + w["b_h"]
        h = torch.tanh(z)
        y = w["w_out"] @ h + w["b_out"]
        want = [e, x, s, z, h, y, F.softmax(y, dim=0)]
        for stage, vec in enumerate(want):
            assert b.js("+document.getElementById('cs-stage').dataset.stage") == stage
            got = np.array(b.js("JSON.parse(document.getElementById('cs-vec').dataset.values)"))
            np.testing.assert_allclose(got, vec.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"t={t} stage {stage}")
            if stage < 6:
                b.click("#cs-next")
        # and the step lands on the model's own next state (from the quantised h_{t-1})
        np.testing.assert_allclose(want[4].numpy(), run["hs"][t], atol=1e-3)
    b.click("#cs-next")  # past softmax: the next character's first stage
    assert b.js("+document.getElementById('cs-vec').dataset.t") == 42
    assert b.js("+document.getElementById('cs-stage').dataset.stage") == 0


@needs_chromium
def test_memory_on_hover_equals_autograd(run, browser):
    b, ref, toks = browser, run["ref"], run["toks"]
    b.click("#m-memory")
    n = len(TEXT)
    for t in (3, 70, 150, n - 2):
        b.hover(char(t))
        assert b.js("+document.getElementById('mem-values').dataset.t") == t
        got = np.array(b.js("JSON.parse(document.getElementById('mem-values').dataset.values)"))
        k_max = min(64, t)
        assert got.shape == (k_max + 1,)
        # float64 autograd: the chain h_{t-K} .. h_t of CharLoopModel.step, each state a retained leaf
        with torch.no_grad():
            h = torch.zeros(1, H, dtype=torch.float64)
            for c in toks[: t - k_max + 1]:
                h = ref.step(h, c[None])
        chain = [h.clone().requires_grad_()]
        for j in range(t - k_max + 1, t + 1):
            chain.append(ref.step(chain[-1], toks[j][None]))
            chain[-1].retain_grad()
        F.log_softmax(ref.l_out(chain[-1]), dim=-1)[0, toks[t + 1]].backward()
        want = np.array([chain[k_max - k].grad.norm().item() for k in range(k_max + 1)])
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-12, err_msg=f"t={t}")
        colours = b.js(
            f"[...document.querySelectorAll('#text span')].slice({t - k_max}, {t + 1}).map(s => s.style.background)"
        )
        assert len(set(colours)) > 1 and b.js(f"document.querySelector('{char(max(0, t - 70))}').style.background") in (
            "rgb(238, 238, 238)",
            colours[0],
        )
    b.click("#m-surprisal")


@needs_chromium
def test_select_and_match_equals_numpy(run, browser):
    b, hs = browser, run["dec"]["h"]
    n = len(TEXT)

    def numpy_search(a, z, thr):
        units = [u for u in range(H) if (hs[a : z + 1, u] >= thr).all()]
        if not units:
            return units, []
        on = (hs[:, units] >= thr).all(axis=1)
        runs, start = [], None
        for t in range(n + 1):
            if t < n and on[t] and start is None:
                start = t
            if (t == n or not on[t]) and start is not None:
                runs.append([start, t - 1])
                start = None
        runs.sort(key=lambda r: (-(r[1] - r[0]), r[0]))
        return units, runs

    for a, z, thr in ((4, 9, "0.5"), (16, 19, "0.2"), (100, 104, "-0.3")):
        b.select_field("#sm-thr")
        b.type(thr)
        b.drag(char(a), char(z))
        sel = b.js("JSON.parse(document.getElementById('sm-result').dataset.sel || 'null')")
        assert sel == [a, z]
        units = b.js("JSON.parse(document.getElementById('sm-result').dataset.units)")
        matches = b.js("JSON.parse(document.getElementById('sm-result').dataset.matches)")
        want_units, want_runs = numpy_search(a, z, float(thr))
        assert units == want_units and matches == want_runs, (a, z, thr)
        marked = b.js("[...document.querySelectorAll('#text span.match, #text span.insel')].map(s => +s.dataset.t)")
        assert set(marked) == {t for r in want_runs for t in range(r[0], r[1] + 1)} | set(range(a, z + 1))
    # the keyboard selects too: Shift + arrows from the picked character
    b.click(char(30))
    for _ in range(3):
        b.key("ArrowRight", shift=True)
    assert b.js("JSON.parse(document.getElementById('sm-result').dataset.sel)") == [30, 33]
    b.key("Escape")
    assert b.js("document.querySelectorAll('#text span.insel').length") == 0


@needs_chromium
def test_saturation_and_state_map(run, browser):
    b, hs = browser, run["dec"]["h"]
    lo, hi = (np.abs(hs) < 0.1).mean(0), (np.abs(hs) > 0.9).mean(0)
    # click the dot that lies farthest from the others (dots of equal fractions overlap; the top one takes a click)
    pts = np.stack([lo, hi], 1)
    gap = np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(H) * 9
    u = int(np.argmax(gap.min(1)))
    b.click(f'#sat circle[data-id="{u}"]')
    assert b.js("+document.getElementById('unit-input').value") == u
    info = b.js("document.getElementById('sat-info').textContent")
    got = [float(x) for x in re.findall(r"([\d.]+)%", info)]
    np.testing.assert_allclose(got, [100 * lo[u], 100 * hi[u]], atol=0.051)
    # PCA against numpy: the variance ratios, and the nearest states of the picked character
    z = hs - hs.mean(0)
    ev = np.linalg.eigvalsh(z.T @ z)[::-1]
    ratio = np.array(b.js("JSON.parse(document.getElementById('pca').dataset.ratio)"))
    np.testing.assert_allclose(ratio, ev[:2] / ev.sum(), rtol=1e-4)
    # click the most isolated dot on screen (a repeated text repeats its states, and their dots coincide)
    xy = np.array(
        b.js(
            "[...document.querySelectorAll('#pca circle[data-id]')].map(c => [+c.getAttribute('cx'), "
            "+c.getAttribute('cy')])"
        )
    )
    gap = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    t = int(np.argmax(gap.min(1)))
    b.click(f'#pca circle[data-id="{t}"]')
    assert b.js("+document.getElementById('ci').dataset.t") == t
    assert b.js("+document.getElementById('pca-nn').dataset.t") == t
    d = np.linalg.norm(hs - hs[t], axis=1)
    d[t] = np.inf
    near = b.js("JSON.parse(document.getElementById('pca-nn').dataset.nearest)")
    assert len(set(near)) == 5 and t not in near
    np.testing.assert_allclose(d[near], np.sort(d)[:5], rtol=1e-9, atol=1e-12)  # (equal distances may swap)
    # linked back: the text's picked character is the one clicked in the map
    assert b.js("document.querySelector('#text .cur').dataset.t") == str(t)


@needs_chromium
def test_what_if_equals_torch(run, browser):
    b, ref, vocab = browser, run["ref"], run["vocab"]
    typed = "def size(self):\n    return 42"
    b.click("#wi-text")
    b.type(typed)
    b.click("#wi-run")
    got = np.array(b.js("JSON.parse(document.getElementById('wi-out').dataset.surprisal)"))
    toks = vocab.encode(typed)
    _, logp = states_and_logp(ref, toks)
    want = -logp[np.arange(len(typed) - 1), toks[1:].numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert b.js("document.querySelectorAll('#wi-out span').length") == len(typed)
    b.select_field("#wi-text")
    b.type("déf")  # é is not in the vocabulary: one clear message, no run
    b.click("#wi-run")
    assert "é" in b.js("document.getElementById('wi-msg').textContent")
    assert b.js("document.querySelectorAll('#wi-out span').length") == 0


@needs_chromium
def test_before_and_after_training(run, browser):
    b, vocab = browser, run["vocab"]
    init = reference(run["ckpt"]["initial_model"], len(vocab))
    hs0, logp0 = states_and_logp(init, run["toks"])
    b.click("#w-initial")
    assert b.js("document.body.dataset.view") == "initial"
    for t in (0, 90):
        b.hover(char(t))
        grid = np.array(b.js("[...document.querySelectorAll('#ci-grid [data-u]')].map(c => +c.dataset.v)"))
        np.testing.assert_allclose(grid, hs0[t], rtol=1e-7, atol=1e-9)  # computed in the page, float64
        bars = b.js("[...document.querySelectorAll('#ci-bars .bar')].map(e => [e.dataset.char, +e.dataset.p])")
        np.testing.assert_allclose([p for _, p in bars], -np.sort(-np.exp(logp0[t]))[:5], rtol=1e-7)
    b.click("#w-trained")
    b.hover(char(90))
    grid = np.array(b.js("[...document.querySelectorAll('#ci-grid [data-u]')].map(c => +c.dataset.v)"))
    np.testing.assert_allclose(grid, run["hs"][90], atol=Q_H + 2e-6)


@needs_chromium
def test_legible_at_1280_and_screenshot(run, browser, tmp_path):
    b = browser
    width = b.js("document.documentElement.scrollWidth")
    assert width <= 1280, width  # nothing forces a horizontal scroll (the heat map scrolls inside its box)
    b.js("window.scrollTo(0, 0)")
    b.click(char(40))
    b.click('#ci-grid [data-u="2"]')
    b.js("window.scrollTo(0, 0)")
    shot = tmp_path / "inspect.png"
    b.screenshot(shot, full_height=1000)
    import matplotlib.image

    img = matplotlib.image.imread(shot)[..., :3]
    assert img.shape[:2] == (1000, 1280)
    saturation = img.max(axis=2) - img.min(axis=2)
    assert (saturation > 0.25).mean() > 0.05  # coloured text, grid and bars
    assert (img.min(axis=2) < 0.3).mean() > 0.005  # and dark ink
    keep = os.environ.get("FUSED_RNN_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_page_without_a_browser_has_every_feature(run):
    """Every feature's element is on the page, and the script is one inline block with no URL in it."""
    page = run["page"]
    for id_ in (
        "text",
        "ci-grid",
        "ci-bars",
        "units-body",
        "cs-prev",
        "cs-next",
        "cs-vec",
        "cs-svg",
        "heat",
        "sm-thr",
        "sm-result",
        "sat",
        "pca",
        "pca-nn",
        "memcurve",
        "wi-text",
        "wi-run",
        "w-initial",
        "m-memory",
    ):
        assert f'id="{id_}"' in page, id_
    js = (Path(inspect_page.__file__).with_name("page") / "page.js").read_text(encoding="utf-8")
    assert "fetch(" not in js and "XMLHttpRequest" not in js and "import(" not in js


@needs_chromium
def test_hostile_text_renders_whole(tmp_path):
    """CR, NUL, CJK, astral characters and markup in the text: every character is one element, no error."""
    text = "a\r\nb\0 中文 🙂 <!-- </script> ${x} `y` &amp; \\u0041\t end\n" * 2
    vocab = Vocab.from_text(text)
    model = FusedCharRNN(len(vocab), 4, 8, backend="torch")
    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, model, torch.optim.Adam(model.parameters()), vocab, TrainConfig(hidden=8, embed=4), 1, [])
    inspect_checkpoint(ck, text, tmp_path / "o", device="cpu", max_distance=8)
    with Browser(tmp_path / "profile") as b:
        b.open((tmp_path / "o" / "index.html").as_uri())
        assert b.js("document.body.dataset.ready") == "1", b.console
        shown = b.js("[...document.querySelectorAll('#text span')].map(s => s.textContent)")
        assert len(shown) == len(text)  # code points, not UTF-16 units
        assert "".join(s.replace("⏎\n", "\n") for s in shown) == text
        b.hover(char(text.index("🙂")))
        assert b.js("document.getElementById('ci-char').textContent") == "🙂"
        assert not b.console, b.console


@needs_chromium
def test_a_long_text_loads_and_the_heat_map_stays_drawable(tmp_path):
    """70,000 characters: more elements than a spread call takes, a heat map wider than a canvas may be."""
    n, h, v = 70_000, 4, 6
    rng = np.random.default_rng()
    text = "".join(rng.choice(list("abcde\n"), n))
    vocab = sorted(set(text))
    tokens = np.array([vocab.index(c) for c in text])
    state = {
        "e.weight": rng.standard_normal((v, 3)),
        "l_in.weight": rng.standard_normal((h, 3)),
        "l_in.bias": rng.standard_normal(h),
        "l_hidden.weight": rng.standard_normal((h, h)),
        "l_hidden.bias": rng.standard_normal(h),
        "l_out.weight": rng.standard_normal((v, h)),
        "l_out.bias": rng.standard_normal(v),
    }
    meta = dict(checkpoint="long.pt", step=1, N=n, H=h, V=v, E=3, n_params=1, device="cpu", backend="torch")
    meta.update(spectral_radius=1.0, source=None, training_chars=0, mean_nats=1.0, bits_per_char=1.0)
    payload = inspect_page.build_payload(
        meta=meta, vocab=vocab, tokens=tokens, hs=np.tanh(rng.standard_normal((n, h))),
        logp=np.log(rng.dirichlet(np.ones(v), size=n)), features=char_classes(text), feature_doc={},
        unit_order=np.arange(h), grad_curve=None, trained=state, initial=None,
    )  # fmt: skip
    inspect_page.write(tmp_path / "index.html", payload)
    with Browser(tmp_path / "profile") as b:
        b.open((tmp_path / "index.html").as_uri())
        assert b.js("document.body.dataset.ready") == "1", b.console
        assert b.js("document.querySelectorAll('#text span').length") == n
        assert b.js("document.getElementById('heat').width") == 16384
        b.click(char(n - 1))
        assert b.js("+document.getElementById('ci').dataset.t") == n - 1
        assert not b.console, b.console


@needs_chromium
def test_a_drag_released_outside_the_text_selects_what_was_dragged(run, browser):
    b = browser
    x0, y0 = b.center(char(20))
    b.mouse("mouseMoved", x0, y0)
    b.mouse("mousePressed", x0, y0, 1)
    x1, y1 = b.js(
        f"(() => {{ const r = document.querySelector('{char(26)}').getBoundingClientRect();"
        "return [r.left + r.width / 2, r.top + r.height / 2]; })()"
    )
    b.mouse("mouseMoved", x1, y1, 1)
    b.mouse("mouseMoved", 1270, 5, 1)  # off the text, then released there
    b.mouse("mouseReleased", 1270, 5)
    assert b.js("JSON.parse(document.getElementById('sm-result').dataset.sel)") == [20, 26]
