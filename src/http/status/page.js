// healthgate status page: polls /status.json and redraws the tables. Every string is set as
// text (textContent), never parsed as markup. No external code.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function ago(now, ms) {
    if (ms === null || ms === undefined) return "—";
    const s = Math.max(0, Math.floor((now - ms) / 1000));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }

  function sparkline(values) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", "120");
    svg.setAttribute("height", "20");
    svg.setAttribute("viewBox", "0 0 120 20");
    if (values.length < 2) return svg;
    const max = Math.max(1, ...values);
    const step = 120 / (values.length - 1);
    const points = values
      .map((v, i) => (i * step).toFixed(1) + "," + (20 - (v / max) * 18).toFixed(1))
      .join(" ");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1");
    line.setAttribute("points", points);
    svg.appendChild(line);
    return svg;
  }

  // " override until T" (and the reason, when the caller may see it) under a forced health.
  function forced(td, o, now) {
    if (!o) return;
    const note = document.createElement("small");
    note.className = "override";
    note.textContent =
      " override until " + new Date(o.until).toISOString().slice(0, 19) + "Z" + (o.reason ? ": " + o.reason : "");
    td.appendChild(note);
  }

  function services(body, list, now) {
    const rows = list.map((s) => {
      const row = document.createElement("tr");
      row.className = "h-" + s.health;
      const name = s.name === "" ? '"" (server)' : s.name;
      row.dataset.name = name;
      cell(row, name);
      forced(cell(row, s.health), s.override, now);
      cell(row, s.serving ? "SERVING" : "NOT_SERVING");
      cell(row, s.deciding.join(", "));
      cell(row, s.dependencies.map((d) => d[0] + " (" + d[1] + ")").join(", "));
      return row;
    });
    body.replaceChildren(...rows);
  }

  function dependencies(body, list, reasons, now) {
    const rows = list.map((d) => {
      const row = document.createElement("tr");
      row.className = "h-" + d.health;
      row.dataset.name = d.name;
      const name = cell(row, d.name + " ");
      const kind = document.createElement("small");
      kind.textContent = d.kind;
      name.appendChild(kind);
      if (d.chain) {
        // The root cause: "orders → gateway".
        const chain = document.createElement("small");
        chain.className = "chain";
        chain.textContent = " " + d.chain;
        name.appendChild(chain);
      }
      if (d.certificate_expires) {
        const cert = document.createElement("small");
        cert.className = "cert";
        cert.textContent = " certificate until " + new Date(d.certificate_expires).toISOString().slice(0, 19) + "Z";
        name.appendChild(cert);
      }
      forced(cell(row, d.health), d.override, now);
      cell(row, d.latency_ms === null ? "—" : d.latency_ms.toFixed(1) + " ms");
      const reason = reasons
        ? d.reason || ""
        : d.health === "healthy"
          ? ""
          : "reason withheld";
      cell(row, reason);
      cell(row, ago(now, d.since));
      const transitions = cell(row, "");
      d.transitions.slice(0, 5).forEach((t, i) => {
        if (i > 0) transitions.appendChild(document.createElement("br"));
        transitions.appendChild(
          document.createTextNode(t.from + " → " + t.to + " " + ago(now, t.at)),
        );
      });
      cell(row, "").appendChild(sparkline(d.latencies));
      return row;
    });
    body.replaceChildren(...rows);
  }

  function render(state) {
    const now = Date.now();
    const overall = state.services.find((s) => s.name === "");
    const health = overall ? overall.health : "unknown";
    const o = document.getElementById("overall");
    o.className = "h-" + health;
    o.textContent = health + (state.shutting_down ? " · draining" : "");
    document.getElementById("generation").textContent = String(state.generation);
    document.getElementById("updated").textContent =
      "updated " + new Date(now).toLocaleTimeString();
    services(document.querySelector("#services tbody"), state.services, now);
    dependencies(document.querySelector("#dependencies tbody"), state.dependencies, state.reasons, now);
  }

  let delay = 2000;
  async function poll() {
    try {
      const response = await fetch("/status.json", { cache: "no-store" });
      if (response.ok) {
        const state = await response.json();
        delay = state.poll_ms || delay;
        render(state);
      } else {
        document.getElementById("updated").textContent = "update failed: HTTP " + response.status;
      }
    } catch (e) {
      document.getElementById("updated").textContent = "update failed: " + e;
    }
    setTimeout(poll, delay);
  }

  document.addEventListener("DOMContentLoaded", poll);
})();
