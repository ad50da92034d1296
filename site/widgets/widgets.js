// The book's live widgets: GPT-2's tokenizer and the project's own models, run in the reader's
// browser with ONNX Runtime Web (WebAssembly) from this site's own host; no server computes
// anything. scripts/build_widgets.py bundles this file (esbuild) and writes the models and
// models.json (what each model is, its size, its sha256 and the score its chapter measured).
//
// A page asks for a widget with <div class="gpt2-widget" data-widget="NAME">; _static's
// widgets-loader.js loads this module on pages that have one. Each widget keeps the numbers it
// showed last in `element.gpt2Result`, which the browser tests (tests/test_widgets.py) read.

import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";

const BASE = new URL("./", import.meta.url);
const tokenizer = new Tiktoken(gpt2Ranks);

/** Token ids of `text`, as tiktoken's gpt2 encoding with allowed_special="all". */
export const encode = (text) => tokenizer.encode(text, "all");
export const decode = (ids) => tokenizer.decode(ids);

// --- small DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function field(label, input) {
  return el("label", { class: "gpt2-field" }, el("span", {}, label), input);
}

/** A token as a reader can see it: spaces as ·, newlines as ↵, tabs as →. */
function visible(text) {
  return text.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "→");
}

function errorText(err) {
  return `Error: ${err && err.message ? err.message : err}`;
}

// --- models --------------------------------------------------------------------------------------

let metaPromise = null;
let ortPromise = null;
const sessions = new Map();

function models() {
  metaPromise ??= fetch(new URL("models.json", BASE)).then((r) => {
    if (!r.ok) throw new Error(`models.json: HTTP ${r.status}`);
    return r.json();
  });
  return metaPromise;
}

