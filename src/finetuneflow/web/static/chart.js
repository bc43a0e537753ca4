// The Train step's live loss chart: hand-drawn SVG lines of the training loss by optimizer step and
// of the eval loss at the steps it was measured. The first points come from the run's metrics.jsonl
// (rendered into the page), later ones from the job's progress events, so a reopened page shows
// the whole run and keeps growing.
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 260, PAD = { l: 56, r: 16, t: 12, b: 34 };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(lo, hi, n) {
    if (hi === lo) return [lo];
    const step = (hi - lo) / (n - 1);
    return Array.from({ length: n }, (_, i) => lo + i * step);
  }

  // whole steps 1, 2 or 5 × 10^k apart, at most ~6 of them: 0 2 4 6 8, not 0 2 3 5 6 8
  function stepTicks(lo, hi) {
    let gap = 1;
    for (let k = 1; (hi - lo) / gap > 5; k *= 10) gap = [k, 2 * k, 5 * k].find((g) => (hi - lo) / g <= 5) || 10 * k;
    const out = [];
    for (let x = Math.ceil(lo / gap) * gap; x <= hi; x += gap) out.push(x);
    return out;
  }

  function line(svg, points, sx, sy, kind) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`).join("");
    svg.append(el("path", { d, class: `line ${kind}` }));
    for (const p of points) svg.append(el("circle", { cx: sx(p.step), cy: sy(p.loss), r: 3, class: `dot ${kind}` }));
  }

  function draw(box, points, evals) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", "aria-hidden": "true", focusable: "false" });
    const xs = points.map((p) => p.step), ys = [...points, ...evals].map((p) => p.loss);
    const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (!points.length) { y0 = 0; y1 = 1; }
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => PAD.l + ((x - x0) / (x1 - x0 || 1)) * (W - PAD.l - PAD.r);
    const sy = (y) => H - PAD.b - ((y - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
    svg.append(el("rect", { x: PAD.l, y: PAD.t, width: W - PAD.l - PAD.r, height: H - PAD.t - PAD.b, class: "plot" }));
    for (const y of ticks(y0, y1, 5)) {
      svg.append(el("line", { x1: PAD.l, x2: W - PAD.r, y1: sy(y), y2: sy(y), class: "grid" }));
      svg.append(el("text", { x: PAD.l - 6, y: sy(y) + 4, "text-anchor": "end", class: "tick" }, y.toFixed(3)));
    }
    for (const x of stepTicks(x0, x1)) {
      svg.append(el("text", { x: sx(x), y: H - PAD.b + 16, "text-anchor": "middle", class: "tick step" }, x));
    }
    svg.append(el("text", { x: (W + PAD.l) / 2, y: H - 4, "text-anchor": "middle", class: "axis" }, "step"));
    if (points.length) {
      line(svg, points, sx, sy, "train");
      if (evals.length) line(svg, evals, sx, sy, "eval");
    } else {
      svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" }, "no points yet"));
    }
    box.replaceChildren(svg);
    box.dataset.count = points.length;
    box.dataset.evalCount = evals.length;
    const count = document.querySelector("[data-chart-count]");
    if (count) count.textContent = points.length;
  }

  function setStat(name, value) {
    const node = document.querySelector(`[data-stat=${name}]`);
    if (node) node.textContent = value;
  }

  function showStats(p) {
    if (p.step !== undefined) setStat("step", p.total ? `${p.step} / ${p.total}` : p.step);
    if (p.loss !== undefined) setStat("loss", Number(p.loss).toFixed(4));
    if (p.tokens_per_s !== undefined) setStat("tokens_per_s", Math.round(p.tokens_per_s));
    if (p.eta_s !== undefined) setStat("eta", window.ftf ? window.ftf.fmtTime(p.eta_s) : `${p.eta_s} s`);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("loss-chart");
    if (!box) return;
    const byStep = new Map(), evalByStep = new Map();
    for (const m of JSON.parse(box.dataset.points || "[]")) byStep.set(m.step, { step: m.step, loss: m.loss });
    for (const m of JSON.parse(box.dataset.evals || "[]")) evalByStep.set(m.step, { step: m.step, loss: m.eval_loss });
    const sorted = (map) => [...map.values()].sort((a, b) => a.step - b.step);
    // A step event carries the last eval loss measured, repeated until the next eval: a new value
    // marks the step that measured it (a resumed run repeats its old one, which is no new point).
    const newEval = (step, value) => {
      const before = sorted(evalByStep).filter((p) => p.step < step).pop();
      return !evalByStep.has(step) && (!before || Math.abs(before.loss - value) > 1e-5);
    };
    const redraw = () => draw(box, sorted(byStep), sorted(evalByStep));
    const initial = JSON.parse(box.dataset.points || "[]");
    if (initial.length) showStats(initial[initial.length - 1]);
    redraw();
    document.addEventListener("ftf:progress", (e) => {
      const p = e.detail;
      const m = p.metrics || {};
      if (p.stage !== "step" || m.loss === undefined || m.loss === null) return;
      byStep.set(p.done, { step: p.done, loss: m.loss });
      if (m.eval_loss !== undefined && m.eval_loss !== null && newEval(p.done, m.eval_loss)) {
        evalByStep.set(p.done, { step: p.done, loss: m.eval_loss });
      }
      if (!p.replay) showStats({ step: p.done, total: p.total, ...m });
      redraw();
    });
  });
})();
