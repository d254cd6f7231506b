// The Analytics dashboard: reads GET /api/analytics/dashboard with the caller's token and
// shows it. Every number shown is the API's, as it answered (data-metric names the field).
(function () {
  "use strict";
  const api = (path, token, init) =>
    fetch(path, Object.assign({ headers: { Authorization: "Bearer " + token } }, init || {}));

  function tokenFromPage() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem("flowgrid.token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname);
    }
    return sessionStorage.getItem("flowgrid.token");
  }

  function showError(text) {
    const e = document.getElementById("error");
    e.textContent = text;
    e.style.display = "block";
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function card(parent, label, value, metric) {
    const c = el("div", { class: "card" });
    c.appendChild(el("div", { class: "label" }, label));
    c.appendChild(el("div", { class: "value", "data-metric": metric }, value));
    parent.appendChild(c);
  }

  const fmtRate = (r) => (r === null ? "–" : (r * 100).toFixed(1) + "%");
  const fmtMs = (ms) => (ms === null ? "–" : ms + " ms");

  function render(d) {
    const windows = document.getElementById("windows");
    for (const [key, label] of [["today", "Today"], ["last7Days", "7 days"], ["last30Days", "30 days"]]) {
      const w = d[key];
      card(windows, label + ": runs", w.runs, key + ".runs");
      card(windows, label + ": failures", w.failures, key + ".failures");
      card(windows, label + ": tokens", w.tokens.total, key + ".tokens.total");
      card(windows, label + ": cost (µ$)", w.costMicroUsd, key + ".costMicroUsd");
    }
    const q = document.getElementById("quality");
    const m = d.last30Days;
    card(q, "success rate", fmtRate(m.successRate), "last30Days.successRate");
    card(q, "run duration p50", fmtMs(m.durationMs.p50), "last30Days.durationMs.p50");
    card(q, "run duration p95", fmtMs(m.durationMs.p95), "last30Days.durationMs.p95");
    card(q, "call latency p99", fmtMs(m.latencyMs.p99), "last30Days.latencyMs.p99");

    const b = d.budget;
    const budget = document.getElementById("budget");
    const line = (label, metric, value) => {
      const p = el("div", {}, label + " ");
      p.appendChild(el("span", { "data-metric": metric }, value));
      budget.appendChild(p);
    };
    budget.appendChild(el("div", {}, "plan " + b.plan + ", " + b.month));
    line("spent (µ$):", "budget.spentMicroUsd", b.spentMicroUsd);
    line("budget (µ$):", "budget.budgetMicroUsd", b.budgetMicroUsd === null ? "no limit" : b.budgetMicroUsd);
    if (b.used !== null) {
      const g = el("div", { class: "gauge", role: "meter", "aria-valuenow": String(b.used) });
      const fill = el("div");
      fill.style.width = Math.min(100, b.used * 100) + "%";
      g.appendChild(fill);
      budget.appendChild(g);
    }

    const agents = document.querySelector("#agents tbody");
    for (const a of d.topAgentsByCost) {
      const tr = el("tr", { "data-agent": a.agentId });
      tr.appendChild(el("td", {}, a.agentId));
      tr.appendChild(el("td", { "data-metric": "runs" }, a.runs));
      tr.appendChild(el("td", { "data-metric": "failures" }, a.failures));
      tr.appendChild(el("td", { "data-metric": "costMicroUsd" }, a.costMicroUsd));
      agents.appendChild(tr);
    }
    const models = document.querySelector("#models tbody");
    for (const mo of d.costByModel) {
      const tr = el("tr", { "data-model": mo.model });
      tr.appendChild(el("td", {}, mo.model));
      tr.appendChild(el("td", { "data-metric": "llmCalls" }, mo.llmCalls));
      tr.appendChild(el("td", { "data-metric": "tokens" }, mo.tokens));
      tr.appendChild(el("td", { "data-metric": "costMicroUsd" }, mo.costMicroUsd));
      models.appendChild(tr);
    }

    const xs = d.daily.map((p) => Date.parse(p.date) / 1000);
    const chart = new uPlot(
      {
        width: Math.min(900, document.body.clientWidth - 40),
        height: 260,
        series: [
          {},
          { label: "cost (µ$)", stroke: "#3465a4", scale: "cost" },
          { label: "runs", stroke: "#c4572b", scale: "runs" },
        ],
        axes: [{}, { scale: "cost" }, { scale: "runs", side: 1 }],
      },
      [xs, d.daily.map((p) => p.costMicroUsd), d.daily.map((p) => p.runs)],
      document.getElementById("chart-usage")
    );
    window.__flowgridChart = chart;
    document.getElementById("dashboard").hidden = false;
    document.body.setAttribute("data-loaded", "true");
  }

  async function load(token) {
    const r = await api("/api/analytics/dashboard", token);
    if (r.status === 401) {
      sessionStorage.removeItem("flowgrid.token");
      return signIn("Your session has ended; sign in again.");
    }
    if (!r.ok) return showError("The dashboard could not be loaded (" + r.status + ").");
    render(await r.json());
  }

  function signIn(message) {
    const form = document.getElementById("signin");
    form.hidden = false;
    if (message) showError(message);
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const r = await fetch("/api/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          email: document.getElementById("email").value,
          password: document.getElementById("password").value,
        }),
      });
      if (!r.ok) return showError("Sign-in failed.");
      const t = await r.json();
      sessionStorage.setItem("flowgrid.token", t.accessToken);
      form.hidden = true;
      document.getElementById("error").style.display = "none";
      load(t.accessToken);
    };
  }

  const token = tokenFromPage();
  if (token) load(token);
  else signIn();
})();
