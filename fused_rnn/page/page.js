// fused-rnn inspect: the page's script (inlined into index.html; no library, no network, no server).
//
// The model, exactly as FusedCharRNN computes it (h_{-1} = 0; h_t is the state after reading c_t):
//   e = E[c_t];  x = relu(W_in e + b_in);  s = h_{t-1} + x;  z = W_h s + b_h;  h_t = tanh(z)
//   y = W_out h_t + b_out;  p = softmax(y)   (p predicts c_{t+1})
// The trained model's states h_t, top-5 guesses and surprisal are the model's own numbers, embedded
// quantised by `fused-rnn inspect`; the cell step, memory, what-if and the step-0 view are computed here
// in float64 from the embedded float32 weights.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("fr-data").textContent);
  const $ = (id) => document.getElementById(id);
  const N = D.meta.N, H = D.meta.H, V = D.meta.V, E = D.meta.E, K5 = D.top_k;
  const MEM_K = 64;
  const STAGES = [
    ["e(c_t)", "e = E[c_t]: the character's embedding"],
    ["relu(W_in e + b_in)", "x = relu(W_in e + b_in): the input layer"],
    ["+ h_{t-1}", "s = h_{t-1} + x: the previous state added"],
    ["W_h(·) + b_h", "z = W_h s + b_h: the hidden layer"],
    ["tanh", "h_t = tanh(z): the new state"],
    ["W_out", "y = W_out h_t + b_out: a score per character"],
    ["softmax", "p = softmax(y): the guess for the next character"],
  ];

  // ------------------------------------------------------------------ decoding the embedded arrays
  function blob(b) {
    const bin = atob(b.b64);
    const u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    const T = { float32: Float32Array, int16: Int16Array, uint16: Uint16Array, uint8: Uint8Array }[b.dtype];
    const raw = new T(u8.buffer);
    if (b.scale === undefined) return raw;
    const out = new Float64Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw[i] * b.scale;
    return out;
  }
  function weights(w) {
    if (!w) return null;
    const m = {};
    for (const k of ["emb", "w_in", "b_in", "w_h", "b_h", "w_out", "b_out"]) m[k] = blob(w[k]);
    return m;
  }
  const tokens = blob(D.tokens);
  const chars = D.vocab;
  const textChars = Array.from(tokens, (i) => chars[i]);
  const models = { trained: weights(D.weights.trained), initial: weights(D.weights.initial) };
  const feats = blob(D.features); // (C, N)
  const order = Array.from(blob(D.unit_order));

  // ------------------------------------------------------------------ the model in float64
  function matvec(W, rows, cols, x, b) {
    const out = new Float64Array(rows);
    for (let i = 0; i < rows; i++) {
      let acc = b ? b[i] : 0;
      const o = i * cols;
      for (let j = 0; j < cols; j++) acc += W[o + j] * x[j];
      out[i] = acc;
    }
    return out;
  }
  function matTvec(W, rows, cols, g) { // W (rows, cols): W^T g -> (cols,)
    const out = new Float64Array(cols);
    for (let i = 0; i < rows; i++) {
      const gi = g[i], o = i * cols;
      if (gi === 0) continue;
      for (let j = 0; j < cols; j++) out[j] += W[o + j] * gi;
    }
    return out;
  }
  function logSoftmax(y) {
    let mx = -Infinity;
    for (const v of y) mx = Math.max(mx, v);
    let s = 0;
    for (const v of y) s += Math.exp(v - mx);
    const lse = mx + Math.log(s);
    return y.map((v) => v - lse);
  }
  // one cell step with every intermediate vector: the seven stages
  function cellStep(m, tok, hprev) {
    const e = Float64Array.from(m.emb.subarray(tok * E, (tok + 1) * E));
    const x = matvec(m.w_in, H, E, e, m.b_in).map((v) => (v > 0 ? v : 0));
    const s = x.map((v, i) => v + hprev[i]);
    const z = matvec(m.w_h, H, H, s, m.b_h);
    const h = z.map(Math.tanh);
    const y = matvec(m.w_out, V, H, h, m.b_out);
    const lp = logSoftmax(y);
    return [e, x, s, z, h, y, lp.map(Math.exp)];
  }
  function topk(lp) {
    const idx = Array.from(lp.keys()).sort((a, b) => lp[b] - lp[a] || a - b).slice(0, K5);
    return idx;
  }
  // a whole text from h_{-1} = 0: states (n, H), top-k guesses and surprisal
  function runModel(m, toks) {
    const n = toks.length;
    const hs = new Float64Array(n * H);
    const tIdx = new Int32Array(n * K5), tP = new Float64Array(n * K5);
    const sur = new Float64Array(n).fill(NaN);
    let h = new Float64Array(H);
    for (let t = 0; t < n; t++) {
      const st = cellStep(m, toks[t], h);
      h = st[4];
      hs.set(h, t * H);
      const lp = logSoftmax(st[5]);
      if (t + 1 < n) sur[t + 1] = -lp[toks[t + 1]];
      topk(lp).forEach((j, r) => { tIdx[t * K5 + r] = j; tP[t * K5 + r] = Math.exp(lp[j]); });
    }
    return { hs, tIdx, tP, sur };
  }

  // ------------------------------------------------------------------ views: the trained model, step 0
  const views = {};
  function trainedView() {
    const sur = new Float64Array(N).fill(NaN);
    const s = blob(D.surprisal);
    for (let t = 1; t < N; t++) sur[t] = s[t - 1];
    return { name: "trained", m: models.trained, hs: blob(D.h), tIdx: Int32Array.from(blob(D.top_idx)),
      tP: blob(D.top_p), sur };
  }
  function view(name) {
    if (!views[name]) views[name] = name === "trained" ? trainedView() : { name, m: models[name], ...runModel(models[name], tokens) };
    return views[name];
  }
  const row = (v, t) => v.hs.subarray(t * H, (t + 1) * H);
  const norm = (a) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));

  // d log p(c_{t+1}) / d h_{t-k} for k = 0..min(K, t), backwards through the cell: W_h^T ((1 - h^2) * g).
  // The states of the window are recomputed in float64 from the stored state WARM steps before it: a saturated
  // unit's 1 - h^2 is too small for the stored 1/32767 steps, while a recomputed one is exact to float64.
  const WARM = 8;
  function memory(v, t) {
    if (t + 1 >= N) return [];
    const m = v.m, s0 = Math.max(0, t - MEM_K - WARM);
    const win = [];
    let hw = s0 > 0 ? Float64Array.from(row(v, s0 - 1)) : new Float64Array(H);
    for (let s = s0; s <= t; s++) { hw = cellStep(m, tokens[s], hw)[4]; win.push(hw); }
    const state = (s) => win[s - s0];
    const h = state(t);
    const p = logSoftmax(matvec(m.w_out, V, H, h, m.b_out)).map(Math.exp);
    const dy = p.map((x) => -x);
    dy[tokens[t + 1]] += 1;
    let g = matTvec(m.w_out, V, H, dy);
    const out = [norm(g)];
    for (let k = 1; k <= Math.min(MEM_K, t); k++) {
      const hn = state(t - k + 1);
      g = matTvec(m.w_h, H, H, g.map((x, i) => x * (1 - hn[i] * hn[i])));
      out.push(norm(g));
    }
    return out;
  }

  // per-unit statistics: mean, std, saturation, best character class by |Pearson r|
  function unitStats(v) {
    if (v.stats) return v.stats;
    const C = D.feature_names.length;
    const fz = [], fn = [];
    for (let c = 0; c < C; c++) {
      const f = feats.subarray(c * N, (c + 1) * N);
      const mu = f.reduce((a, b) => a + b, 0) / N;
      const z = f.map((x) => x - mu);
      fz.push(z); fn.push(norm(z));
    }
    const stats = [];
    for (let u = 0; u < H; u++) {
      let s = 0, lo = 0, hi = 0, mx = 0;
      for (let t = 0; t < N; t++) {
        const x = v.hs[t * H + u], a = Math.abs(x);
        s += x; if (a < 0.1) lo++; if (a > 0.9) hi++; mx = Math.max(mx, a);
      }
      const mu = s / N;
      let ss = 0;
      for (let t = 0; t < N; t++) ss += (v.hs[t * H + u] - mu) ** 2;
      const zn = Math.sqrt(ss);
      let best = -1, r = 0;
      for (let c = 0; c < C; c++) {
        if (fn[c] === 0 || zn === 0) continue;
        let d = 0;
        for (let t = 0; t < N; t++) d += fz[c][t] * (v.hs[t * H + u] - mu);
        const rc = d / (fn[c] * zn);
        if (best < 0 || Math.abs(rc) > Math.abs(r)) { best = c; r = rc; }
      }
      stats.push({ u, mean: mu, std: Math.sqrt(ss / N), lo: lo / N, hi: hi / N, max: mx,
        cls: best < 0 ? "" : D.feature_names[best], r: best < 0 ? 0 : r });
    }
    v.stats = stats;
    return stats;
  }

  // the first two principal components of the states (power iteration with deflation)
  function pca(v) {
    if (v.pca) return v.pca;
    const mu = new Float64Array(H);
    for (let t = 0; t < N; t++) for (let u = 0; u < H; u++) mu[u] += v.hs[t * H + u] / N;
    const C = new Float64Array(H * H);
    const x = new Float64Array(H);
    for (let t = 0; t < N; t++) {
      for (let u = 0; u < H; u++) x[u] = v.hs[t * H + u] - mu[u];
      for (let i = 0; i < H; i++) { const xi = x[i]; if (xi === 0) continue; const o = i * H; for (let j = 0; j < H; j++) C[o + j] += xi * x[j]; }
    }
    let trace = 0;
    for (let i = 0; i < H; i++) trace += C[i * H + i];
    const comps = [], vals = [];
    for (let c = 0; c < 2; c++) {
      let w = Float64Array.from({ length: H }, (_, i) => 1 + ((i * 7919) % 13) / 13);
      let lam = 0;
      for (let it = 0; it < 500; it++) {
        let y = matvec(C, H, H, w);
        for (const q of comps) { const d = q.reduce((s, qi, i) => s + qi * y[i], 0); y = y.map((yi, i) => yi - d * q[i]); }
        const ny = norm(y);
        if (ny === 0) { w = new Float64Array(H); lam = 0; break; } // no variance left (H = 1): a zero component
        y = y.map((yi) => yi / ny);
        const diff = y.reduce((s, yi, i) => s + (yi - w[i]) ** 2, 0);
        w = y; lam = ny;
        if (diff < 1e-24) break;
      }
      let big = 0;
      for (let i = 0; i < H; i++) if (Math.abs(w[i]) > Math.abs(w[big])) big = i;
      if (w[big] < 0) w = w.map((a) => -a); // sign: the largest loading is positive
      comps.push(w); vals.push(lam);
    }
    const xy = new Float64Array(N * 2);
    for (let t = 0; t < N; t++) {
      for (let c = 0; c < 2; c++) {
        let s = 0;
        for (let u = 0; u < H; u++) s += (v.hs[t * H + u] - mu[u]) * comps[c][u];
        xy[t * 2 + c] = s;
      }
    }
    v.pca = { xy, ratio: vals.map((l) => (trace > 0 ? l / trace : 0)) };
    return v.pca;
  }
  function nearest(v, t, k) {
    const a = row(v, t), d = [];
    for (let s = 0; s < N; s++) {
      if (s === t) continue;
      let q = 0;
      for (let u = 0; u < H; u++) q += (v.hs[s * H + u] - a[u]) ** 2;
      d.push([Math.sqrt(q), s]);
    }
    return d.sort((p, q) => p[0] - q[0] || p[1] - q[1]).slice(0, k);
  }

  // select and match: units on (h >= thr) at every position of [a, b]; maximal runs where all of them are on
  function selectMatch(v, a, b, thr) {
    const units = [];
    for (let u = 0; u < H; u++) {
      let on = true;
      for (let t = a; t <= b && on; t++) on = v.hs[t * H + u] >= thr;
      if (on) units.push(u);
    }
    const runs = [];
    if (units.length) {
      let start = -1;
      for (let t = 0; t <= N; t++) {
        const on = t < N && units.every((u) => v.hs[t * H + u] >= thr);
        if (on && start < 0) start = t;
        if (!on && start >= 0) { runs.push([start, t - 1]); start = -1; }
      }
      runs.sort((p, q) => (q[1] - q[0]) - (p[1] - p[0]) || p[0] - q[0]);
    }
    return { units, runs };
  }

  // ------------------------------------------------------------------ colours (readable with colour blindness)
  const VIRIDIS = [[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]];
  const DIVERGE = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [253, 184, 99], [179, 88, 6]]; // blue - white - orange
  function ramp(stops, f) {
    f = Math.min(1, Math.max(0, Number.isFinite(f) ? f : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(f)), r = f - i;
    return stops[i].map((c, j) => Math.round(c + (stops[i + 1][j] - c) * r));
  }
  const rgb = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;
  const inkFor = (c) => (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140 ? "#fff" : "#000");
  const seqColor = (f) => ramp(VIRIDIS, f);
  const divColor = (x) => ramp(DIVERGE, (x + 1) / 2);
  function gradientCss(stops) { return `linear-gradient(to right,${stops.map(rgb).join(",")})`; }

  // ------------------------------------------------------------------ formatting
  const fmt = (x, d = 4) => (Number.isFinite(x) ? (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(d) : "–");
  const SHOW = { "\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍" };
  function showChar(c) {
    if (SHOW[c]) return SHOW[c];
    const o = c.codePointAt(0);
    if (o < 32 || (o >= 127 && o < 160)) return "\\x" + o.toString(16).padStart(2, "0");
    return c;
  }
  function el(tag, attrs, ...kids) {
    const n = document.createElementNS(tag.startsWith("svg:") ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
      tag.replace("svg:", ""));
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") n.textContent = v; else if (k.startsWith("on")) n.addEventListener(k.slice(2), v); else n.setAttribute(k, v);
    }
    for (const c of kids) if (c != null) n.append(c);
    return n;
  }
  function snippet(a, b, ctx = 12) {
    const lo = Math.max(0, a - ctx), hi = Math.min(N - 1, b + ctx);
    const s = (p, q) => textChars.slice(p, q).map((c) => (c === "\n" ? "⏎" : c)).join("");
    return [s(lo, a), s(a, b + 1), s(b + 1, hi + 1)];
  }

  // ------------------------------------------------------------------ state
  const S = { view: "trained", mode: "surprisal", unit: order[0], t: 0, hover: null, stage: 0, sel: null, drag: null,
    thr: 0.5, sort: ["u", 1] };
  const cur = () => view(S.view);
  const shownT = () => (S.hover ?? S.t);

  // ------------------------------------------------------------------ the text
  const textBox = $("text");
  const spans = textChars.map((c, t) => {
    const sp = el("span", { "data-t": t, text: c === "\n" ? "⏎\n" : c });
    if (c === "\n") sp.className = "nl";
    return sp;
  });
  const frag = document.createDocumentFragment(); // no spread: a long text is more arguments than a call takes
  for (const sp of spans) frag.append(sp);
  textBox.append(frag);
  const capNats = Math.log(V);
  function paintText() {
    const v = cur(), t0 = shownT();
    let mem = null;
    if (S.mode === "memory") {
      mem = memory(v, t0);
      let lo = Infinity, hi = -Infinity;
      for (const g of mem) if (g > 0) { lo = Math.min(lo, Math.log(g)); hi = Math.max(hi, Math.log(g)); }
      mem = { g: mem, lo, span: hi > lo ? hi - lo : 1 };
      $("mem-values").dataset.t = t0;
      $("mem-values").dataset.values = JSON.stringify(mem.g);
      $("text-legend").innerHTML = "";
      $("text-legend").append(legend(VIRIDIS, mem.g.length ? `‖∂ log p(c_{t+1}) / ∂h_{t−k}‖ for t = ${t0}: ${Math.exp(mem.lo).toExponential(1)}` : "no next character", mem.g.length ? `${Math.exp(mem.lo + mem.span).toExponential(1)} (log scale); grey: further back than ${MEM_K}` : ""));
    } else if (S.mode === "unit") {
      $("text-legend").innerHTML = "";
      $("text-legend").append(legend(DIVERGE, `h_t[${S.unit}]: −1`, "+1"));
    } else {
      $("text-legend").innerHTML = "";
      $("text-legend").append(legend(VIRIDIS.slice().reverse(), "surprisal −log p(c_t): 0", `${capNats.toFixed(2)} nats (uniform guess) or more`));
    }
    for (let t = 0; t < N; t++) {
      let c;
      if (S.mode === "unit") c = divColor(v.hs[t * H + S.unit]);
      else if (S.mode === "memory") {
        const k = t0 - t;
        c = k >= 0 && k < mem.g.length && mem.g[k] > 0 ? seqColor((Math.log(mem.g[k]) - mem.lo) / mem.span) : null;
      } else c = t === 0 ? null : seqColor(1 - v.sur[t] / capNats);
      const sp = spans[t];
      sp.style.background = c ? rgb(c) : "#eee";
      sp.style.color = c ? inkFor(c) : "#777";
    }
  }
  function legend(stops, lo, hi) {
    return el("span", { class: "legend" }, lo, el("i", { style: `background:${gradientCss(stops)}` }), hi);
  }
  function markText() {
    for (const sp of textBox.querySelectorAll(".cur,.hov")) sp.classList.remove("cur", "hov");
    spans[S.t].classList.add("cur");
    if (S.hover != null) spans[S.hover].classList.add("hov");
  }
  function markSelection(runs) {
    for (const sp of textBox.querySelectorAll(".insel,.match")) sp.classList.remove("insel", "match");
    if (S.sel) for (let t = S.sel[0]; t <= S.sel[1]; t++) spans[t].classList.add("insel");
    for (const [a, b] of runs || []) for (let t = a; t <= b; t++) if (!spans[t].classList.contains("insel")) spans[t].classList.add("match");
  }
  const tOf = (ev) => { const sp = ev.target.closest("span[data-t]"); return sp ? +sp.dataset.t : null; };
  textBox.addEventListener("mouseover", (ev) => {
    const t = tOf(ev);
    if (t == null) return;
    if (S.drag != null && t !== S.drag) { S.sel = [Math.min(S.drag, t), Math.max(S.drag, t)]; markSelection(); }
    S.hover = t; refreshHover();
  });
  textBox.addEventListener("mouseleave", () => { S.hover = null; refreshHover(); });
  textBox.addEventListener("mousedown", (ev) => {
    const t = tOf(ev);
    if (t == null) return;
    S.drag = t;
    ev.preventDefault(); // no native text selection while dragging; the keys then go to the text
    textBox.focus({ preventScroll: true });
  });
  document.addEventListener("mouseup", (ev) => {
    if (S.drag == null) return;
    const t = tOf(ev), a = S.drag;
    S.drag = null;
    if (t == null) { // released outside the text: the span dragged so far is the selection
      if (S.sel && (S.sel[0] === a || S.sel[1] === a)) runMatch();
      return;
    }
    if (t === a) pickChar(t);
    else { S.sel = [Math.min(a, t), Math.max(a, t)]; runMatch(); pickChar(t); }
  });

  // ------------------------------------------------------------------ the character inspector
  const grid = $("ci-grid");
  const cols = Math.ceil(Math.sqrt(H));
  grid.style.gridTemplateColumns = `repeat(${cols}, ${Math.max(6, Math.min(28, Math.floor(370 / cols) - 1))}px)`;
  const cells = Array.from({ length: H }, (_, u) => el("div", { "data-u": u, role: "button", tabindex: 0, "aria-label": `unit ${u}` }));
  const gfrag = document.createDocumentFragment();
  for (const c of cells) gfrag.append(c);
  grid.append(gfrag);
  grid.addEventListener("click", (ev) => { const c = ev.target.closest("[data-u]"); if (c) pickUnit(+c.dataset.u); });
  grid.addEventListener("keydown", (ev) => {
    const c = ev.target.closest("[data-u]");
    if (c && (ev.key === "Enter" || ev.key === " ")) { pickUnit(+c.dataset.u); ev.preventDefault(); }
  });
  function paintInspector() {
    const v = cur(), t = shownT(), h = row(v, t);
    $("ci").dataset.t = t;
    $("ci-char").textContent = `${showChar(textChars[t])}`;
    $("ci-pos").textContent = `${t} of ${N}`;
    $("ci-sur").textContent = t ? `${v.sur[t].toFixed(4)} nats (p = ${Math.exp(-v.sur[t]).toFixed(4)})` : "– (nothing predicts the first character)";
    const nh = norm(h);
    $("ci-norm").textContent = nh.toFixed(4);
    $("ci-norm").dataset.v = nh;
    $("ci-unit").textContent = `${S.unit}: ${fmt(h[S.unit])}`;
    for (let u = 0; u < H; u++) {
      const c = cells[u];
      c.style.background = rgb(divColor(h[u]));
      c.dataset.v = h[u];
      c.title = `unit ${u}: h = ${fmt(h[u])}`;
      c.classList.toggle("on", u === S.unit);
    }
    const bars = $("ci-bars");
    bars.innerHTML = "";
    const next = t + 1 < N ? textChars[t + 1] : null;
    for (let r = 0; r < K5; r++) {
      const j = v.tIdx[t * K5 + r], p = v.tP[t * K5 + r];
      bars.append(el("div", { class: "bar", "data-char": chars[j], "data-p": p, title: `${JSON.stringify(chars[j])}: p = ${p.toFixed(5)}` },
        el("code", { text: showChar(chars[j]) + (chars[j] === next ? " ✓" : "") }),
        el("span", {}, el("b", { style: `width:${(100 * p).toFixed(2)}%` })), el("span", { text: (100 * p).toFixed(2) + "%" })));
    }
    $("ci-next").textContent = next == null ? "(the text ends here)" : `came next: ${showChar(next)}`;
  }

  // ------------------------------------------------------------------ the cell, step by step
  function paintCell() {
    const v = cur(), t = S.t;
    const hprev = t > 0 ? row(v, t - 1) : new Float64Array(H);
    const st = cellStep(v.m, tokens[t], hprev);
    const vec = st[S.stage];
    $("cs-stage").textContent = `${S.stage + 1} / 7: ${STAGES[S.stage][0]}`;
    $("cs-stage").dataset.stage = S.stage;
    $("cs-formula").textContent = `character ${t} ${JSON.stringify(textChars[t])}: ${STAGES[S.stage][1]}` +
      (S.stage === 2 && t === 0 ? " (h_{-1} = 0)" : "");
    const box = $("cs-vec");
    box.innerHTML = "";
    box.dataset.values = JSON.stringify(Array.from(vec));
    box.dataset.t = t;
    const isP = S.stage === 6, isY = S.stage === 5;
    let scale = 0;
    for (const x of vec) scale = Math.max(scale, Math.abs(x));
    vec.forEach((x, i) => {
      const label = S.stage >= 5 ? `${JSON.stringify(chars[i])}` : S.stage === 0 ? `e[${i}]` : `unit ${i}`;
      const c = isP ? seqColor(x / (scale || 1)) : divColor(S.stage === 4 ? x : x / (scale || 1));
      box.append(el("div", { style: `background:${rgb(c)}`, title: `${label}: ${isP ? x.toPrecision(5) : fmt(x)}` }));
    });
    let desc;
    if (isP || isY) {
      const idx = Array.from(vec.keys()).sort((a, b) => vec[b] - vec[a]).slice(0, 8);
      desc = idx.map((i) => `${showChar(chars[i])} ${isP ? (100 * vec[i]).toFixed(2) + "%" : fmt(vec[i], 3)}`).join("   ");
      desc = `highest: ${desc}`;
    } else {
      desc = `‖·‖ = ${norm(vec).toFixed(4)}, min ${fmt(vec.reduce((a, b) => Math.min(a, b)), 3)}, max ${fmt(vec.reduce((a, b) => Math.max(a, b)), 3)}; first values: ` +
        Array.from(vec.slice(0, 10), (x) => fmt(x, 4)).join(" ");
    }
    $("cs-nums").textContent = desc;
    drawUnrolled(v, t);
  }
  function drawUnrolled(v, t) {
    const svg = $("cs-svg");
    svg.innerHTML = "";
    const lo = Math.max(0, t - 3), hi = Math.min(N - 1, t + 3), W = 118;
    let maxn = 0;
    for (let s = lo; s <= hi; s++) maxn = Math.max(maxn, norm(row(v, s)));
    const node = (x, y, w, h, label, fill, on, s) => {
      const g = el("svg:g", { "data-t": s, style: "cursor:pointer" });
      g.append(el("svg:rect", { x, y, width: w, height: h, rx: 5, fill, stroke: on ? "#0b57d0" : "#777", "stroke-width": on ? 3 : 1 }));
      const ink = fill.startsWith("rgb") ? inkFor(fill.match(/\d+/g).map(Number)) : "#000";
      g.append(el("svg:text", { x: x + w / 2, y: y + h / 2 + 4, "text-anchor": "middle", "font-size": 11, fill: ink, text: label }));
      return g;
    };
    const arrow = (x1, y1, x2, y2) => el("svg:line", { x1, y1, x2, y2, stroke: "#555", "stroke-width": 1.3, "marker-end": "url(#arr)" });
    svg.append(el("svg:defs", {}, el("svg:marker", { id: "arr", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#555" }))));
    for (let s = lo; s <= hi; s++) {
      const x = 20 + (s - lo) * W, here = s === t, stg = here ? S.stage : -1;
      const hn = norm(row(v, s));
      svg.append(node(x, 196, 80, 24, `${showChar(textChars[s])}  (${s})`, "#fff", here && stg === 0, s));
      svg.append(arrow(x + 40, 196, x + 40, 170));
      svg.append(node(x, 146, 80, 24, "relu(W_in e+b)", "#eef3fb", here && stg === 1, s));
      svg.append(arrow(x + 40, 146, x + 40, 124));
      svg.append(node(x + 25, 100, 30, 24, "+", "#fff", here && stg === 2, s));
      svg.append(arrow(x + 40, 100, x + 40, 80));
      svg.append(node(x, 56, 80, 24, here && stg === 4 ? "tanh" : "W_h·+b, tanh", "#eef3fb", here && (stg === 3 || stg === 4), s));
      svg.append(arrow(x + 40, 56, x + 40, 40));
      svg.append(node(x, 14, 80, 26, `h ‖${hn.toFixed(2)}‖`, rgb(seqColor(maxn ? hn / maxn : 0)), here && stg >= 4, s));
      if (s < hi) svg.append(el("svg:path", { d: `M${x + 80},27 C${x + 100},27 ${x + 95},112 ${x + W + 25},112`, fill: "none", stroke: "#555", "stroke-width": 1.3, "marker-end": "url(#arr)" }));
      if (here && stg >= 5) svg.append(node(x + 84, 14, 30, 26, stg === 5 ? "W_out" : "p", "#fff3d6", true, s));
    }
  }
  svgClick($("cs-svg"), (t) => pickChar(t));
  function stepStage(d) {
    let st = S.stage + d, t = S.t;
    if (st > 6 && t + 1 < N) { st = 0; t++; } else if (st < 0 && t > 0) { st = 6; t--; }
    S.stage = Math.min(6, Math.max(0, st));
    if (t !== S.t) pickChar(t, true); else paintCell();
  }
  $("cs-prev").addEventListener("click", () => stepStage(-1));
  $("cs-next").addEventListener("click", () => stepStage(1));

  // ------------------------------------------------------------------ the heat map over the whole text
  const heat = $("heat");
  const rowPx = Math.max(1, Math.min(4, Math.floor(384 / H)));
  // short texts get wider columns; long ones scroll in their box, at most HEAT_W columns (a canvas wider than
  // 65,535 px draws nothing): column x then shows character floor(x * N / W)
  const HEAT_W = 16384, W = Math.min(N, HEAT_W), colPx = Math.max(1, Math.floor(1200 / W));
  const colOf = (t) => Math.floor((t * W) / N), charOf = (x) => Math.min(N - 1, Math.floor((x * N) / W));
  heat.width = W; heat.height = H * rowPx;
  heat.style.width = `${W * colPx}px`;
  heat.style.height = `${H * rowPx}px`;
  const rankOf = new Int32Array(H);
  order.forEach((u, r) => { rankOf[u] = r; });
  function paintHeat() {
    const v = cur(), ctx = heat.getContext("2d"), img = ctx.createImageData(W, H * rowPx);
    for (let r = 0; r < H; r++) {
      const u = order[r];
      for (let x = 0; x < W; x++) {
        const c = divColor(v.hs[charOf(x) * H + u]);
        for (let k = 0; k < rowPx; k++) {
          const o = ((r * rowPx + k) * W + x) * 4;
          img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    ctx.fillStyle = "rgba(11,87,208,.9)";
    ctx.fillRect(0, rankOf[S.unit] * rowPx, W, Math.max(1, rowPx));
    ctx.fillRect(colOf(S.t), 0, 1, H * rowPx);
  }
  heat.addEventListener("click", (ev) => {
    const b = heat.getBoundingClientRect();
    const t = charOf(Math.min(W - 1, Math.max(0, Math.floor(((ev.clientX - b.left) / b.width) * W))));
    const r = Math.min(H - 1, Math.max(0, Math.floor(((ev.clientY - b.top) / b.height) * H)));
    pickUnit(order[r]); pickChar(t);
  });

  // ------------------------------------------------------------------ every unit, sortable
  const COLS = [["u", "unit", 0], ["cls", "best class", 0], ["r", "r", 3], ["mean", "mean", 3], ["std", "std", 3],
    ["lo", "|h| < 0.1", 3], ["hi", "|h| > 0.9", 3], ["max", "max |h|", 3]];
  const thead = $("units-head"), tbody = $("units-body");
  for (const [k, label] of COLS) {
    thead.append(el("th", { class: k === "cls" ? "l" : "", "aria-sort": "none" },
      el("button", { "data-key": k, text: label, onclick: () => { S.sort = [k, S.sort[0] === k ? -S.sort[1] : k === "u" || k === "cls" ? 1 : -1]; paintTable(); } })));
  }
  function paintTable() {
    const [k, dir] = S.sort;
    const rows = unitStats(cur()).slice();
    const key = (a) => (k === "r" ? Math.abs(a.r) : a[k]);
    rows.sort((a, b) => (key(a) < key(b) ? -dir : key(a) > key(b) ? dir : a.u - b.u));
    tbody.innerHTML = "";
    for (const s of rows) {
      const tr = el("tr", { "data-u": s.u, tabindex: 0, class: s.u === S.unit ? "on" : "" });
      for (const [c, , d] of COLS) tr.append(el("td", { class: c === "cls" ? "l" : "", text: c === "u" || c === "cls" ? String(s[c]) : (c === "r" || c === "mean" ? fmt(s[c], d) : s[c].toFixed(d)) }));
      tbody.append(tr);
    }
    for (const th of thead.children) th.setAttribute("aria-sort", th.firstChild.dataset.key === k ? (dir > 0 ? "ascending" : "descending") : "none");
  }
  tbody.addEventListener("click", (ev) => { const tr = ev.target.closest("tr[data-u]"); if (tr) pickUnit(+tr.dataset.u); });
  tbody.addEventListener("keydown", (ev) => { const tr = ev.target.closest("tr[data-u]"); if (tr && (ev.key === "Enter" || ev.key === " ")) { pickUnit(+tr.dataset.u); ev.preventDefault(); } });
  function markTable() {
    for (const tr of tbody.children) tr.classList.toggle("on", +tr.dataset.u === S.unit);
  }

  // ------------------------------------------------------------------ select and match
  function runMatch() {
    const res = $("sm-result");
    res.innerHTML = "";
    if (!S.sel) { $("sm-info").textContent = "Drag over a span of the text (or Shift + ← / →) to select it."; markSelection(); res.dataset.units = "[]"; res.dataset.matches = "[]"; return; }
    const [a, b] = S.sel, { units, runs } = selectMatch(cur(), a, b, S.thr);
    res.dataset.units = JSON.stringify(units);
    res.dataset.matches = JSON.stringify(runs);
    res.dataset.sel = JSON.stringify(S.sel);
    const [pre, mid, post] = snippet(a, b, 0);
    $("sm-info").textContent = `selected ${a}–${b} “${pre}${mid}${post}”: ${units.length} unit${units.length === 1 ? "" : "s"} with h ≥ ${S.thr} throughout` +
      (units.length ? `; ${runs.length} span${runs.length === 1 ? "" : "s"} where all of them are on (the text marks them)` : "; lower the threshold");
    if (units.length) {
      const ul = el("p", {}, "units: ");
      units.slice(0, 64).forEach((u) => ul.append(el("button", { "data-u": u, text: String(u), onclick: () => pickUnit(u) }), " "));
      if (units.length > 64) ul.append(`… and ${units.length - 64} more`);
      res.append(ul);
      const ol = el("ol", { class: "list" });
      for (const [s, e] of runs.slice(0, 40)) {
        const [p, m, q] = snippet(s, e);
        const mine = s <= a && e >= b;
        ol.append(el("li", {}, el("button", { "data-t": s, onclick: () => { pickChar(s); spans[s].scrollIntoView({ block: "nearest" }); } },
          `${s}–${e} (${e - s + 1}) `, p, el("b", { text: m }), q), mine ? " ← your selection" : ""));
      }
      res.append(ol);
      if (runs.length > 40) res.append(el("p", { class: "muted", text: `and ${runs.length - 40} shorter spans` }));
    }
    markSelection(runs);
  }
  $("sm-thr").addEventListener("input", () => { const x = parseFloat($("sm-thr").value); if (Number.isFinite(x)) { S.thr = x; runMatch(); } });

  // ------------------------------------------------------------------ saturation and the state map
  function scatter(svg, pts, opts) { // pts: [x, y, id, color]
    svg.innerHTML = "";
    const Wd = 520, Ht = 360, m = 38;
    svg.setAttribute("viewBox", `0 0 ${Wd} ${Ht}`);
    let xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity; // loops, not spreads: any length
    for (const p of pts) { xlo = Math.min(xlo, p[0]); xhi = Math.max(xhi, p[0]); ylo = Math.min(ylo, p[1]); yhi = Math.max(yhi, p[1]); }
    const [x0, x1] = opts.xr || [xlo, xhi], [y0, y1] = opts.yr || [ylo, yhi];
    const X = (x) => m + ((x - x0) / (x1 - x0 || 1)) * (Wd - m - 10), Y = (y) => Ht - m - ((y - y0) / (y1 - y0 || 1)) * (Ht - m - 10);
    svg.append(el("svg:rect", { x: m, y: 10, width: Wd - m - 10, height: Ht - m - 10, fill: "#fbfbfb", stroke: "#ccc" }));
    svg.append(el("svg:text", { x: Wd / 2, y: Ht - 6, "text-anchor": "middle", "font-size": 12, text: opts.xl }));
    svg.append(el("svg:text", { x: 12, y: Ht / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 12 ${Ht / 2})`, text: opts.yl }));
    for (const [v, anchor] of [[x0, "start"], [x1, "end"]]) svg.append(el("svg:text", { x: X(v), y: Ht - m + 14, "text-anchor": anchor, "font-size": 10, text: v.toFixed(2) }));
    for (const v of [y0, y1]) svg.append(el("svg:text", { x: m - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 10, text: v.toFixed(2) }));
    const g = el("svg:g", {});
    for (const [x, y, id, c] of pts) {
      const dot = el("svg:circle", { cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: opts.r, fill: c, "data-id": id, "fill-opacity": 0.85 });
      if (opts.label) dot.append(el("svg:title", { text: opts.label(id, x, y) }));
      g.append(dot);
    }
    svg.append(g);
    return { X, Y };
  }
  function svgClick(svg, f) {
    svg.addEventListener("click", (ev) => { const n = ev.target.closest("[data-id],[data-t]"); if (n) f(+(n.dataset.id ?? n.dataset.t)); });
  }
  let satAxes = null, pcaAxes = null;
  function paintSaturation() {
    const st = unitStats(cur());
    satAxes = scatter($("sat"), st.map((s) => [s.lo, s.hi, s.u, "#3b6fb6"]), { xr: [0, 1], yr: [0, 1], r: 4, label: (u, x, y) => `unit ${u}: |h| < 0.1 ${(100 * x).toFixed(1)}%, |h| > 0.9 ${(100 * y).toFixed(1)}%`, xl: "fraction of time |h| < 0.1", yl: "fraction of time |h| > 0.9" });
    markSaturation();
  }
  function markSaturation() {
    const svg = $("sat");
    svg.querySelector(".ring")?.remove();
    const s = unitStats(cur())[S.unit];
    svg.append(el("svg:circle", { class: "ring", cx: satAxes.X(s.lo), cy: satAxes.Y(s.hi), r: 8, fill: "none", stroke: "#b35806", "stroke-width": 2.5 }));
    $("sat-info").textContent = `unit ${S.unit}: |h| < 0.1 ${(100 * s.lo).toFixed(1)}% of the time, |h| > 0.9 ${(100 * s.hi).toFixed(1)}%`;
  }
  svgClick($("sat"), (u) => pickUnit(u));
  function paintPca() {
    const v = cur(), P = pca(v);
    const pts = [];
    for (let t = 0; t < N; t++) pts.push([P.xy[2 * t], P.xy[2 * t + 1], t, rgb(divColor(v.hs[t * H + S.unit]))]);
    pcaAxes = scatter($("pca"), pts, { r: 2.6, xl: `PC1 (${(100 * P.ratio[0]).toFixed(1)}% of the variance)`, yl: `PC2 (${(100 * P.ratio[1]).toFixed(1)}%)` });
    $("pca").dataset.ratio = JSON.stringify(P.ratio);
    markPca();
  }
  function markPca() {
    const v = cur(), P = pca(v), svg = $("pca");
    for (const n of svg.querySelectorAll(".ring")) n.remove();
    const nn = nearest(v, S.t, 5);
    const list = $("pca-nn");
    list.innerHTML = "";
    list.dataset.t = S.t;
    list.dataset.nearest = JSON.stringify(nn.map((p) => p[1]));
    for (const [d, s] of nn) {
      svg.append(el("svg:circle", { class: "ring", cx: pcaAxes.X(P.xy[2 * s]), cy: pcaAxes.Y(P.xy[2 * s + 1]), r: 5, fill: "none", stroke: "#00897b", "stroke-width": 2 }));
      const [p, m, q] = snippet(s, s, 10);
      list.append(el("li", {}, el("button", { "data-t": s, onclick: () => pickChar(s) }, `${s} (distance ${d.toFixed(3)}) `, p, el("b", { text: m }), q)));
    }
    svg.append(el("svg:circle", { class: "ring", cx: pcaAxes.X(P.xy[2 * S.t]), cy: pcaAxes.Y(P.xy[2 * S.t + 1]), r: 7, fill: "none", stroke: "#0b57d0", "stroke-width": 3 }));
  }
  svgClick($("pca"), (t) => pickChar(t));

  // ------------------------------------------------------------------ the memory curve (from inspect, through the fused op)
  function paintMemCurve() {
    const svg = $("memcurve"), g = D.grad_curve;
    if (!g || !g.mean.length) { svg.replaceWith(el("p", { class: "muted", text: "The text is too short for a memory curve." })); return; }
    const pts = g.mean.map((y, k) => [k, Math.log10(Math.max(y, 1e-30)), k, "#3b6fb6"]);
    scatter(svg, pts, { r: 3, xl: "distance k (characters back)", yl: "log10 mean ‖∂ log p / ∂h_{t−k}‖" });
  }

  // ------------------------------------------------------------------ what-if
  function whatIf() {
    const txt = Array.from($("wi-text").value), out = $("wi-out"), msg = $("wi-msg");
    out.innerHTML = ""; msg.textContent = ""; msg.className = "";
    const index = new Map(chars.map((c, i) => [c, i]));
    const unknown = [...new Set(txt.filter((c) => !index.has(c)))];
    if (!txt.length) { msg.textContent = "Type some text first."; return; }
    if (unknown.length) { msg.className = "err"; msg.textContent = `not in the model's vocabulary: ${unknown.map((c) => JSON.stringify(c)).join(" ")}`; out.dataset.surprisal = "null"; return; }
    const toks = txt.map((c) => index.get(c));
    const m = cur().m, r = runModel(m, toks);
    out.dataset.surprisal = JSON.stringify(Array.from(r.sur.slice(1)));
    out.dataset.hnorm = norm(r.hs.subarray((toks.length - 1) * H));
    out.dataset.top = JSON.stringify(Array.from(r.tIdx.slice((toks.length - 1) * K5), (j) => chars[j]));
    txt.forEach((c, t) => {
      const col = t ? seqColor(1 - r.sur[t] / capNats) : null;
      const guess = Array.from({ length: K5 }, (_, k) => `${JSON.stringify(chars[r.tIdx[t * K5 + k]])} ${(100 * r.tP[t * K5 + k]).toFixed(1)}%`).join(", ");
      out.append(el("span", { style: col ? `background:${rgb(col)};color:${inkFor(col)}` : "background:#eee",
        title: `${JSON.stringify(c)}: ${t ? r.sur[t].toFixed(3) + " nats" : "first character"}\nnext: ${guess}`, text: c === "\n" ? "⏎\n" : c }));
    });
    const last = Array.from({ length: K5 }, (_, k) => `${showChar(chars[r.tIdx[(toks.length - 1) * K5 + k]])} ${(100 * r.tP[(toks.length - 1) * K5 + k]).toFixed(1)}%`);
    msg.textContent = `${toks.length} characters, mean surprisal ${toks.length > 1 ? (r.sur.slice(1).reduce((a, b) => a + b, 0) / (toks.length - 1)).toFixed(3) : "–"} nats; after the last one it guesses ${last.join(", ")}`;
  }
  $("wi-run").addEventListener("click", whatIf);
  $("wi-text").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { whatIf(); ev.preventDefault(); } });

  // ------------------------------------------------------------------ picking
  function pickUnit(u) {
    S.unit = ((u % H) + H) % H;
    if (S.mode !== "unit") { S.mode = "unit"; $("m-unit").checked = true; }
    $("unit-input").value = S.unit;
    paintText(); paintInspector(); paintHeat(); markTable(); markSaturation(); paintPca();
    const tr = tbody.querySelector(`tr[data-u="${S.unit}"]`);
    if (tr && tr.parentElement.closest(".tablebox")) { const box = tr.closest(".tablebox"); if (tr.offsetTop < box.scrollTop || tr.offsetTop > box.scrollTop + box.clientHeight - 20) box.scrollTop = tr.offsetTop - 40; }
  }
  function pickChar(t, keepStage) {
    S.t = Math.min(N - 1, Math.max(0, t));
    if (!keepStage) S.stage = Math.min(S.stage, 6);
    markText(); paintInspector(); paintCell(); paintHeat(); markPca();
    if (S.mode === "memory") paintText();
  }
  function refreshHover() {
    markText(); paintInspector();
    if (S.mode === "memory") paintText();
  }
  function paintAll() {
    paintText(); markText(); paintInspector(); paintCell(); paintHeat(); paintTable(); paintSaturation(); paintPca(); runMatch();
  }
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", () => { S.mode = r.value; paintText(); });
  for (const r of document.querySelectorAll('input[name="weights"]')) r.addEventListener("change", () => {
    S.view = r.value;
    document.body.dataset.view = S.view;
    paintAll();
    if ($("wi-out").childNodes.length) whatIf();
  });
  $("unit-input").max = H - 1;
  $("unit-input").addEventListener("change", () => { const u = parseInt($("unit-input").value, 10); if (Number.isFinite(u)) pickUnit(Math.min(H - 1, Math.max(0, u))); });
  if (!models.initial) {
    $("w-initial").disabled = true;
    $("w-initial-label").title = "this checkpoint has no step-0 weights (it was written before training kept them)";
    $("w-note").textContent = "(no step-0 weights in this checkpoint)";
  }
  document.addEventListener("keydown", (ev) => {
    const tag = ev.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.target.closest && ev.target.closest("tbody") && (ev.key === "Enter" || ev.key === " ")) return;
    const mine = ev.target.closest && ev.target.closest("#text, #ci, .tablebox, #cs-vec, .stage, #heat");
    if (!mine && ev.key.startsWith("Arrow")) return; // the arrows scroll the page unless a view has the focus
    let done = true;
    if (ev.key === "ArrowUp" || ev.key === "ArrowDown") pickUnit(S.unit + (ev.key === "ArrowDown" ? 1 : -1));
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
      const d = ev.key === "ArrowRight" ? 1 : -1, t = Math.min(N - 1, Math.max(0, S.t + d));
      if (ev.shiftKey) {
        const anchor = S.sel && S.sel[0] === S.t ? S.sel[1] : S.sel && S.sel[1] === S.t ? S.sel[0] : S.t;
        S.sel = [Math.min(anchor, t), Math.max(anchor, t)];
        if (S.sel[0] === S.sel[1]) S.sel = null;
        runMatch();
      }
      pickChar(t);
      spans[S.t].scrollIntoView({ block: "nearest" });
    } else if (ev.key === "[" || ev.key === "]") stepStage(ev.key === "]" ? 1 : -1);
    else if (ev.key === "Escape") { S.sel = null; runMatch(); }
    else done = false;
    if (done) ev.preventDefault();
  });

  document.body.dataset.view = S.view;
  $("unit-input").value = S.unit;
  paintAll();
  paintMemCurve();
  document.body.dataset.ready = "1";
})();
