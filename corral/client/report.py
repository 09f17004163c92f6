"""``performance_report``: what ran during a block, written to one HTML file.

A page of its own (no scripts, no network): per-function and per-worker tables and a
timeline of every task and transfer, from the scheduler's task stream. dask's report
embeds its dashboard's plots; this one needs nothing to view it but a browser.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from typing import Any

from corral.client.extras import TaskStream

_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


class performance_report(TaskStream):
    """``with performance_report(filename="report.html"):`` — the tasks and transfers that
    ran during the block (on the default client, or ``client``), written on exit."""

    def __init__(self, filename: str = "corral-report.html", client: Any = None) -> None:
        super().__init__(client)
        self.filename = filename
        self._began = 0.0

    def __enter__(self) -> performance_report:
        self._began = time.time()
        super().__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self._write()

    async def __aenter__(self) -> performance_report:
        self._began = time.time()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await super().__aexit__(*exc_info)
        self._write()

    def _write(self) -> None:
        with open(self.filename, "w", encoding="utf-8") as f:
            f.write(render(self.data, self._began, time.time()))


def render(records: list[dict[str, Any]], began: float, ended: float) -> str:
    """The report's HTML for task-stream ``records`` of the block ``began`` to ``ended``."""
    by_name: dict[str, list[float]] = defaultdict(list)
    by_worker: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0])
    errors = 0
    for r in records:
        (span,) = r["startstops"]
        seconds = span["stop"] - span["start"]
        row = by_worker[r["worker"]]
        if span["action"] == "transfer":
            row[2] += 1
            row[3] += r["nbytes"]
            continue
        by_name[r["name"]].append(seconds)
        row[0] += 1
        row[1] += seconds
        errors += r["status"] == "error"
    esc = html.escape
    names = "".join(
        f"<tr><td>{esc(str(name))}</td><td>{len(s)}</td><td>{sum(s):.3f}</td>"
        f"<td>{1e3 * sum(s) / len(s):.2f}</td></tr>"
        for name, s in sorted(by_name.items(), key=lambda item: -sum(item[1])))
    workers = "".join(
        f"<tr><td>{esc(w)}</td><td>{n}</td><td>{busy:.3f}</td><td>{moves}</td>"
        f"<td>{moved / 2**20:.1f}</td></tr>"
        for w, (n, busy, moves, moved) in sorted(by_worker.items()))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>corral performance report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}
</style></head><body>
<h1>corral performance report</h1>
<p>{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(began))}, {ended - began:.3f} s:
{sum(len(s) for s in by_name.values())} tasks ({errors} failed) on {len(by_worker)} workers.</p>
<h2>Task stream</h2>{_timeline(records, began, ended)}
<h2>Functions</h2><table><tr><th>function</th><th>tasks</th><th>total s</th>
<th>mean ms</th></tr>{names}</table>
<h2>Workers</h2><table><tr><th>worker</th><th>tasks</th><th>busy s</th><th>transfers</th>
<th>MiB moved in</th></tr>{workers}</table>
</body></html>
"""


def _timeline(records: list[dict[str, Any]], began: float, ended: float) -> str:
    """An SVG row per worker: tasks coloured by function, transfers in red."""
    rows = {w: i for i, w in enumerate(sorted({r["worker"] for r in records}))}
    width, lane = 1000, 24
    scale = width / max(ended - began, 1e-9)
    colors: dict[str, str] = {}
    shapes = []
    for r in records:
        (span,) = r["startstops"]
        x = (span["start"] - began) * scale
        w = max((span["stop"] - span["start"]) * scale, 0.5)
        if span["action"] == "transfer":
            color = "#e15759"
        else:
            color = colors.setdefault(r["name"], _COLORS[len(colors) % len(_COLORS)])
        title = html.escape(f"{r['key']} ({span['action']}, "
                            f"{1e3 * (span['stop'] - span['start']):.2f} ms)")
        shapes.append(f'<rect x="{x:.1f}" y="{rows[r["worker"]] * lane}" width="{w:.1f}" '
                      f'height="{lane - 4}" fill="{color}"><title>{title}</title></rect>')
    labels = "".join(f"<li>{html.escape(w)}</li>" for w in rows)
    return (f'<svg width="{width}" height="{max(len(rows), 1) * lane}" '
            f'style="border:1px solid #ccc">{"".join(shapes)}</svg><ol start="0">{labels}</ol>')
