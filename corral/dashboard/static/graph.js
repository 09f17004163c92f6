"use strict";
// The graph page: tasks in columns by depth, edges from inputs, coloured by state.
const STATE_COLOURS = {
  waiting: "#ccc", "no-worker": "#f0c36d", queued: "#b9c7d6", processing: "#1f6fb2", memory: "#2a7d2a",
  erred: "#c0392b",
};
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function layout(graph) {
  const inputs = graph.nodes.map(() => []);
  for (const [from, to] of graph.edges) inputs[to].push(from);
  const depth = new Array(graph.nodes.length).fill(-1);
  const depthOf = (i) => {  // iterative, so long chains cannot overflow the stack
    const stack = [i];
    while (stack.length) {
      const n = stack[stack.length - 1];
      const pending = inputs[n].filter((d) => depth[d] < 0 && !stack.includes(d));
      if (pending.length) { stack.push(...pending); continue; }
      depth[n] = 1 + Math.max(-1, ...inputs[n].map((d) => depth[d]));
      stack.pop();
    }
    return depth[i];
  };
  graph.nodes.forEach((_, i) => depthOf(i));
  const columns = [];
  depth.forEach((d, i) => (columns[d] = columns[d] || []).push(i));
  return { depth, columns };
}

function draw(graph) {
  const canvas = document.getElementById("graph");
  const { columns } = layout(graph);
  const width = 1200;
  const height = Math.max(600, ...columns.map((c) => c.length * 14));
  canvas.setAttribute("height", height);
  const pos = [];
  columns.forEach((column, d) => column.forEach((i, row) => {
    pos[i] = [40 + (d * (width - 80)) / Math.max(columns.length - 1, 1),
              ((row + 1) * height) / (column.length + 1)];
  }));
  const edges = graph.edges.map(([a, b]) => svg("line", {
    x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1], stroke: "#bbb",
  }));
  const nodes = graph.nodes.map((node, i) => {
    const link = document.createElementNS(SVG, "a");
    link.setAttribute("href", `/task?key=${encodeURIComponent(node.key)}`);
    const dot = svg("circle", { cx: pos[i][0], cy: pos[i][1], r: 5,
                                fill: STATE_COLOURS[node.state] || "#888" });
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${node.key} (${node.state})`;
    dot.append(title);
    link.append(dot);
    return link;
  });
  canvas.replaceChildren(...edges, ...nodes);
  document.getElementById("graph-note").textContent = graph.truncated
    ? `(first ${graph.nodes.length} of ${graph.total} tasks)` : `(${graph.total} tasks)`;
}

corral.poll("/api/graph", 2, (graph) => { if (graph) draw(graph); });
