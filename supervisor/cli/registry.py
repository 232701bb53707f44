"""``foundation registry ls``: the live agents, from any node's registry endpoint."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from broker import decode, encode
from config.errors import FoundationError
from protocols.registry import QUERY_SUBJECT
from supervisor.cli.common import add_client_options, connect_client, load


def register(sub: Any) -> None:
    p = sub.add_parser("registry", help="the agent registry")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list live agents")
    ls.add_argument("--capability")
    ls.add_argument("--pool")
    ls.add_argument("--node")
    ls.add_argument("--status", choices=["starting", "ready", "busy", "draining"])
    ls.add_argument("--json", action="store_true", help="print the raw JSON reply")
    add_client_options(ls)
    ls.set_defaults(func=run_ls)


def run_ls(args: argparse.Namespace) -> int:
    cfg = load(args)
    request = {"op": "ls", **{k: getattr(args, k) for k in ("capability", "pool", "node", "status") if getattr(args, k)}}

    async def go() -> dict[str, Any]:
        import nats.errors

        nc = await connect_client(args, cfg, "foundation registry")
        try:
            msg = await nc.request(QUERY_SUBJECT, encode(request), timeout=10)
        except nats.errors.NoRespondersError:
            raise FoundationError("no node answers registry queries; is `foundation up` running?") from None
        finally:
            await nc.close()
        return decode(msg.data)

    reply = asyncio.run(go())
    if not reply.get("ok"):
        raise FoundationError(f"registry query failed: {reply.get('error')}")
    if args.json:
        print(encode(reply).decode())
        return 0
    print(f"{'ID':<28} {'POOL':<12} {'NODE':<12} {'PID':>7} {'STATUS':<9} {'IN-FLIGHT':>9} {'PROCESSED':>9}  CAPABILITIES")
    for e in reply["entries"]:
        load_ = e.get("load") or {}
        print(
            f"{e['id']:<28} {e['pool']:<12} {e['node']:<12} {e['pid']:>7} {e['status']:<9} "
            f"{load_.get('in_flight', 0):>9} {load_.get('processed', 0):>9}  {','.join(e.get('capabilities', []))}"
        )
    print(f"{reply['count']} agent(s)")
    return 0
