"""``foundation status | scale | restart | drain | resume``: talk to a node's control service.

Every command takes ``--node`` to reach any node of the cluster over NATS.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from broker import encode
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.control import request


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="pools, workers, pids, RSS, processed counts, consumer lag")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    p.set_defaults(func=lambda a: _call(a, "status", {}, _print_status))

    p = sub.add_parser("scale", help="resize a pool live (scaling down drains the removed workers)")
    p.add_argument("pool")
    p.add_argument("size", type=int)
    _common(p)
    p.set_defaults(func=lambda a: _call(a, "scale", {"pool": a.pool, "size": a.size}, _print_json))

    p = sub.add_parser("restart", help="restart a pool's workers, or one slot (POOL.N)")
    p.add_argument("target", help="a pool name, or a slot id like echo.0")
    _common(p)
    p.set_defaults(func=lambda a: _call(a, "restart", _restart_args(a.target), _print_json))

    p = sub.add_parser("drain", help="stop fetching and finish in-flight tasks; workers stay stopped until resume")
    p.add_argument("pool", nargs="?", help="the pool (default: every pool of the node)")
    _common(p, timeout=120.0)
    p.set_defaults(func=lambda a: _call(a, "drain", _pool_args(a.pool), _print_json))

    p = sub.add_parser("resume", help="start the workers of drained pools again")
    p.add_argument("pool", nargs="?", help="the pool (default: every pool of the node)")
    _common(p)
    p.set_defaults(func=lambda a: _call(a, "resume", _pool_args(a.pool), _print_json))


def _common(p: argparse.ArgumentParser, timeout: float = 30.0) -> None:
    add_client_options(p)
    p.add_argument("--node", help="the node to ask (default: this host's node name)")
    p.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait for the reply (default {timeout:g})")


def _pool_args(pool: str | None) -> dict[str, str]:
    return {"pool": pool} if pool else {}


def _restart_args(target: str) -> dict[str, str]:
    head, _, tail = target.rpartition(".")
    return {"slot": target} if head and tail.isdigit() else {"pool": target}


def _call(args: argparse.Namespace, endpoint: str, body: dict[str, Any], show: Any) -> int:
    cfg = load(args)

    async def go() -> Any:
        nc = await connect_client(args, cfg, f"foundation {endpoint}")
        try:
            return await request(nc, args.node or cfg.node.name, endpoint, body, timeout=args.timeout)
        finally:
            await nc.close()

    reply = asyncio.run(go())
    show(reply, args)
    return 0


def _print_json(reply: Any, _args: Any) -> None:
    print(encode(reply).decode())


def _print_status(reply: dict[str, Any], args: Any) -> None:
    if args.json:
        return _print_json(reply, args)
    print(f"node {reply['node']}  nats {reply['nats']}  up {reply['uptime_s']:.0f}s")
    for name, pool in reply["pools"].items():
        c = pool["consumer"]
        lag = "?" if "error" in c else f"pending {c['pending']} in-flight {c['ack_pending']} redelivered {c['redelivered']}"
        drained = " (drained)" if pool.get("drained") else ""
        print(f"pool {name}: {pool.get('running', pool['size'])}/{pool['size']} workers{drained}, processed {pool['processed']}, {lag}")
        for w in pool["workers"]:
            rss = f"{w['rss_mb']:.1f} MB" if "rss_mb" in w else "-"
            up = f"{w['uptime_s']:.0f}s" if "uptime_s" in w else "-"
            print(f"  {w['id']:<16} pid {w['pid'] or '-':<8} rss {rss:<10} up {up}")
