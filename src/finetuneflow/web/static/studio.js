// FineTuneFlow studio: the small script behind the server-rendered pages. Actions call the REST API
// (/api/...), the same api and jobs functions the CLI calls; a job panel follows its job's
// server-sent events from the last event it has shown, so a reload or reconnect resumes it.
"use strict";

const main = () => document.getElementById("main");
const project = () => main().dataset.project;
const DATASET = "default";
const enc = encodeURIComponent;

// Every REST path the studio uses, in one place.
const ROUTES = {
  projects: () => "/api/projects",
  project: (p) => `/api/projects/${enc(p)}`,
  files: (p) => `/api/projects/${enc(p)}/files`,
  ingest: (p) => `/api/projects/${enc(p)}/ingest`,
  build: (p) => `/api/projects/${enc(p)}/datasets`,
  generate: (p) => `/api/projects/${enc(p)}/datasets/generate`,
  example: (p, id) => `/api/projects/${enc(p)}/datasets/${DATASET}/examples/${id}`,
  plan: (p) => `/api/projects/${enc(p)}/plan`,
  runs: (p) => `/api/projects/${enc(p)}/runs`,
  resume: (p, run) => `/api/projects/${enc(p)}/runs/${enc(run)}/resume`,
  run: (p, run) => `/api/projects/${enc(p)}/runs/${enc(run)}`,
  evaluate: (p, run) => `/api/projects/${enc(p)}/runs/${enc(run)}/evaluations`,
  exportRun: (p, run) => `/api/projects/${enc(p)}/runs/${enc(run)}/exports`,
  cancel: (id) => `/api/jobs/${id}/cancel`,
  events: (id, after) => `/api/jobs/${id}/events?after=${after}`,
  settings: (p) => `/ui/projects/${enc(p)}/settings`,
  providerKey: (p) => `/ui/projects/${enc(p)}/provider-key`,
};

function say(message, kind = "error") {
  const el = document.getElementById("alert");
  el.textContent = message;
  el.className = `alert ${kind}`;
  el.hidden = !message;
}

function freed(bytes) {  // what a delete freed, as `ftf` says it (KiB rounded up)
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

async function call(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { raw: text }; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const detail = err.message || (data && JSON.stringify(data.detail || data)) || res.statusText;
    throw new Error(`${res.status}: ${detail}`);
  }
  return data;
}

// After a job is queued, show its page state: the URL names the job, so a reload re-attaches.
function followJob(ref, extra = {}) {
  const url = new URL(location.href);
  url.searchParams.set("job", ref.job_id);
  for (const [k, v] of Object.entries(extra)) if (v) url.searchParams.set(k, v);
  location.assign(url.toString());
}

const saveSettings = (changes) => call("POST", ROUTES.settings(project()), changes);
const jsonOf = (el, name) => JSON.parse(el.dataset[name] || "{}");

