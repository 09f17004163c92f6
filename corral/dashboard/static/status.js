"use strict";
// The status page: summary cards, per-worker bars, task stream, progress per function.
const WINDOW = 30; // seconds of task stream shown
let records = []; // [kind, key, name, worker, start, stop, nbytes]

function renderSummary(s) {
  const card = (label, value, id) =>
    corral.el("div", { class: "card" }, corral.el("b", id ? { id } : {}, value), label);
  corral.replace("summary",
    card("workers", s.workers), card("threads", s.threads),
    card("finished", s.finished, "finished-count"), card("processing", s.tasks.processing),
    card("waiting", s.tasks.waiting + s.tasks["no-worker"]), card("queued", s.tasks.queued), card("erred", s.erred),
    card("in memory", corral.bytes(s.memory_bytes)),
    card("transferred", corral.bytes(s.transferred_bytes)));
}

function renderWorkers(workers) {
  const rows = workers.map((w) => {
    const limit = w.memory_limit || Math.max(...workers.map((x) => x.memory), 1);
    return corral.el("tr", {},
      corral.el("td", { class: "text" }, w.name),
      corral.el("td", {}, corral.memoryBar(w, limit)),
      corral.el("td", {}, corral.bar(w.cpu / (100 * w.nthreads), `${w.cpu.toFixed(0)} %`,
        "#e8a33d")),
      corral.el("td", {}, corral.bar(w.executing / w.nthreads,
        `${w.executing} / ${w.queued}`, "#6cbf6c")),
      corral.el("td", {}, `${w.keys} keys, ${corral.bytes(w.nbytes)}`));
  });
  corral.replace("worker-bars", ...rows);
}

function drawStream(now, workers) {
  const canvas = document.getElementById("stream");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rows = workers.map((w) => w.address);
  const rowHeight = canvas.height / Math.max(rows.length, 1);
  const left = 0;
  const x = (t) => left + ((t - (now - WINDOW)) / WINDOW) * (canvas.width - left);
  const names = new Set();
  for (const [kind, , name, worker, start, stop] of records) {
    const row = rows.indexOf(worker);
    if (row < 0 || stop < now - WINDOW) continue;
    const width = Math.max(x(stop) - x(start), 1);
    if (kind === "transfer") {
      ctx.fillStyle = "rgba(220, 40, 40, 0.7)";
      ctx.fillRect(x(start), row * rowHeight + rowHeight * 0.75, width, rowHeight * 0.2);
    } else {
      ctx.fillStyle = kind === "erred" ? "#000" : corral.colour(name);
      ctx.fillRect(x(start), row * rowHeight + 2, width, rowHeight * 0.7);
      names.add(name);
    }
  }
  ctx.fillStyle = "#333";
  rows.forEach((address, i) => ctx.fillText(address, 4, i * rowHeight + 12));
  corral.replace("legend", ...[...names].sort().map((name) =>
    corral.el("span", {}, corral.el("i", { style: { background: corral.colour(name) } }),
      name)));
}

function renderProgress(rows) {
  corral.replace("progress", ...rows.map((r) => {
    const done = Math.max(r.finished, r.memory); // finished so far, held or released
    const total = Math.max(done + r.processing + r.waiting + r.erred, 1);
    const part = (n, colour, opacity = 1) => corral.el("div", {
      style: { width: `${(100 * n) / total}%`, background: colour, opacity },
    });
    return corral.el("tr", {},
      corral.el("td", { class: "text" }, r.name),
      corral.el("td", { class: "text" }, corral.el("div", { class: "stack" },
        part(done - r.memory, corral.colour(r.name), 0.45), part(r.memory, corral.colour(r.name)),
        part(r.processing, "#1f6fb2"), part(r.waiting, "#ccc"), part(r.erred, "#c0392b"))),
      corral.el("td", {}, `${done} / ${total}`),
      corral.el("td", {}, `${r.memory} in memory, ${r.processing} processing, `
        + `${r.waiting} waiting, ${r.erred} erred`));
  }));
}

function renderRecent() {
  const done = records.filter((r) => r[0] !== "transfer").slice(-10).reverse();
  corral.replace("recent", ...done.map(([kind, key, name, worker]) =>
    corral.el("li", {}, corral.taskLink(key), ` ${kind} on ${worker}`)));
}

corral.live((update) => {
  records = records.concat(update.stream).slice(-20000);
  renderSummary(update.summary);
  renderWorkers(update.workers);
  drawStream(update.time, update.workers);
  renderProgress(update.progress);
  renderRecent();
});
