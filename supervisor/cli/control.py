"""``foundation status | scale | restart | drain | resume``: talk to a node's control service.

Every command takes ``--node`` to reach any node of the cluster over NATS,
prints a table (``--json``: the node's reply as it is), and exits 5 when no
node answers (:mod:`supervisor.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option, emit, table
from supervisor.control import request


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="pools, workers, pids, RSS, processed counts, consumer lag")
    _common(p, timeout=10.0)
    p.set_defaults(func=lambda a: _call(a, "status", {}, status_text))

    p = sub.add_parser("scale", help="resize a pool live (scaling down drains the removed workers)")
    p.add_argument("pool", help="the pool to resize")
    p.add_argument("size", type=int, help="its new number of workers: 1 up to its max_size (or what "
                   "supervisor.max_workers allows); to stop all of them, drain the pool")
    _common(p, timeout=120.0)
    p.set_defaults(func=lambda a: _call(a, "scale", {"pool": a.pool, "size": a.size}, _scale_text))

    p = sub.add_parser("restart", help="restart a pool's workers one at a time, or one slot (POOL.N)")
    p.add_argument("target", help="a pool name, or a slot id like echo.0")
    _common(p, timeout=120.0)
    p.set_defaults(func=lambda a: _call(a, "restart", _restart_args(a.target), _restart_text))

    p = sub.add_parser("drain", help="stop fetching and finish in-flight tasks; workers stay stopped until resume")
    p.add_argument("pool", nargs="?", help="the pool (default: every pool of the node)")
    _common(p, timeout=120.0)
    p.set_defaults(func=lambda a: _call(a, "drain", _pool_args(a.pool), _drain_text))

    p = sub.add_parser("resume", help="start the workers of drained pools again")
    p.add_argument("pool", nargs="?", help="the pool (default: every pool of the node)")
    _common(p, timeout=60.0)
    p.set_defaults(func=lambda a: _call(a, "resume", _pool_args(a.pool), _resume_text))


def _common(p: argparse.ArgumentParser, timeout: float) -> None:
    add_client_options(p)
    add_json_option(p)
    p.add_argument("--node", help="the node to ask (default: node.name of the config, this host's name)")
    p.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait for the reply (default {timeout:g})")


def _pool_args(pool: str | None) -> dict[str, str]:
    return {"pool": pool} if pool else {}


def _restart_args(target: str) -> dict[str, str]:
    head, _, tail = target.rpartition(".")
    return {"slot": target} if head and tail.isdigit() else {"pool": target}


def _call(args: argparse.Namespace, endpoint: str, body: dict[str, Any], text: Callable[[Any], str]) -> int:
    cfg = load(args)

    async def go() -> Any:
        nc = await connect_client(args, cfg, f"foundation {endpoint}")
        try:
            return await request(nc, args.node or cfg.node.name, endpoint, body, timeout=args.timeout)
        finally:
            await nc.close()

    emit(asyncio.run(go()), args, text)
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _pool_state(pool: dict[str, Any]) -> str:
    if pool.get("drained"):
        return "drained"
    return "running" if pool.get("running", 0) == pool["size"] else "starting"


def status_text(reply: dict[str, Any]) -> str:
    lines = [f"node {reply['node']}  nats {reply['nats']}  up {_duration(reply['uptime_s'])}", ""]
    pools = reply["pools"]
    if not pools:
        return "\n".join([*lines, "no pools on this node"])
    rows = []
    for name, pool in pools.items():
        c = pool["consumer"]
        rss = sum(w.get("rss_mb", 0.0) for w in pool["workers"])
        rows.append([name, f"{pool.get('running', pool['size'])}/{pool['size']}", _pool_state(pool),
                     c.get("pending"), c.get("ack_pending"), pool.get("processed", 0), pool.get("failed", 0),
                     pool.get("restarts", 0), round(rss, 1)])
    lines.append(table(["POOL", "WORKERS", "STATE", "WAITING", "IN FLIGHT", "PROCESSED", "FAILED", "RESTARTS", "RSS MB"], rows))
    for name, pool in pools.items():
        workers = [[w["id"], w["pid"], w.get("rss_mb"), _duration(w.get("uptime_s")) if w["running"] else "stopped"]
                   for w in pool["workers"]]
        if workers:
            lines += ["", table(["WORKER", "PID", "RSS MB", "UP"], workers)]
    return "\n".join(lines)


def _scale_text(reply: dict[str, Any]) -> str:
    head = f"pool {reply['pool']}: {reply['size']} worker(s)"
    removed = reply.get("removed") or {}
    if not removed:
        return head
    return "\n".join([head, "", table(["REMOVED", "HOW IT ENDED"], sorted(removed.items()))])


def _restart_text(reply: dict[str, Any]) -> str:
    return table(["RESTARTED"], [[slot] for slot in reply["restarted"]])


def _drain_text(reply: dict[str, Any]) -> str:
    rows = [[pool, slot, how] for pool, slots in reply["drained"].items() for slot, how in sorted(slots.items())]
    if not rows:
        return "no running worker to drain"
    return table(["POOL", "WORKER", "HOW IT ENDED"], rows) + "\nthe workers stay stopped until `foundation resume`"


def _resume_text(reply: dict[str, Any]) -> str:
    rows = [[pool, ", ".join(slots) or "-"] for pool, slots in reply["resumed"].items()]
    return table(["POOL", "STARTED"], rows)