const ACTIONS = {
  async "create-project"(form) {
    const name = form.elements.name.value.trim();
    await call("POST", ROUTES.projects(), { name });
    location.assign(`/ui/projects/${enc(name)}/model`);
  },
  async "save-model"(form) {
    const local = form.elements.choice.value === "local";
    const path = form.elements.path.value.trim();
    if (local && !path) throw new Error("give the folder of a local Hugging Face model");
    const out = await saveSettings({ model: local ? path : form.dataset.defaultModel || "smollm2-135m-instruct" });
    form.querySelector("[data-field=model]").textContent = out.settings.model;
    say("Model saved.", "info");
  },
  async "save-settings"(form) {
    const changes = {};
    for (const el of form.elements) {
      if (!el.name || (el.type === "radio" && !el.checked)) continue;
      changes[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    await saveSettings(changes);
    say("Saved.", "info");
  },
  async "save-train"(form) {
    const train = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.value.trim() === "") continue;
      train[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    showTrainConfig(await saveSettings({ train }));
    say("Training settings saved.", "info");
  },
  async upload(form) {
    const files = form.elements.files.files;
    if (!files.length) throw new Error("choose one or more files first");
    const body = new FormData();
    for (const f of files) body.append("files", f, f.name);
    await call("POST", ROUTES.files(project()), body);
    form.reset();
    await listFiles();
    say(`Uploaded ${files.length} file(s).`, "info");
  },
  async ingest(button) {
    followJob(await call("POST", ROUTES.ingest(project()), { config: jsonOf(button, "config") }));
  },
  async build() {
    followJob(await call("POST", ROUTES.build(project()), { config: {} }));
  },
  async preview(form) {
    const f = form.elements;
    const provider = { preset: f.preset.value, base_url: f.base_url.value.trim(), model: f.model.value.trim() };
    await saveSettings({ provider_preset: provider.preset, provider_base_url: provider.base_url,
                         provider_model: provider.model });
    if (f.api_key.value) {  // kept on the server in a file only its owner reads; never sent back
      const key = await call("POST", ROUTES.providerKey(project()), { api_key: f.api_key.value });
      provider.api_key_file = key.api_key_file;
    }
    f.api_key.value = "";
    followJob(await call("POST", ROUTES.generate(project()), { provider, preview: true, build: false }));
  },
  async "save-example"(button) {
    const row = button.closest("tr");
    const body = {};
    for (const el of row.querySelectorAll("textarea")) body[el.name] = el.value;
    const out = await call("PATCH", ROUTES.example(project(), row.dataset.example), body);
    row.querySelector("[data-field=status]").textContent = `${out.status}${out.edited ? " (edited)" : ""}`;
    say(`Example ${row.dataset.example} saved.`, "info");
  },
  async approve(button) {
    const row = button.closest("tr");
    const out = await call("POST", `${ROUTES.example(project(), row.dataset.example)}/approve`);
    row.querySelector("[data-field=status]").textContent = out.status;
    say(`Example ${row.dataset.example} approved.`, "info");
  },
  async delete(button) {
    const row = button.closest("tr");
    await call("DELETE", ROUTES.example(project(), row.dataset.example));
    say(`Example ${row.dataset.example} deleted.`, "info");
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    if (next) next.querySelector("button, textarea")?.focus();
  },
  async restore(button) {  // on the list of deleted examples: back to the kept ones
    const row = button.closest("tr");
    const out = await call("POST", `${ROUTES.example(project(), row.dataset.example)}/restore`);
    say(`Example ${row.dataset.example} restored (${out.status}).`, "info");
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    if (next) next.querySelector("button")?.focus();
  },
  async rate(select) {
    const row = select.closest("tr");
    const rating = select.value ? Number(select.value) : null;
    await call("POST", `${ROUTES.example(project(), row.dataset.example)}/rate`, { rating });
    say(`Example ${row.dataset.example} rated ${rating ?? "–"}.`, "info");
  },
  async plan(form) {
    const box = document.getElementById("plan");
    box.textContent = "Checking…";
    const result = await call("POST", ROUTES.plan(project()),
      { config: jsonOf(form, "config"), benchmark: form.elements.benchmark.checked });
    renderPlan(box, result);
  },
  async apply(button) {
    showTrainConfig(await saveSettings({ train: jsonOf(button, "changes") }));
    button.disabled = true;
    say("Recommended changes applied: the Train step uses them.", "info");
  },
  async train(button) {
    const ref = await call("POST", ROUTES.runs(project()), { config: jsonOf(button, "config") });
    followJob(ref, { run: ref.run_id });
  },
  async resume(button) {
    followJob(await call("POST", ROUTES.resume(project(), button.dataset.run)), { run: button.dataset.run });
  },
  async "delete-run"(button) {
    const run = button.dataset.run;
    if (!confirm(`Delete run ${run} with its checkpoints, evaluation and exports? This cannot be undone.`)) return;
    button.disabled = true;  // one request per click: a second delete of the same run would race it
    let gone;
    try { gone = await call("DELETE", ROUTES.run(project(), run)); } finally { button.disabled = false; }
    button.closest("tr").remove();
    const url = new URL(location.href);
    if (url.searchParams.get("run") === run) {  // a reload must not ask for the run that is gone
      url.searchParams.delete("run");
      history.replaceState(null, "", url);
    }
    say(`Run ${run} deleted (${freed(gone.bytes)} freed).`, "info");
  },
  async "delete-project"(button) {
    const name = button.dataset.project;
    if (!confirm(`Delete project ${name} with all its files, datasets, runs, exports, chats and memory? This cannot be undone.`)) return;
    button.disabled = true;  // one request per click
    let gone;
    try { gone = await call("DELETE", ROUTES.project(name)); } finally { button.disabled = false; }
    button.closest("tr").remove();
    say(`Project ${name} deleted (${freed(gone.bytes)} freed).`, "info");
    if (!document.querySelector("tr[data-project]")) location.reload();  // the page's "no projects yet"
  },
  async evaluate(button) {
    const answers = Number(document.getElementById("eval-answers").value || 8);
    followJob(await call("POST", ROUTES.evaluate(project(), button.dataset.run), { config: { answers } }),
              { run: button.dataset.run });
  },
  async export(form) {
    const formats = [...form.elements.formats].filter((c) => c.checked).map((c) => c.value);
    followJob(await call("POST", ROUTES.exportRun(project(), form.dataset.run), { config: { formats } }),
              { run: form.dataset.run });
  },
  async cancel(button) {
    const panel = button.closest("[data-job-panel]");
    const out = await call("POST", ROUTES.cancel(panel.dataset.jobId));
    say(out.status === "cancelled" ? "Cancelled." : "Stop requested: it stops at its next step.", "info");
  },
};

// The Hardware page after its settings changed: what a Train start will send, and what a plan checks.
function showTrainConfig(saved) {
  document.getElementById("train-config").textContent = JSON.stringify(saved.train_config, null, 2);
  document.querySelector("[data-action=plan]").dataset.config = JSON.stringify(saved.train_config);
  for (const [key, value] of Object.entries(saved.settings.train)) {
    const field = document.querySelector(`[data-action=save-train] [name="${key}"]`);
    if (field) field.value = value;
  }
}

function renderPlan(box, result) {
  const plan = result.plan || result;
  const changes = plan.changes || {};
  const rows = Object.entries(changes).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("");
  const hw = result.hardware || {};
  const bench = result.benchmark || result.measured;
  box.innerHTML = `
    <p class="${plan.fits ? "ok" : "bad"}"><strong>${plan.fits ? "Fits" : "Does not fit"}</strong>
      on ${esc(hw.device || "this machine")} (${esc(plan.memory_kind || "memory")}).</p>
    <ul class="reasons">${(plan.reasons || []).map((r) => `<li>${esc(r)}</li>`).join("")}</ul>
    ${bench ? `<p>Measured: ${esc(Math.round(bench.tokens_per_s || 0))} tokens/s${bench.eta_s ? `, ETA ${fmtTime(bench.eta_s)}` : ""}.</p>` : ""}
    ${rows ? `<table id="plan-changes"><thead><tr><th scope="col">Setting</th><th scope="col">Recommended</th></tr></thead><tbody>${rows}</tbody></table>
      <button type="button" data-action="apply" data-changes='${esc(JSON.stringify(changes))}'>Apply the recommended changes</button>`
      : "<p>No changes needed.</p>"}`;
}

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fmtTime(s) {
  if (!isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

async function listFiles() {
  const list = document.getElementById("uploaded");
  if (!list) return;
  const files = await call("GET", ROUTES.files(project()));
  list.innerHTML = files.map((f) => `<li>${esc(f.name)} <small>${esc(f.kind || "")}, ${esc(f.size ?? "")} bytes</small></li>`).join("")
    || "<li class=muted>No files uploaded yet.</li>";
}

// --- following a job -------------------------------------------------------------------------
const DONE = new Set(["finished", "failed", "cancelled", "lost"]);

function attach(panel) {
  const id = panel.dataset.jobId;
  const field = (n) => panel.querySelector(`[data-job-field=${n}]`);
  const wasDone = DONE.has(panel.dataset.jobStatus);
  let last = 0;
  // EventSource sends Last-Event-ID itself when it reconnects; ?after= covers a fresh page.
  const source = new EventSource(ROUTES.events(id, last));
  panel.eventSource = source;
  const onEvent = (msg) => {
    const event = JSON.parse(msg.data);
    last = event.seq;
    const p = event.payload || {};
    const line = document.createElement("li");
    line.textContent = `${event.seq} ${event.at.slice(11, 19)} ${event.kind} ${p.message || p.stage || p.error || ""}`;
    field("log").append(line);
    if (event.kind === "progress") {
      if (!wasDone) {  // a finished job's page shows its final state: the replay only fills the log
        if (p.total) field("progress").value = p.done / p.total;
        if (p.message) field("message").textContent = p.message;
      }
      // a finished job's replay redraws its points but must not overwrite the final figures
      document.dispatchEvent(new CustomEvent("ftf:progress", { detail: { ...p, replay: wasDone } }));
    } else if (!wasDone && ["started", "requeued", "retry"].includes(event.kind)) {
      field("status").textContent = event.kind === "started" ? "running" : "queued";
    }
    if (DONE.has(event.kind) && !wasDone) {
      field("status").textContent = event.kind === "lost" ? "failed" : event.kind;
      if (p.error) { field("error").textContent = p.error; field("error").hidden = false; }
      panel.querySelector("[data-action=cancel]")?.setAttribute("hidden", "");
      source.close();
      setTimeout(() => location.reload(), 300);  // the page's results are drawn by the server
    } else if (DONE.has(event.kind)) source.close();
  };
  for (const kind of ["queued", "started", "progress", "result", "finished", "failed", "cancelled", "cancel",
                      "lost", "retry", "requeued", "message"]) source.addEventListener(kind, onEvent);
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) panel.dataset.detached = "1"; };
}

// --- wiring ----------------------------------------------------------------------------------
async function run(name, el) {
  say("");
  el.setAttribute("aria-busy", "true");
  try { await ACTIONS[name](el); } catch (err) { say(err.message || String(err)); } finally { el.removeAttribute("aria-busy"); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-action]");
    if (!form) return;
    e.preventDefault();
    run(form.dataset.action, form);
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button && !button.closest("form[data-action]")) run(button.dataset.action, button);
  });
  document.addEventListener("change", (e) => {
    const select = e.target.closest("select[data-action]");
    if (select) run(select.dataset.action, select);
  });
  document.querySelectorAll("[data-job-panel][data-job-id]").forEach(attach);
  listFiles().catch((err) => say(err.message));
  document.documentElement.dataset.ready = "1";  // actions are wired (tests wait for this)
});

window.ftf = { ROUTES, call, fmtTime };
