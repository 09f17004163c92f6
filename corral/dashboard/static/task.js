"use strict";
// The task page: state, placement, neighbours and error of one key, polled each second.
const key = new URLSearchParams(location.search).get("key") || "";
document.getElementById("title").textContent = `Task ${key}`;

function neighbours(tasks) {
  if (!tasks.length) return "none";
  return corral.el("ul", {}, ...tasks.map((t) => corral.el("li", {}, corral.taskLink(t.key),
    " ", corral.el("span", { class: `state-${t.state}` }, t.state))));
}

corral.poll(`/api/task?key=${encodeURIComponent(key)}`, 1, (task, response) => {
  if (!task) {
    const why = response && response.status === 404
      ? "The scheduler no longer knows this task: it finished and no one holds it, or it "
        + "was never submitted."
      : "Could not reach the dashboard.";
    corral.replace("detail", corral.el("p", {}, why));
    return;
  }
  const row = (label, value) => corral.el("tr", {},
    corral.el("th", { class: "text" }, label), corral.el("td", { class: "text" }, value));
  const parts = [corral.el("table", { id: "task-fields" },
    row("state", corral.el("span", { class: `state-${task.state}`, id: "task-state" },
      task.state)),
    row("function", task.name),
    row("processing on", task.worker || "–"),
    row("held by", task.who_has.join(", ") || "–"),
    row("result", task.type ? `${task.type}, ${corral.bytes(task.nbytes)}` : "–"),
    row("wanted by", task.wanted_by.join(", ") || "no client"),
    row("dependencies", neighbours(task.dependencies)),
    row("dependents", neighbours(task.dependents)))];
  if (task.exception) {
    parts.push(corral.el("h2", {}, "Error"), corral.el("pre", {}, task.exception),
      corral.el("pre", {}, task.traceback || ""));
  }
  parts.push(corral.el("h2", {}, "Transitions"), corral.el("table", {},
    ...task.story.map(([from, to, why]) => corral.el("tr", {},
      corral.el("td", { class: "text" }, `${from} → ${to}`),
      corral.el("td", { class: "text" }, why)))));
  corral.replace("detail", ...parts);
});