function runtime() {
  if (typeof WebAssembly !== "object") {
    return Promise.reject(new Error(
      "this browser cannot run WebAssembly, which the live models need; the rest of the page " +
      "works without it (or run the chapter in Colab)"));
  }
  ortPromise ??= import("onnxruntime-web/wasm").then((ort) => {
    ort.env.wasm.wasmPaths = BASE.href; // its .wasm and .mjs glue come from this site, not a CDN
    ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a static host lacks
    return ort;
  });
  return ortPromise;
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) return null; // only in secure contexts (https, localhost)
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchWithProgress(url, total, onProgress) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname.split("/").pop()}: HTTP ${response.status}`);
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

const downloads = new Map(); // file -> promise of its checked bytes (a shared table: once)

function download(file, onBytes) {
  if (!downloads.has(file.file)) {
    const promise = (async () => {
      const bytes = await fetchWithProgress(new URL(file.file, BASE), file.bytes, onBytes);
      const digest = await sha256Hex(bytes);
      if (digest !== null && digest !== file.sha256) {
        throw new Error(`${file.file}: sha256 ${digest.slice(0, 12)}…, expected ${file.sha256.slice(0, 12)}…`);
      }
      return { bytes, checked: digest !== null };
    })();
    promise.catch(() => downloads.delete(file.file)); // a failed download may be tried again
    downloads.set(file.file, promise);
  }
  return downloads.get(file.file);
}

/** The ONNX Runtime session of model `name`: its file and the external data it reads (the
 * shared token table), downloaded with progress and checked against models.json, once. */
function loadModel(name, onProgress) {
  if (!sessions.has(name)) {
    const promise = (async () => {
      const [ort, meta] = await Promise.all([runtime(), models()]);
      const info = meta[name];
      if (!info) throw new Error(`no model ${name} in models.json`);
      const own = { file: info.file, sha256: info.sha256, bytes: info.bytes - (info.external || []).reduce((n, e) => n + e.bytes, 0) };
      const files = [own, ...(info.external || [])];
      const got = new Map();
      const report = () => onProgress([...got.values()].reduce((a, b) => a + b, 0), info.bytes);
      const loaded = await Promise.all(files.map((file) => download(file, (n) => { got.set(file.file, n); report(); })));
      const options = {
        executionProviders: ["wasm"],
        externalData: (info.external || []).map((e, i) => ({ path: e.path, data: loaded[i + 1].bytes })),
      };
      const session = await ort.InferenceSession.create(loaded[0].bytes, options);
      return { ort, info, session, checked: loaded.every((l) => l.checked) };
    })();
    promise.catch(() => sessions.delete(name)); // a failed load may be tried again
    sessions.set(name, promise);
  }
  return sessions.get(name);
}

/** Run the model on `ids` (at most its context length): {logits of the last position, T, ...}. */
async function forward(model, ids, wantAttention = false) {
  const { ort, session, info } = model;
  const T = ids.length;
  const input = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, T]);
  const names = wantAttention ? ["logits", "attention"] : ["logits"];
  const out = await session.run({ input_ids: input }, names);
  const [, rows, V] = out.logits.dims; // rows: T, or 1 for a model exported with positions="last"
  const result = { T, last: out.logits.data.slice((rows - 1) * V, rows * V) };
  if (wantAttention) result.attention = out.attention.data; // (layers, 1, heads, T, T)
  result.info = info;
  return result;
}

function modelCard(info, checked) {
  const mb = (info.bytes / 1e6).toFixed(1);
  const short = (hex) => el("code", { title: hex }, `${hex.slice(0, 12)}…`);
  return el("p", { class: "gpt2-model-card" },
    el("strong", {}, info.title), `: ${info.parameters.toLocaleString("en")} parameters, ${mb} MB `,
    `(ONNX sha256 `, short(info.sha256), checked ? ", checked in this browser" : "",
    ...(info.weights_sha256
      ? [`; exported from the committed `, el("code", {}, info.weights_file), ` sha256 `, short(info.weights_sha256)]
      : [`; ${info.weights_file}`]),
    `). ${info.score}.`);
}

/** The "load on first press" part of a widget: a progress bar, then the model card. */
function modelLoader(box, name) {
  const status = el("div", { class: "gpt2-status", role: "status" });
  const bar = el("progress", { max: "1", value: "0", hidden: "" });
  box.append(el("div", { class: "gpt2-loader" }, bar, status));
  models().then((meta) => {
    const info = meta[name];
    if (info) {
      status.textContent = `Runs ${info.title} in your browser: ${(info.bytes / 1e6).toFixed(1)} MB, loaded when you first press the button.`;
    }
  }).catch((err) => { status.textContent = errorText(err); });
  return async () => {
    bar.hidden = false;
    status.textContent = "Loading the model…";
    try {
      const model = await loadModel(name, (got, total) => {
        bar.value = total ? got / total : 0;
        status.textContent = `Loading the model… ${(got / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB`;
      });
      bar.hidden = true;
      status.replaceChildren(modelCard(model.info, model.checked));
      return model;
    } catch (err) {
      bar.hidden = true;
      status.textContent = errorText(err);
      throw err;
    }
  };
}

// --- widget: text to tokens ----------------------------------------------------------------------

function tokensWidget(box) {
  const text = el("textarea", { rows: "3", "aria-label": "text to tokenize" });
  text.value = box.dataset.text || "Hello, do you like tea? <|endoftext|> In the sunlit terraces";
  const summary = el("p", { class: "gpt2-summary" });
  const chips = el("div", { class: "gpt2-tokens" });
  const ids = el("pre", { class: "gpt2-ids" });
  const reset = el("button", { type: "button", onclick: () => { text.value = initial; update(); } }, "Reset");
  const initial = text.value;
  function update() {
    const tokens = encode(text.value);
    const pieces = tokens.map((id) => decode([id]));
    chips.replaceChildren(...pieces.map((piece, i) =>
      el("span", { class: `gpt2-token gpt2-token-${i % 5}`, title: `id ${tokens[i]}` }, visible(piece))));
    ids.textContent = `[${tokens.join(", ")}]`;
    summary.textContent = `${tokens.length} tokens for ${[...text.value].length} characters`;
    box.gpt2Result = { ids: tokens, at: performance.now() }; // at: ms since the page opened
  }
  text.addEventListener("input", update);
  box.append(
    el("p", { class: "gpt2-about" }, "GPT-2's tokenizer, running in your browser (js-tiktoken with the ",
      el("code", {}, "gpt2"), " ranks: the encoding tiktoken uses). Type anything:"),
    text, el("div", { class: "gpt2-row" }, reset), summary, chips, ids);
  update();
}

// --- widget: attention heatmap -------------------------------------------------------------------

function drawHeatmap(canvas, weights, T, labels) {
  const size = Math.min(canvas.parentElement.clientWidth || 340, 560);
  const margin = Math.min(90, Math.round(size * 0.25));
  const cell = (size - margin) / T;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = size * ratio;
  canvas.height = size * ratio;
  canvas.style.width = `${size}px`;
  canvas.style.height = `${size}px`;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, size, size);
  for (let q = 0; q < T; q++) {
    for (let k = 0; k < T; k++) {
      const w = weights[q * T + k];
      ctx.fillStyle = k > q ? "#eee" : `rgba(31, 119, 180, ${Math.sqrt(w)})`;
      ctx.fillRect(margin + k * cell, margin + q * cell, cell - 0.5, cell - 0.5);
    }
  }
  const font = Math.max(9, Math.min(12, cell * 0.8));
  ctx.font = `${font}px sans-serif`;
  ctx.fillStyle = "#222";
  if (cell >= 9) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    labels.forEach((label, i) => ctx.fillText(label.slice(0, 10), margin - 4, margin + (i + 0.5) * cell));
    ctx.save();
    ctx.translate(0, 0);
    labels.forEach((label, i) => {
      ctx.save();
      ctx.translate(margin + (i + 0.5) * cell, margin - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(label.slice(0, 10), 0, 0);
      ctx.restore();
    });
    ctx.restore();
  } else {
    ctx.fillText(`${T} tokens: too many to label; rows are queries, columns keys`, 4, 14);
  }
}

function attentionWidget(box) {
  const name = box.dataset.model || "mini-shakespeare";
  const prompt = el("textarea", { rows: "2", "aria-label": "prompt" });
  prompt.value = box.dataset.prompt || "ROMEO:\nBut soft, what light through yonder window breaks?";
  const layer = el("select", { "aria-label": "layer" });
  const head = el("select", { "aria-label": "head" });
  const run = el("button", { type: "button" }, "Show attention");
  const canvas = el("canvas", { class: "gpt2-heatmap", role: "img", "aria-label": "attention heatmap" });
  const caption = el("p", { class: "gpt2-summary" });
  const load = modelLoader(box, name);
  let current = null;
  function show() {
    if (!current) return;
    const { T, attention, ids, heads, layers } = current;
    const l = Number(layer.value), h = Number(head.value);
    const start = (l * heads + h) * T * T;
    const weights = attention.subarray(start, start + T * T);
    drawHeatmap(canvas, weights, T, ids.map((id) => visible(decode([id]))));
    caption.textContent = `Layer ${l + 1}, head ${h + 1}: row i shows how much token i attends to each earlier token (darker: more). Each row sums to 1.`;
    box.gpt2Result = { ids, layer: l, head: h, weights: Array.from(weights) };
  }
  async function compute() {
    run.disabled = true;
    try {
      const model = await load();
      const { n_layers: layers, n_heads: heads, context_length: ctx } = model.info;
      if (layer.options.length === 0) {
        for (let i = 0; i < layers; i++) layer.append(el("option", { value: String(i) }, `layer ${i + 1}`));
        for (let i = 0; i < heads; i++) head.append(el("option", { value: String(i) }, `head ${i + 1}`));
      }
      const ids = encode(prompt.value).slice(-Math.min(ctx, 64));
      if (ids.length === 0) { caption.textContent = "Type a prompt first."; return; }
      const out = await forward(model, ids, true);
      current = { T: out.T, attention: out.attention, ids, heads, layers };
      show();
    } catch (err) {
      caption.textContent = errorText(err);
      box.gpt2Result = { error: String(err) };
    } finally {
      run.disabled = false;
    }
  }
  run.addEventListener("click", compute);
  layer.addEventListener("change", show);
  head.addEventListener("change", show);
  box.append(
    field("Prompt (the first 64 tokens are shown)", prompt),
    el("div", { class: "gpt2-row" }, run, field("Layer", layer), field("Head", head)),
    el("div", { class: "gpt2-canvas-box" }, canvas), caption);
}

// --- widget: generation with the next-token distribution -----------------------------------------

/** A seeded generator of uniform numbers in [0, 1) (mulberry32); not PyTorch's generator. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Indices of the `k` largest values, largest first (of equal values, the lower index first,
 * as torch.argmax and torch.topk order them). */
function largest(values, k) {
  if (k >= values.length / 8) {
    return Array.from(values.keys()).sort((a, b) => values[b] - values[a]).slice(0, k);
  }
  const top = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (top.length === k && v <= values[top[k - 1]]) continue;
    let j = top.length === k ? k - 1 : top.length;
    while (j > 0 && values[top[j - 1]] < v) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top;
}

/** The distribution to draw from, as gpt2lib.generate.next_token builds it: temperature, then
 * top-k, then top-p (the smallest set of tokens whose probability reaches p). Returns the
 * candidate tokens, most likely first, with their probabilities. At temperature 0 (greedy) it
 * is the model's own distribution, whose first token is taken. */
function distribution(logits, temperature, topK, topP) {
  const sampling = temperature > 0;
  const t = sampling ? temperature : 1;
  const V = logits.length;
  const k = sampling && topK > 0 ? Math.min(topK, V) : V;
  const order = (sampling && topP < 1) || k < V ? largest(logits, k) : largest(logits, 10);
  const max = logits[order[0]];
  let sum = 0; // the softmax's normaliser, over the tokens top-k keeps
  if (k < V) for (const i of order) sum += Math.exp((logits[i] - max) / t);
  else for (let i = 0; i < V; i++) sum += Math.exp((logits[i] - max) / t);
  let probs = order.map((i) => Math.exp((logits[i] - max) / t) / sum);
  if (sampling && topP < 1) {
    let mass = 0, keep = 0;
    while (keep < probs.length && mass < topP) mass += probs[keep++];
    const kept = probs.slice(0, keep).reduce((a, b) => a + b, 0);
    return { order: order.slice(0, keep), probs: probs.slice(0, keep).map((p) => p / kept), all: false };
  }
  return { order, probs, all: k === V };
}

/** Draw a token from `dist` with `random` (uniform in [0, 1)); the tail beyond the listed
 * candidates (when every token is a candidate) is reached by walking the logits. */
function draw(dist, logits, temperature, random) {
  let r = random();
  for (let i = 0; i < dist.order.length; i++) {
    if (r < dist.probs[i]) return dist.order[i];
    r -= dist.probs[i];
  }
  if (!dist.all) return dist.order[dist.order.length - 1];
  // the listed top tokens did not take it: every other token, in the logits' order
  const listed = new Set(dist.order);
  const max = logits[dist.order[0]];
  const first = dist.probs[0]; // exp(0) / sum: the top token's logit is the maximum
  let last = dist.order[0];
  for (let i = 0; i < logits.length; i++) {
    if (listed.has(i)) continue;
    const p = first * Math.exp((logits[i] - max) / temperature);
    if (r < p) return i;
    r -= p;
    last = i;
  }
  return last;
}

function bars(step) {
  const rows = step.order.slice(0, 10).map((id, i) => {
    const p = step.probs[i];
    const chosen = id === step.chosen;
    return el("div", { class: `gpt2-bar${chosen ? " gpt2-bar-chosen" : ""}` },
      el("span", { class: "gpt2-bar-label" }, visible(decode([id]))),
      el("span", { class: "gpt2-bar-track" }, el("span", { class: "gpt2-bar-fill", style: `width:${(100 * p).toFixed(1)}%` })),
      el("span", { class: "gpt2-bar-value" }, `${(100 * p).toFixed(1)}%`));
  });
  return rows;
}

function generateWidget(box) {
  const name = box.dataset.model || "mini-shakespeare";
  const prompt = el("textarea", { rows: "2", "aria-label": "prompt" });
  const defaults = { prompt: box.dataset.prompt || "ROMEO:\n", tokens: "40", temperature: "0.8", topK: "50", topP: "0.95", seed: "123" };
  const tokens = el("input", { type: "number", min: "1", max: "200", "aria-label": "new tokens" });
  const temperature = el("input", { type: "number", min: "0", max: "3", step: "0.1", "aria-label": "temperature" });
  const topK = el("input", { type: "number", min: "0", max: "50257", "aria-label": "top-k" });
  const topP = el("input", { type: "number", min: "0.01", max: "1", step: "0.05", "aria-label": "top-p" });
  const seed = el("input", { type: "number", min: "0", "aria-label": "seed" });
  const go = el("button", { type: "button" }, "Generate");
  const stop = el("button", { type: "button", disabled: "" }, "Stop");
  const reset = el("button", { type: "button" }, "Reset");
  const output = el("div", { class: "gpt2-generated", "aria-live": "polite" });
  const barsBox = el("div", { class: "gpt2-bars" });
  const barsTitle = el("p", { class: "gpt2-summary" });
  const load = modelLoader(box, name);
  let stopped = false;
  function setDefaults() {
    prompt.value = defaults.prompt;
    tokens.value = defaults.tokens;
    temperature.value = defaults.temperature;
    topK.value = defaults.topK;
    topP.value = defaults.topP;
    seed.value = defaults.seed;
    output.replaceChildren();
    barsBox.replaceChildren();
    barsTitle.textContent = "";
  }
  function showStep(steps, i) {
    const step = steps[i];
    barsTitle.textContent = `Step ${i + 1} of ${steps.length}: the top 10 of the distribution the token was drawn from (highlighted: the token chosen).`;
    barsBox.replaceChildren(...bars(step));
    output.querySelectorAll(".gpt2-new").forEach((node, j) => node.classList.toggle("gpt2-selected", j === i));
  }
  async function generate() {
    go.disabled = true;
    stop.disabled = false;
    stopped = false;
    try {
      const model = await load();
      const ctx = model.info.context_length;
      const T = Number(temperature.value), K = Number(topK.value), P = Number(topP.value);
      const n = Math.max(1, Math.min(200, Math.round(Number(tokens.value))));
      if (!(T >= 0) || !(P > 0 && P <= 1) || !(K >= 0)) throw new Error("temperature must be ≥ 0, top-k ≥ 0 (0: off) and top-p in (0, 1]");
      const random = seeded(Number(seed.value) || 0);
      const ids = encode(prompt.value);
      if (ids.length === 0) throw new Error("type a prompt first");
      const promptLength = ids.length;
      const steps = [];
      output.replaceChildren(el("span", { class: "gpt2-prompt" }, prompt.value));
      for (let s = 0; s < n && !stopped; s++) {
        const { last } = await forward(model, ids.slice(-ctx));
        const dist = distribution(last, T, K, P);
        const chosen = T > 0 ? draw(dist, last, T, random) : dist.order[0];
        ids.push(chosen);
        steps.push({ order: dist.order.slice(0, 10), probs: dist.probs.slice(0, 10), chosen });
        const index = steps.length - 1;
        output.append(el("span", { class: "gpt2-new", title: "show this step's distribution", onclick: () => showStep(steps, index) }, decode([chosen])));
        showStep(steps, index);
        box.gpt2Result = { ids: ids.slice(), promptLength, done: false };
        await new Promise((resolve) => setTimeout(resolve, 0)); // let the page draw this step
      }
      box.gpt2Result = { ids: ids.slice(), promptLength, done: true, at: performance.now() };
    } catch (err) {
      barsTitle.textContent = errorText(err);
      box.gpt2Result = { error: String(err), done: true };
    } finally {
      go.disabled = false;
      stop.disabled = true;
    }
  }
  go.addEventListener("click", generate);
  stop.addEventListener("click", () => { stopped = true; });
  reset.addEventListener("click", () => { stopped = true; setDefaults(); });
  setDefaults();
  box.append(
    field("Prompt", prompt),
    el("div", { class: "gpt2-row gpt2-settings" },
      field("New tokens", tokens), field("Temperature (0: greedy)", temperature),
      field("Top-k (0: off)", topK), field("Top-p", topP), field("Seed", seed)),
    el("div", { class: "gpt2-row" }, go, stop, reset),
    output, barsTitle, barsBox,
    el("p", { class: "gpt2-note" }, "Sampling uses a seeded generator of this page's own (not PyTorch's), so a seed gives the same text here every time, but not the text the chapter's cells print. Temperature 0 is greedy decoding, which gives exactly gpt2lib.generate's tokens."));
}

// --- widget: spam or not ---------------------------------------------------------------------------

function spamWidget(box) {
  const name = box.dataset.model || "spam-classifier";
  const message = el("textarea", { rows: "3", "aria-label": "message" });
  const initial = box.dataset.text || "URGENT! Your mobile number has won a £2,000 prize. Call 09061701461 to claim now.";
  const go = el("button", { type: "button" }, "Classify");
  const reset = el("button", { type: "button" }, "Reset");
  const verdict = el("p", { class: "gpt2-verdict", "aria-live": "polite" });
  const meter = el("div", { class: "gpt2-bar-track gpt2-meter" }, el("span", { class: "gpt2-bar-fill" }));
  const load = modelLoader(box, name);
  async function classify() {
    go.disabled = true;
    try {
      const model = await load();
      const { labels, max_length: maxLength } = model.info;
      // as gpt2lib.classifier.classify: special tokens read as plain text, cut to max_length
      const all = tokenizer.encode(message.value, [], []);
      const ids = all.slice(0, maxLength);
      if (!message.value.trim()) throw new Error("type a message first");
      const { last } = await forward(model, ids);
      const top = Math.max(...last);
      const exp = Array.from(last, (v) => Math.exp(v - top));
      const sum = exp.reduce((a, b) => a + b, 0);
      const probability = exp[labels.indexOf("spam")] / sum;
      const label = labels[exp.indexOf(Math.max(...exp))];
      meter.firstChild.style.width = `${(100 * probability).toFixed(1)}%`;
      verdict.replaceChildren(el("strong", {}, label), ` (spam probability ${probability.toFixed(3)}` +
        `${all.length > maxLength ? `; the first ${maxLength} of ${all.length} tokens, as in training` : ""})`);
      box.gpt2Result = { ids, probability, label, at: performance.now() };
    } catch (err) {
      verdict.textContent = errorText(err);
      box.gpt2Result = { error: String(err) };
    } finally {
      go.disabled = false;
    }
  }
  go.addEventListener("click", classify);
  reset.addEventListener("click", () => { message.value = initial; verdict.textContent = ""; meter.firstChild.style.width = "0"; });
  message.value = initial;
  box.append(field("A text message", message), el("div", { class: "gpt2-row" }, go, reset), meter, verdict);
}

// --- widget: an instruction, answered before and after tuning ----------------------------------

/** The answer in what a model wrote after the prompt, as gpt2lib's extract_response reads it
 * (the text stops before end-of-text): a "### Response:" header it wrote itself is skipped, the
 * answer ends where a new section of the format starts, and surrounding whitespace goes. */
function extractResponse(text) {
  text = text.replace(/\r\n/g, "\n");
  const stripped = text.trimStart();
  if (stripped.startsWith("### Response:")) text = stripped.slice("### Response:".length);
  const section = /^###[ \t]*(?:Instruction|Input|Response)[ \t]*:/m.exec(text);
  if (section) text = text.slice(0, section.index);
  return text.trim();
}

/** Greedy decoding (gpt2lib.generate at temperature 0) until end-of-text or `n` new tokens. */
async function greedy(model, ids, n) {
  const out = [];
  for (let s = 0; s < n; s++) {
    const { last } = await forward(model, ids.concat(out).slice(-model.info.context_length));
    const next = largest(last, 1)[0];
    if (next === END_OF_TEXT) return { ids: out, stopped: true };
    out.push(next);
  }
  return { ids: out, stopped: false };
}

const END_OF_TEXT = 50256;

function instructWidget(box) {
  const name = box.dataset.model || "mini-instruct";
  const pick = el("select", { "aria-label": "a test task" });
  const instruction = el("textarea", { rows: "2", "aria-label": "instruction" });
  const input = el("textarea", { rows: "2", "aria-label": "input" });
  const go = el("button", { type: "button" }, "Answer");
  const reset = el("button", { type: "button" }, "Reset");
  const expected = el("p", { class: "gpt2-summary" });
  const answers = el("div", { class: "gpt2-answers", "aria-live": "polite" });
  const note = el("p", { class: "gpt2-note" });
  const load = modelLoader(box, name);
  let examples = [];
  function choose(i) {
    const task = examples[i];
    if (!task) return;
    pick.value = String(i);
    instruction.value = task.instruction;
    input.value = task.input;
    expected.textContent = "";
    answers.replaceChildren();
  }
  models().then((meta) => {
    examples = meta[name]?.examples || [];
    note.textContent = `Both models decode greedily, up to the chapter's ${meta[name]?.max_new_tokens} new tokens, ` +
      "from the prompt in Alpaca's format that section 6 uses; the base model is the mini model the tuned one started from.";
    pick.replaceChildren(...examples.map((t, i) =>
      el("option", { value: String(i) }, `${t.kind}: ${t.instruction} ${t.input.replace(/\n/g, " / ")}`.slice(0, 70))));
    choose(0);
  }).catch(() => {}); // the loader says what went wrong
  function panel(title, result) {
    const answer = extractResponse(decode(result.ids));
    return el("div", { class: "gpt2-answer" }, el("strong", {}, title),
      el("p", { class: "gpt2-answer-text" }, answer ? answer : el("em", {}, "(empty)")),
      el("p", { class: "gpt2-note" }, "What it wrote: ", el("code", {}, visible(decode(result.ids)) || "(nothing)"),
        result.stopped ? " then end-of-text" : ` (stopped at the limit of ${result.ids.length} tokens)`));
  }
  async function answer() {
    go.disabled = true;
    try {
      const tuned = await load();
      const base = await loadModel(tuned.info.base, () => {});
      if (!instruction.value.trim()) throw new Error("type an instruction first");
      const template = input.value.trim() ? tuned.info.prompt_with_input : tuned.info.prompt_without_input;
      const prompt = template.replace("{instruction}", () => instruction.value).replace("{input}", () => input.value);
      const ids = encode(prompt);
      const n = tuned.info.max_new_tokens;
      const after = await greedy(tuned, ids, n);
      const before = await greedy(base, ids, n);
      answers.replaceChildren(
        panel("After tuning (chapter 6's recipe)", after),
        panel("Before tuning (the base mini model)", before));
      const task = examples[Number(pick.value)];
      const same = task && task.instruction === instruction.value && task.input === input.value;
      const got = extractResponse(decode(after.ids));
      expected.textContent = same
        ? `Expected: ${task.output}. The tuned answer is ${got.replace(/\.+$/, "").trim() === task.output ? "right" : "wrong"}.`
        : "Your own task: no expected answer to compare with.";
      box.gpt2Result = { prompt, answer: got, base_answer: extractResponse(decode(before.ids)), at: performance.now() };
    } catch (err) {
      expected.textContent = errorText(err);
      box.gpt2Result = { error: String(err) };
    } finally {
      go.disabled = false;
    }
  }
  pick.addEventListener("change", () => choose(Number(pick.value)));
  go.addEventListener("click", answer);
  reset.addEventListener("click", () => choose(0));
  box.append(
    field("Pick a test task (never trained on), or write your own", pick),
    field("Instruction", instruction), field("Input (may be empty)", input),
    el("div", { class: "gpt2-row" }, go, reset), expected, answers, note);
}

// --- start ---------------------------------------------------------------------------------------

const WIDGETS = {
  tokens: tokensWidget, attention: attentionWidget, generate: generateWidget, spam: spamWidget,
  instruct: instructWidget,
};

for (const box of document.querySelectorAll(".gpt2-widget")) {
  const make = WIDGETS[box.dataset.widget];
  box.replaceChildren();
  if (!make) {
    box.textContent = `unknown widget ${box.dataset.widget}`;
    continue;
  }
  try {
    make(box);
    box.classList.add("gpt2-ready");
  } catch (err) {
    box.textContent = errorText(err);
  }
}
