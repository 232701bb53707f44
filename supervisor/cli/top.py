"""``foundation top``: a live view of the cluster's nodes and pools, refreshed every second.

Every second it asks each node's control service for ``status`` (nodes are
found with ``$SRV.PING`` of the ``foundation`` service, or named with
``--node``) and the registry for the agents' states, and draws what
:mod:`supervisor.cli.topview` makes of the last two samples: per pool its
workers, tasks done, tasks/s, p50/p99 handler time, backlog, in flight,
restarts and RSS. It fits an 80-column terminal and needs nothing but
curses, so it works over SSH and in tmux. ``q`` (or Ctrl-C) quits.

``--once`` prints one screen of plain text (rates over ``--interval``) and
exits; with ``--json`` the rows themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import curses
import sys
import time
from typing import Any

from broker import decode, encode
from protocols.registry import QUERY_SUBJECT
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option
from supervisor.cli.topview import pool_rows, render
from supervisor.control import ControlError, request

DISCOVER_EVERY = 5  # refreshes between looking for nodes that joined or left
PING_WINDOW = 0.5  # seconds to collect $SRV.PING replies


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="live view of nodes and pools: throughput, latency, backlog, restarts, RSS")
    p.add_argument("--node", help="show only this node (default: every node that answers $SRV.PING)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one screen (or --json rows) and exit")
    add_json_option(p)
    add_client_options(p)
    p.set_defaults(func=run)


async def discover(nc: Any) -> list[str]:
    """Names of the nodes whose control service answers ``$SRV.PING.foundation``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    names: set[str] = set()
    try:
        await nc.publish("$SRV.PING.foundation", b"", reply=inbox)
        deadline = time.monotonic() + PING_WINDOW
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:  # the window closed
                break
            node = (decode(msg.data).get("metadata") or {}).get("node")
            if node:
                names.add(node)
    finally:
        await sub.unsubscribe()
    return sorted(names)


async def _agents(nc: Any) -> dict[str, dict[str, dict[str, int]]]:
    """node -> pool -> agent state -> count, from the registry (empty if no node answers)."""
    try:
        reply = decode((await nc.request(QUERY_SUBJECT, encode({"op": "ls"}), timeout=2)).data)
    except Exception:  # no registry answer this time: show the rest
        return {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for e in reply.get("entries", []):
        states = counts.setdefault(e["node"], {}).setdefault(e["pool"], {})
        states[e["status"]] = states.get(e["status"], 0) + 1
    return counts


async def sample(nc: Any, names: list[str]) -> tuple[dict[str, Any], str]:
    """One sample of the named nodes, and a line about any that did not answer."""
    replies = await asyncio.gather(*(request(nc, n, "status", timeout=2) for n in names), return_exceptions=True)
    nodes = {n: r for n, r in zip(names, replies, strict=True) if not isinstance(r, BaseException)}
    silent = [f"{n}: {r}" for n, r in zip(names, replies, strict=True) if isinstance(r, BaseException)]
    error = "; ".join(silent) if silent else ("" if names else "no node answers $SRV.PING; is `foundation up` running?")
    return {"time": time.time(), "nodes": nodes, "agents": await _agents(nc)}, error


def run(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise ControlError("--interval must be positive")
    cfg = load(args)
    if args.once:
        return asyncio.run(_once(args, cfg))
    if not sys.stdout.isatty():
        raise ControlError("foundation top needs a terminal; use --once (and --json) in scripts", 400)
    return curses.wrapper(lambda screen: asyncio.run(_live(screen, args, cfg)))


async def _once(args: argparse.Namespace, cfg: Any) -> int:
    nc = await connect_client(args, cfg, "foundation top")
    try:
        names = [args.node] if args.node else await discover(nc)
        first, _ = await sample(nc, names)
        await asyncio.sleep(args.interval)  # the rates are over this interval
        second, error = await sample(nc, names)
    finally:
        await nc.close()
    if args.json:
        print(encode({"time": second["time"], "rows": pool_rows(second, first), "error": error}).decode())
    else:
        print("\n".join(render(second, first, height=10_000, error=error)))
    return 0 if second["nodes"] else 5


async def _live(screen: Any, args: argparse.Namespace, cfg: Any) -> int:
    curses.curs_set(0)
    screen.nodelay(True)
    quit_ = asyncio.Event()
    loop = asyncio.get_running_loop()

    def keys() -> None:
        while (key := screen.getch()) != -1:
            if key in (ord("q"), ord("Q")):
                quit_.set()

    loop.add_reader(sys.stdin.fileno(), keys)
    nc = await connect_client(args, cfg, "foundation top")
    try:
        names: list[str] = []
        previous: dict[str, Any] | None = None
        refreshes = 0
        while not quit_.is_set():
            if args.node:
                names = [args.node]
            elif refreshes % DISCOVER_EVERY == 0 or not names:
                names = await discover(nc)
            began = time.monotonic()
            current, error = await sample(nc, names)
            _draw(screen, render(current, previous, height=screen.getmaxyx()[0], error=error))
            previous, refreshes = current, refreshes + 1
            try:  # the next refresh one interval after this one began
                await asyncio.wait_for(quit_.wait(), max(args.interval - (time.monotonic() - began), 0.05))
            except asyncio.TimeoutError:
                pass
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await nc.close()
    return 0


def _draw(screen: Any, lines: list[str]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for y, line in enumerate(lines[:height]):
        try:
            screen.addnstr(y, 0, line, width - 1, curses.A_BOLD if y == 0 else curses.A_NORMAL)
        except curses.error:  # a terminal shrunk under us; the next refresh fits again
            pass
    screen.refresh()
