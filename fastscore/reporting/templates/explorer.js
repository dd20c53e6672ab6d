// The explorer's script, inlined into explorer.html (reporting/explorer.py writes the
// page and the data it reads): decodes the embedded arrays and texts, draws the scatter
// plots on 2D canvases, and wires the colouring, the budget, the search and the hover.
"use strict";

(async () => {
  const $ = (id) => document.getElementById(id);
  const meta = JSON.parse($("fs-meta").textContent);
  const bytes = base64Bytes($("fs-arrays").textContent.trim());
  const A = {};
  for (const [name, a] of Object.entries(meta.arrays)) {
    A[name] = new globalThis[a.type + "Array"](bytes.buffer, a.offset, a.length);
  }
  if (typeof DecompressionStream === "undefined") {
    throw new Error(
      "this browser cannot inflate the embedded texts (it has no DecompressionStream: " +
        "Chrome 80, Firefox 113, Safari 16.4 or later have it)"
    );
  }
  // [id, prompt, response] per drawn point, in the order of the arrays
  const texts = JSON.parse(await inflate(base64Bytes($("fs-texts").textContent.trim())));
  const D = A.index.length;
  if (texts.length !== D) throw new Error(`${texts.length} texts for ${D} points`);

  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939"];
  const OTHER = "#bdbdbd";
  const KEPT = ["#ed7d31", "#9a9a9a"];

  const state = {
    colour: $("colour").value,
    highlight: "selection",
    mask: A.selected, // the highlighted points: the selection's or the budget's
    keptMask: null, // the budget's, once one is valid
    current: -1, // the point whose record is shown
  };

  // ---- the budget: what a fraction or a top-k keeps, exactly, over all records ----

  function readBudget() {
    const unit = $("unit").value;
    const raw = $("amount").value.trim();
    const v = Number(raw);
    if (unit === "fraction") {
      if (raw === "" || !Number.isFinite(v) || v < 0 || v > 1) {
        return { error: `a fraction must be a number in [0, 1], got '${raw}'` };
      }
      return { k: Math.floor(v * meta.n + 1e-9) }; // as select: floor(fraction x records)
    }
    if (raw === "" || !Number.isInteger(v) || v < 0) {
      return { error: `a top-k must be a whole number >= 0, got '${raw}'` };
    }
    return { k: v };
  }

  // selection.budget.allocate: floor(k x share) each, what rounding left of
  // round(k x sum of shares) to the largest remainders, ties to the one named first
  function allocate(k, shares) {
    const got = new Map();
    let sumShares = 0;
    let sumGot = 0;
    for (const [g, s] of shares) {
      const w = Math.floor(k * s + 1e-9);
      got.set(g, w);
      sumShares += s;
      sumGot += w;
    }
    const left = pyRound(k * sumShares) - sumGot;
    const rem = (g, s) => k * s - got.get(g);
    const order = shares.slice().sort((a, b) => rem(b[0], b[1]) - rem(a[0], a[1]));
    for (const [g] of order.slice(0, Math.max(0, left))) got.set(g, got.get(g) + 1);
    return got;
  }

  function pyRound(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; // half to even
  }

  // selection.budget.spread_quotas over [[cluster, eligible], ...] in the selection's order
  function spreadQuotas(k, sizes, how) {
    const size = new Map(sizes);
    const total = sizes.reduce((t, [, c]) => t + c, 0);
    k = Math.min(k, total);
    const quotas = new Map(sizes.map(([c]) => [c, 0]));
    if (k <= 0 || total === 0) return quotas;
    if (how === "proportional") {
      const got = allocate(k, sizes.map(([c, m]) => [c, m / total]));
      for (const [c, q] of got) quotas.set(c, Math.min(q, size.get(c)));
      return quotas;
    }
    let open = sizes.filter(([, m]) => m > 0).map(([c]) => c);
    let left = k;
    while (left > 0 && open.length) {
      const share = allocate(left, open.map((c) => [c, 1 / open.length]));
      for (const c of open) {
        quotas.set(c, quotas.get(c) + Math.min(share.get(c), size.get(c) - quotas.get(c)));
      }
      left = k - [...quotas.values()].reduce((t, q) => t + q, 0);
      open = open.filter((c) => quotas.get(c) < size.get(c));
    }
    return quotas;
  }

  function kept(rule, k) {
    const mask = new Uint8Array(D);
    if (rule === "clusters") {
      const quotas = spreadQuotas(k, meta.quota.clusters, meta.quota.spread);
      const rank = A.cluster_rank;
      for (let j = 0; j < D; j++) {
        mask[j] = rank[j] >= 0 && rank[j] < (quotas.get(A.cluster[j]) || 0) ? 1 : 0;
      }
      return { mask, count: [...quotas.values()].reduce((t, q) => t + q, 0) };
    }
    const top = Math.min(k, meta.eligible);
    for (let j = 0; j < D; j++) mask[j] = A.rank[j] >= 0 && A.rank[j] < top ? 1 : 0;
    return { mask, count: top };
  }

  function updateBudget() {
    state.highlight = document.querySelector("input[name=highlight]:checked").value;
    const rule = state.highlight === "selection" ? "selection" : $("rule").value;
    const template = $("rule-texts").content.querySelector(`[data-rule=${rule}]`);
    $("rule-text").replaceChildren(template.cloneNode(true));
    const b = readBudget();
    $("budget-error").textContent = b.error || "";
    state.keptMask = null;
    let count = "";
    if (!b.error) {
      const k = kept($("rule").value, b.k);
      state.keptMask = k.mask;
      if (state.highlight === "budget") count = k.count;
    }
    if (state.highlight === "selection") {
      state.mask = A.selected;
      count = meta.selected;
    } else {
      state.mask = state.keptMask || new Uint8Array(D); // an invalid budget keeps nothing
    }
    $("kept-count").textContent = String(count);
    $("kept-drawn").textContent = String(state.mask.reduce((t, m) => t + m, 0));
    redraw();
    if (state.current >= 0) showRecord(state.current);
  }

  function syncSlider() {
    const v = Number($("amount").value);
    const max = $("unit").value === "fraction" ? 1 : Math.max(1, meta.eligible);
    if (Number.isFinite(v)) $("slider").value = String(Math.round((1000 * v) / max));
  }

  $("unit").value = meta.budget.unit;
  $("amount").value = String(meta.budget.value);
  syncSlider();
  // touching the budget's controls highlights what the budget keeps
  const onBudget = (sync) => () => {
    document.querySelector("input[name=highlight][value=budget]").checked = true;
    if (sync) syncSlider();
    updateBudget();
  };
  $("amount").addEventListener("input", onBudget(true));
  $("unit").addEventListener("change", onBudget(true));
  $("rule").addEventListener("change", onBudget(false));
  $("slider").addEventListener("input", () => {
    const s = Number($("slider").value) / 1000;
    $("amount").value =
      $("unit").value === "fraction" ? String(s) : String(Math.round(s * meta.eligible));
    onBudget(false)();
  });
  for (const r of document.querySelectorAll("input[name=highlight]")) {
    r.addEventListener("change", updateBudget);
  }

  // ---- colouring ----

  function colours() {
    // per point its colour's index into the returned list, and the legend's entries
    const idx = new Uint8Array(D);
    if (state.colour === "kept") {
      const m = state.mask;
      for (let j = 0; j < D; j++) idx[j] = m[j] ? 0 : 1;
      const on = state.mask.reduce((t, v) => t + v, 0);
      return {
        idx,
        list: KEPT,
        legend: [
          [KEPT[0], state.highlight === "selection" ? "selected" : "kept", on],
          [KEPT[1], "the rest", D - on],
        ],
      };
    }
    const codes = A[state.colour];
    const cat = meta.categories[state.colour];
    const drawn = new Array(cat.names.length).fill(0);
    for (let j = 0; j < D; j++) {
      const c = codes[j];
      drawn[c]++;
      idx[j] = c < PALETTE.length ? c : PALETTE.length;
    }
    const list = [...PALETTE, OTHER];
    const legend = cat.names.slice(0, PALETTE.length).map((name, c) => [
      PALETTE[c],
      name,
      drawn[c],
      cat.records[c],
    ]);
    // the rest in one colour; their records counted from the whole (the names and counts
    // of values no drawn point has are not embedded)
    const rest = cat.total - legend.length;
    if (rest > 0) {
      const n = drawn.slice(PALETTE.length).reduce((t, v) => t + v, 0);
      const r = meta.n - legend.reduce((t, e) => t + e[3], 0);
      legend.push([OTHER, `${rest} more`, n, r]);
    }
    return { idx, list, legend };
  }

  function drawLegend(c) {
    const box = $("legend");
    box.replaceChildren();
    const what = state.colour === "group" ? meta.group_field : state.colour;
    box.append(`${what} (points drawn of records): `);
    for (const [colour, name, drawn, records] of c.legend) {
      const item = document.createElement("span");
      item.className = "item";
      item.dataset.name = name;
      const dot = document.createElement("i");
      dot.style.background = colour;
      item.append(dot, name, ` (${drawn}` + (records === undefined ? ")" : ` of ${records})`));
      box.append(item);
    }
  }

  $("colour").addEventListener("change", () => {
    state.colour = $("colour").value;
    redraw();
  });

  // ---- the plots ----

  const MARGIN = { left: 58, right: 14, top: 12, bottom: 42 };
  const CELL = 10; // px of the hover grid's cells
  const NEAR = 8; // px within which the pointer picks a point

  class Plot {
    constructor(spec, parent) {
      this.xs = A[spec.x];
      this.ys = A[spec.y];
      this.xName = spec.x === "length" ? "response tokens" : spec.x.replace(/^score:/, "");
      this.yName = spec.y.replace(/^score:/, "");
      const fig = document.createElement("figure");
      const box = document.createElement("div");
      box.className = "plot";
      this.base = document.createElement("canvas");
      this.overlay = document.createElement("canvas");
      this.overlay.className = "overlay";
      box.append(this.base, this.overlay);
      const cap = document.createElement("figcaption");
      cap.textContent = spec.diagonal
        ? `${this.xName} against ${this.yName} (below the diagonal the reference has the ` +
          "lower loss; lobass is the share of the base loss it removed)"
        : `${this.yName} against ${this.xName}`;
      fig.append(box, cap);
      parent.append(fig);
      this.diagonal = spec.diagonal;
      this.finite = [];
      for (let j = 0; j < D; j++) {
        if (Number.isFinite(this.xs[j]) && Number.isFinite(this.ys[j])) this.finite.push(j);
      }
      this.full = this.extent();
      this.view = { ...this.full };
      this.wire();
    }

    extent() {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const j of this.finite) {
        x0 = Math.min(x0, this.xs[j]); x1 = Math.max(x1, this.xs[j]);
        y0 = Math.min(y0, this.ys[j]); y1 = Math.max(y1, this.ys[j]);
      }
      if (!this.finite.length) [x0, x1, y0, y1] = [0, 1, 0, 1];
      const pad = (a, b) => (b > a ? (b - a) * 0.04 : 0.5);
      const px = pad(x0, x1), py = pad(y0, y1);
      return { x0: x0 - px, x1: x1 + px, y0: y0 - py, y1: y1 + py };
    }

    area() {
      const w = this.overlay.clientWidth, h = this.overlay.clientHeight;
      return { left: MARGIN.left, top: MARGIN.top, width: w - MARGIN.left - MARGIN.right,
               height: h - MARGIN.top - MARGIN.bottom };
    }

    toScreen(x, y, a) {
      const v = this.view;
      return [a.left + ((x - v.x0) / (v.x1 - v.x0)) * a.width,
              a.top + (1 - (y - v.y0) / (v.y1 - v.y0)) * a.height];
    }

    toData(px, py, a) {
      const v = this.view;
      return [v.x0 + ((px - a.left) / a.width) * (v.x1 - v.x0),
              v.y0 + (1 - (py - a.top) / a.height) * (v.y1 - v.y0)];
    }

    size(canvas) {
      const dpr = window.devicePixelRatio || 1;
      const w = canvas.clientWidth, h = canvas.clientHeight;
      if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      return ctx;
    }

    draw(c) {
      const ctx = this.size(this.base);
      const a = this.area();
      const v = this.view;
      // where a test or a script finds a value's pixel: the plot area in CSS px, the view
      this.overlay.dataset.area = JSON.stringify([a.left, a.top, a.width, a.height]);
      this.overlay.dataset.view = JSON.stringify([v.x0, v.x1, v.y0, v.y1]);
      this.axes(ctx, a);
      ctx.save();
      ctx.beginPath();
      ctx.rect(a.left, a.top, a.width, a.height);
      ctx.clip();
      if (this.diagonal) {
        const lo = Math.max(v.x0, v.y0), hi = Math.min(v.x1, v.y1);
        if (hi > lo) {
          ctx.strokeStyle = "#333";
          ctx.setLineDash([5, 4]);
          ctx.lineWidth = 0.8;
          ctx.beginPath();
          ctx.moveTo(...this.toScreen(lo, lo, a));
          ctx.lineTo(...this.toScreen(hi, hi, a));
          ctx.stroke();
          ctx.setLineDash([]);
        }
      }
      const sx = new Float32Array(D), sy = new Float32Array(D);
      const inside = [];
      for (const j of this.finite) {
        const [px, py] = this.toScreen(this.xs[j], this.ys[j], a);
        if (px < a.left || px > a.left + a.width || py < a.top || py > a.top + a.height) continue;
        sx[j] = px; sy[j] = py;
        inside.push(j);
      }
      // the rest faint and small, then the highlighted on top
      const m = state.mask;
      for (const [on, alpha, r] of [[0, 0.35, 1.1], [1, 0.9, 1.8]]) {
        ctx.globalAlpha = alpha;
        c.list.forEach((colour, ci) => {
          ctx.fillStyle = colour;
          ctx.beginPath();
          for (const j of inside) {
            if (m[j] === on && c.idx[j] === ci) ctx.rect(sx[j] - r, sy[j] - r, 2 * r, 2 * r);
          }
          ctx.fill();
        });
      }
      ctx.restore();
      // the hover grid: the points in each CELL x CELL px square
      this.sx = sx; this.sy = sy;
      this.cols = Math.ceil((a.left + a.width) / CELL) + 1;
      this.grid = new Map();
      for (const j of inside) {
        const key = Math.floor(sx[j] / CELL) + Math.floor(sy[j] / CELL) * this.cols;
        const cell = this.grid.get(key);
        if (cell) cell.push(j); else this.grid.set(key, [j]);
      }
      this.drawOverlay();
    }

    axes(ctx, a) {
      const v = this.view;
      ctx.strokeStyle = "#888";
      ctx.lineWidth = 1;
      ctx.strokeRect(a.left, a.top, a.width, a.height);
      ctx.fillStyle = "#333";
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const t of ticks(v.x0, v.x1, Math.max(2, a.width / 90))) {
        const [px] = this.toScreen(t.value, v.y0, a);
        ctx.beginPath(); ctx.moveTo(px, a.top + a.height); ctx.lineTo(px, a.top + a.height + 4);
        ctx.stroke();
        ctx.fillText(t.label, px, a.top + a.height + 6);
      }
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (const t of ticks(v.y0, v.y1, Math.max(2, a.height / 60))) {
        const [, py] = this.toScreen(v.x0, t.value, a);
        ctx.beginPath(); ctx.moveTo(a.left - 4, py); ctx.lineTo(a.left, py); ctx.stroke();
        ctx.fillText(t.label, a.left - 6, py);
      }
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      ctx.fillText(this.xName, a.left + a.width / 2, a.top + a.height + MARGIN.bottom - 2);
      ctx.save();
      ctx.translate(13, a.top + a.height / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = "middle";
      ctx.fillText(this.yName, 0, 0);
      ctx.restore();
    }

    drawOverlay() {
      const ctx = this.size(this.overlay);
      const j = state.current;
      if (j < 0 || !Number.isFinite(this.xs[j]) || !Number.isFinite(this.ys[j])) return;
      const [px, py] = this.toScreen(this.xs[j], this.ys[j], this.area());
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px, py, 6, 0, 2 * Math.PI);
      ctx.stroke();
    }

    nearest(px, py) {
      let best = -1, bestD = NEAR * NEAR;
      const cx = Math.floor(px / CELL), cy = Math.floor(py / CELL);
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          for (const j of this.grid.get(cx + dx + (cy + dy) * this.cols) || []) {
            const d = (this.sx[j] - px) ** 2 + (this.sy[j] - py) ** 2;
            if (d <= bestD) { bestD = d; best = j; }
          }
        }
      }
      return best;
    }

    wire() {
      const el = this.overlay;
      let drag = null;
      const at = (e) => {
        const r = el.getBoundingClientRect();
        return [e.clientX - r.left, e.clientY - r.top];
      };
      el.addEventListener("mousedown", (e) => {
        drag = { at: at(e), view: { ...this.view }, moved: false };
      });
      window.addEventListener("mouseup", () => { drag = null; });
      el.addEventListener("mousemove", (e) => {
        const [px, py] = at(e);
        if (drag) {
          const a = this.area();
          const dx = ((px - drag.at[0]) / a.width) * (drag.view.x1 - drag.view.x0);
          const dy = ((py - drag.at[1]) / a.height) * (drag.view.y1 - drag.view.y0);
          if (Math.abs(px - drag.at[0]) + Math.abs(py - drag.at[1]) > 2) drag.moved = true;
          if (drag.moved) {
            this.view = { x0: drag.view.x0 - dx, x1: drag.view.x1 - dx,
                          y0: drag.view.y0 + dy, y1: drag.view.y1 + dy };
            this.schedule();
            return;
          }
        }
        const j = this.nearest(px, py);
        if (j >= 0 && j !== state.current) select(j);
      });
      el.addEventListener("wheel", (e) => {
        e.preventDefault();
        const a = this.area();
        const [px, py] = at(e);
        const [x, y] = this.toData(px, py, a);
        const f = Math.exp(e.deltaY * 0.0015);
        const v = this.view;
        this.view = { x0: x + (v.x0 - x) * f, x1: x + (v.x1 - x) * f,
                      y0: y + (v.y0 - y) * f, y1: y + (v.y1 - y) * f };
        this.schedule();
      }, { passive: false });
      el.addEventListener("dblclick", () => {
        this.view = { ...this.full };
        this.schedule();
      });
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw(state.colours);
      });
    }
  }

  function ticks(a, b, count) {
    const raw = (b - a) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const e = raw / mag;
    const step = (e >= 7.5 ? 10 : e >= 3.5 ? 5 : e >= 1.5 ? 2 : 1) * mag;
    const digits = Math.min(8, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
    const out = [];
    // bounded: zoomed far in, a/step passes 2^53 and i++ stops moving i
    for (let i = Math.ceil(a / step), n = 0; i * step <= b && n <= 4 * count; i++, n++) {
      out.push({ value: i * step, label: (i * step).toFixed(digits) });
    }
    return out;
  }

  const plots = meta.plots.map((spec) => new Plot(spec, $("plots")));

  function redraw() {
    state.colours = colours();
    drawLegend(state.colours);
    for (const p of plots) p.draw(state.colours);
  }

  window.addEventListener("resize", redraw);

  // ---- the record shown ----

  const fmt = (x) => (Number.isFinite(x) ? x.toFixed(4) : "null");
  // a record without an id (null) is known by its index, shown beside it
  const idText = (id) =>
    id === null ? "none" : typeof id === "object" ? JSON.stringify(id) : String(id);

  function select(j) {
    state.current = j;
    for (const p of plots) p.drawOverlay();
    showRecord(j);
  }

  function showRecord(j) {
    const [id, prompt, response] = texts[j];
    const box = $("record");
    const el = (tag, text, cls) => {
      const e = document.createElement(tag);
      if (text !== undefined) e.textContent = text;
      if (cls) e.className = cls;
      return e;
    };
    const h = el("h2", "id ");
    h.append(el("code", idText(id)));
    const facts = [`#${A.index[j]}`];
    for (const f of ["status", "cluster", "group"]) {
      if (A[f]) {
        const name = f === "group" ? meta.group_field : f;
        facts.push(`${name} ${meta.categories[f].names[A[f][j]]}`);
      }
    }
    const len = A.length[j];
    facts.push(Number.isFinite(len) ? `${len} response tokens` : "no response tokens");
    const table = el("table");
    for (const c of meta.columns) {
      const row = el("tr");
      row.append(el("td", c), el("td", fmt(A["score:" + c][j]), "v"));
      table.append(row);
    }
    const lines = [`in the report's selection: ${A.selected[j] ? "yes" : "no"}`];
    if (state.highlight === "budget" && state.keptMask) {
      lines.push(`kept by the budget: ${state.keptMask[j] ? "yes" : "no"}`);
    }
    const p1 = el("div", "", "msg");
    p1.append(el("span", "prompt: ", "role"), prompt);
    const p2 = el("div", "", "msg");
    p2.append(el("span", "response: ", "role response"), response);
    box.replaceChildren(h, el("div", facts.join(" · "), "meta"), table,
                        el("div", lines.join("; "), "meta"), p1, p2);
    box.dataset.index = String(A.index[j]);
  }

  // ---- find an id ----

  const byId = new Map();
  texts.forEach(([id], j) => {
    if (id === null) return;
    const key = idText(id);
    if (byId.has(key)) byId.get(key).push(j); else byId.set(key, [j]);
  });
  // "#12": the record at index 12, with an id or without one
  const byIndex = new Map();
  A.index.forEach((i, j) => byIndex.set(i, [j]));

  function find() {
    const q = $("find").value.trim();
    const out = $("find-result");
    out.className = "";
    if (!q) {
      out.textContent = "type a record's id, or #index";
      return;
    }
    const at = /^#(\d+)$/.exec(q);
    const js = at ? byIndex.get(Number(at[1])) : byId.get(q);
    if (!js) {
      const what = at ? `index ${at[1]}` : `id '${q}'`;
      out.className = "missing";
      out.textContent = meta.sampled
        ? `no drawn record has ${what} (${D} of the ${meta.n} records are drawn: a ` +
          "seeded sample and the selection)"
        : `no record has ${what}`;
      return;
    }
    const j = js[0];
    for (const p of plots) {
      const [x, y] = [p.xs[j], p.ys[j]];
      const v = p.view;
      if (Number.isFinite(x) && Number.isFinite(y) && (x < v.x0 || x > v.x1 || y < v.y0 || y > v.y1)) {
        p.view = { ...p.full };
        p.draw(state.colours);
      }
    }
    select(j);
    const off = plots.filter((p) => !Number.isFinite(p.xs[j]) || !Number.isFinite(p.ys[j]));
    const where = !off.length
      ? ""
      : off.length === plots.length
        ? " (on no plot: its values are not finite)"
        : " (not on every plot: some of its values are not finite)";
    out.textContent =
      `found: record #${A.index[j]}` + where +
      (js.length > 1 ? ` (${js.length - 1} more drawn records have this id)` : "");
  }

  $("find-go").addEventListener("click", find);
  $("find").addEventListener("keydown", (e) => {
    if (e.key === "Enter") find();
  });

  updateBudget();
  // for scripts (and the test): the record indices of the points highlighted now
  window.fastscoreExplorer = {
    highlighted: () => [...A.index.filter((_, j) => state.mask[j])],
  };
  document.body.dataset.ready = "1";
})().catch((e) => {
  const box = document.getElementById("error");
  box.textContent = `The explorer could not start: ${e.message}`;
  box.hidden = false;
  console.error(e);
});

function base64Bytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function inflate(data) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text();
}
