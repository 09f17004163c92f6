"use strict";
// Helpers shared by the dashboard's pages: live updates, elements, colours, units.
const corral = {
  // Calls onUpdate with each snapshot the scheduler pushes; reconnects if the link drops.
  live(onUpdate) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    const status = document.getElementById("conn");
    ws.onopen = () => { if (status) status.textContent = ""; };
    ws.onmessage = (event) => onUpdate(JSON.parse(event.data));
    ws.onclose = () => {
      if (status) status.textContent = "disconnected, retrying…";
      setTimeout(() => corral.live(onUpdate), 1000);
    };
  },

  // Polls a JSON endpoint every `seconds`; onData(null, response) on an HTTP error.
  poll(url, seconds, onData) {
    const once = async () => {
      try {
        const response = await fetch(url);
        onData(response.ok ? await response.json() : null, response);
      } catch (error) {
        onData(null, null);
      }
    };
    once();
    return setInterval(once, seconds * 1000);
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "style") Object.assign(node.style, value);
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  },

  taskLink(key) {
    return corral.el("a", { href: `/task?key=${encodeURIComponent(key)}` }, key);
  },

  // A horizontal bar: `fraction` of it filled, with a label on top.
  bar(fraction, label, colour = "#5b9bd5") {
    const width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
    return corral.el("div", { class: "bar" },
      corral.el("div", { style: { width, background: colour } }),
      corral.el("span", {}, label));
  },

  // A worker's memory against its limit, split: managed data (in memory), the rest of
  // the process (unmanaged) and data spilled to disk (grey); orange once paused.
  memoryBar(w, limit) {
    const part = (n, colour) => corral.el("div", {
      style: { width: `${Math.max(0, Math.min(1, n / limit)) * 100}%`, background: colour },
    });
    const managed = Math.min(w.managed, w.memory);
    return corral.el("div", { class: "bar memory", title: `${corral.bytes(managed)} managed, `
        + `${corral.bytes(w.memory - managed)} unmanaged, ${corral.bytes(w.spilled)} spilled` },
      corral.el("div", { class: "stack" },
        part(managed, w.paused ? "#e8a33d" : "#5b9bd5"),
        part(w.memory - managed, w.paused ? "#f5d29c" : "#a9c8ea"), part(w.spilled, "#999")),
      corral.el("span", {}, corral.bytes(w.memory)
        + (w.spilled ? ` + ${corral.bytes(w.spilled)} on disk` : "")));
  },

  // A stable colour per function name.
  colour(name) {
    let hash = 0;
    for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) | 0;
    return `hsl(${Math.abs(hash) % 360}, 60%, 55%)`;
  },

  bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  },

  replace(id, ...children) {
    document.getElementById(id).replaceChildren(...children);
  },
};
