"""``foundation registry ls``: the live agents, from any node's registry endpoint."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from broker import NoRespondersError, decode, encode
from config.errors import FoundationError
from protocols.registry import QUERY_SUBJECT
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option, emit, table
from supervisor.control import ControlError


def register(sub: Any) -> None:
    p = sub.add_parser("registry", help="the agent registry")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list live agents")
    ls.add_argument("--capability", help="only agents with this capability (pools.<name>.capabilities)")
    ls.add_argument("--pool", help="only the agents of this pool")
    ls.add_argument("--node", help="only the agents running on this node")
    ls.add_argument("--status", choices=["starting", "ready", "busy", "draining"], help="only agents in this state")
    add_json_option(ls)
    add_client_options(ls)
    ls.set_defaults(func=run_ls)


def run_ls(args: argparse.Namespace) -> int:
    cfg = load(args)
    request = {"op": "ls", **{k: getattr(args, k) for k in ("capability", "pool", "node", "status") if getattr(args, k)}}

    async def go() -> dict[str, Any]:
        nc = await connect_client(args, cfg, "foundation registry")
        try:
            msg = await nc.request(QUERY_SUBJECT, encode(request), timeout=10)
        except NoRespondersError:
            raise ControlError("no node answers registry queries; is `foundation up` running?", 503) from None
        finally:
            await nc.close()
        return decode(msg.data)

    reply = asyncio.run(go())
    if not reply.get("ok"):
        raise FoundationError(f"registry query failed: {reply.get('error')}")
    emit(reply, args, _text)
    return 0


def _text(reply: dict[str, Any]) -> str:
    rows = []
    for e in reply["entries"]:
        load_ = e.get("load") or {}
        rows.append([e["id"], e["pool"], e["node"], e["pid"], e["status"], load_.get("in_flight", 0),
                     load_.get("processed", 0), ",".join(e.get("capabilities", []))])
    lines = [table(["ID", "POOL", "NODE", "PID", "STATUS", "IN FLIGHT", "PROCESSED", "CAPABILITIES"], rows)]
    return "\n".join([*lines, f"{reply['count']} agent(s)"])
