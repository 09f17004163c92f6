"use strict";
// The workers page: one table row per worker, refreshed with every snapshot.
corral.live((update) => {
  corral.replace("workers", ...update.workers.map((w) => corral.el("tr", {},
    corral.el("td", { class: "text" }, w.address),
    corral.el("td", { class: "text" }, w.paused ? `${w.name} (paused)` : w.name),
    corral.el("td", {}, w.nthreads),
    corral.el("td", { class: "text" },
      corral.memoryBar(w, w.memory_limit || Math.max(w.memory, 1))),
    corral.el("td", {}, corral.bytes(w.spilled)),
    corral.el("td", {}, w.memory_limit ? corral.bytes(w.memory_limit) : "none"),
    corral.el("td", {}, w.cpu.toFixed(0)),
    corral.el("td", {}, w.executing),
    corral.el("td", {}, w.queued),
    corral.el("td", {}, w.keys),
    corral.el("td", {}, corral.bytes(w.nbytes)),
    corral.el("td", {}, `${(w.latency * 1000).toFixed(1)} ms`),
    corral.el("td", {}, `${w.last_seen.toFixed(1)} s ago`))));
});
