"""What ``foundation top`` shows, from two successive samples of the cluster (pure functions).

A sample is ``{"time": seconds, "nodes": {node: status reply}, "agents":
{node: {pool: {status: count}}}}``; status replies come from the nodes'
control services (:mod:`supervisor.endpoints`), agent counts from the
registry. Rates and latency percentiles are over the interval between the
previous sample and this one: tasks/s from the growth of each pool's
processed counter, p50/p99 of handler time from the growth of its
handler-time histogram (interpolated within a bucket, as Prometheus'
``histogram_quantile`` does). Everything fits an 80-column terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

WIDTH = 80
# (header, width, right-aligned)
COLUMNS = (("POOL", 10, False), ("WORKERS", 7, True), ("DONE", 8, True), ("TASKS/S", 7, True),
           ("P50ms", 6, True), ("P99ms", 6, True), ("BACKLOG", 7, True), ("INFLT", 5, True),
           ("RSTRT", 5, True), ("RSS_MB", 6, True))


def quantile(q: float, buckets: Sequence[Sequence[Any]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[[upper, count], ...]`` (seconds), or None if empty."""
    if not buckets or not buckets[-1][1]:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0
    for upper, count in buckets:
        if count >= rank:
            if upper == "+Inf":
                return lower  # beyond the last bound: the best we know
            inside = count - below
            return lower + (float(upper) - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = (float(upper) if upper != "+Inf" else lower), count
    return lower


def _delta(now: Sequence[Sequence[Any]], before: Sequence[Sequence[Any]] | None) -> list[list[Any]]:
    if not before:
        return [list(b) for b in now]
    was = {str(b[0]): b[1] for b in before}
    return [[b[0], max(b[1] - was.get(str(b[0]), 0), 0)] for b in now]


def pool_rows(sample: dict[str, Any], previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per (node, pool): the figures shown, with rates over the last interval."""
    rows = []
    for node, status in sorted(sample["nodes"].items()):
        before = ((previous or {}).get("nodes") or {}).get(node, {}).get("pools", {})
        elapsed = status.get("time", 0) - ((previous or {}).get("nodes") or {}).get(node, {}).get("time", 0)
        for name, pool in sorted(status["pools"].items()):
            was = before.get(name)
            rate = None
            if was is not None and elapsed > 0:
                rate = max(pool.get("processed", 0) - was.get("processed", 0), 0) / elapsed
            hist = _delta(pool.get("duration_buckets", []), was.get("duration_buckets") if was else None)
            p50, p99 = quantile(0.5, hist), quantile(0.99, hist)
            consumer = pool.get("consumer", {})
            rows.append({
                "node": node, "pool": name, "size": pool["size"], "running": pool.get("running", 0),
                "drained": pool.get("drained", False), "processed": pool.get("processed", 0), "rate": rate,
                "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000,
                "backlog": consumer.get("pending"), "in_flight": consumer.get("ack_pending"),
                "restarts": pool.get("restarts", 0),
                "rss_mb": round(sum(w.get("rss_mb", 0.0) for w in pool.get("workers", [])), 1),
                "agents": sample.get("agents", {}).get(node, {}).get(name, {}),
            })
    return rows


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits:
        return f"{value:,.{digits}f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def _cells(row: dict[str, Any]) -> list[str]:
    workers = "drained" if row["drained"] else f"{row['running']}/{row['size']}"
    return [row["pool"], workers, _num(row["processed"]), _num(row["rate"]), _num(row["p50_ms"], 1),
            _num(row["p99_ms"], 1), _num(row["backlog"]), _num(row["in_flight"]), _num(row["restarts"]),
            _num(row["rss_mb"])]


def _line(cells: Sequence[str]) -> str:
    parts = []
    for cell, (_, width, right) in zip(cells, COLUMNS, strict=True):
        cell = cell if len(cell) <= width else cell[: width - 1] + "~"
        parts.append(cell.rjust(width) if right else cell.ljust(width))
    return " ".join(parts).rstrip()


def render(sample: dict[str, Any], previous: dict[str, Any] | None, *, height: int = 24,
           error: str = "") -> list[str]:
    """The screen: a title, per node a line and its pools' rows, a total; at most ``height`` lines."""
    rows = pool_rows(sample, previous)
    nodes = sample["nodes"]
    clock = time.strftime("%H:%M:%S", time.localtime(sample["time"]))
    lines = [f"foundation top  {len(nodes)} node(s), {len(rows)} pool(s)  {clock}  (q quits)"[:WIDTH]]
    if error:
        lines.append(f"! {error}"[:WIDTH])
    lines.append(_line([c[0] for c in COLUMNS]))
    for node, status in sorted(nodes.items()):
        agents: dict[str, int] = {}
        for counts in sample.get("agents", {}).get(node, {}).values():
            for state, n in counts.items():
                agents[state] = agents.get(state, 0) + n
        who = ", ".join(f"{n} {state}" for state, n in sorted(agents.items())) or "none"
        lines.append(f"node {node}  up {int(status.get('uptime_s', 0))}s  agents: {who}"[:WIDTH])
        lines += [_line(_cells(r)) for r in rows if r["node"] == node]
        if not status["pools"]:
            lines.append("  (no pools)")
    rates = [r["rate"] for r in rows if r["rate"] is not None]
    total = (f"total  {_num(sum(rates)) if rates else '-'} tasks/s  backlog {sum(r['backlog'] or 0 for r in rows):,}  "
             f"in flight {sum(r['in_flight'] or 0 for r in rows):,}  restarts {sum(r['restarts'] for r in rows):,}")
    lines.append(total[:WIDTH])
    if len(lines) > height:
        lines = lines[: height - 1] + [f"... {len(lines) - height + 1} more line(s); widen or use --node"[:WIDTH]]
    return lines
