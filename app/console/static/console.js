// Flywheel console: the little that needs script.  Served by Flywheel itself (no CDN).
"use strict";

// Forms that change what is served ask first.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Rows of queued or running runs follow the run without a reload.
function describeProgress(run) {
  const p = run.progress || {};
  if (p.stage) return p.stage;
  if (p.step !== undefined) {
    let text = `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.total_steps}`;
    if (p.loss !== null && p.loss !== undefined) text += `, loss ${Number(p.loss).toFixed(4)}`;
    return text;
  }
  return run.status === "queued" ? "waiting for a worker" : "—";
}

async function follow(row) {
  const url = row.dataset.runStatus;
  try {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const run = await response.json();
    const status = row.querySelector("[data-field=status]");
    status.textContent = run.status;
    status.className = `badge ${run.status}`;
    row.querySelector("[data-field=progress]").textContent = describeProgress(run);
    if (run.verdict || run.reason) {
      row.querySelector("[data-field=verdict]").textContent = [run.verdict, run.reason].filter(Boolean).join(" — ");
    }
    if (run.status !== "queued" && run.status !== "running") {
      delete row.dataset.runStatus;
    }
  } catch (err) {
    // the server is restarting or the network blinked: try again at the next tick
  }
}

setInterval(() => {
  document.querySelectorAll("[data-run-status]").forEach(follow);
}, 1000);
