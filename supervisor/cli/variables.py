"""``foundation vars ls|get|propose``: the shared variables."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import orjson

from broker import jetstream
from config.errors import FoundationError
from protocols.metrics import forward as forward_rounds
from protocols.registry import open_registry
from protocols.variables import (
    ChangeRejectedError,
    VariableConflictError,
    VariableStore,
    VariableValidationError,
    load_space,
    open_variables_bucket,
)
from supervisor.agents import propose_variable
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option, emit, table
from supervisor.control import request


def register(sub: Any) -> None:
    p = sub.add_parser("vars", help="shared variables: list, read, propose a change")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="every variable with its type, bounds and value")
    add_json_option(ls)
    add_client_options(ls)
    ls.set_defaults(func=lambda a: _run(a, _ls))
    get = verbs.add_parser("get", help="one variable's value and change history")
    get.add_argument("name", help="the variable")
    add_json_option(get)
    add_client_options(get)
    get.set_defaults(func=lambda a: _run(a, _get))
    prop = verbs.add_parser("propose", help="propose a new value; agents with a stake vote on it")
    prop.add_argument("name", help="the variable")
    prop.add_argument("value", help="a JSON value: 0.01, 64, '\"adam\"', true")
    prop.add_argument("--reason", default="", help="why, kept in the variable's history")
    prop.add_argument("--deadline", type=float, default=2.0, help="seconds the stakeholders have to vote")
    prop.add_argument("--node", help="with [auth] enabled, the node that runs the vote and writes the value "
                      "(default: this host's node name)")
    add_json_option(prop)
    add_client_options(prop)
    prop.set_defaults(func=lambda a: _run(a, _propose))


def _run(args: argparse.Namespace, fn: Any) -> int:
    cfg = load(args)

    async def go() -> int:
        nc = await connect_client(args, cfg, "foundation vars")
        try:
            kv = await open_variables_bucket(jetstream(nc))
            return await fn(nc, kv, args)
        finally:
            await forward_rounds(nc)  # the vote counts in a node's metrics
            await nc.close()

    return asyncio.run(go())


async def _ls(nc: Any, kv: Any, args: argparse.Namespace) -> int:
    from protocols.variables import variable_to_dict

    space = await load_space(kv)
    store = VariableStore(kv, space, approval=None)  # type: ignore[arg-type]  # reading only
    rows = []
    for var in space:
        change = await store.current(var.name)
        rows.append({"name": var.name, "value": change.value, "version": change.version,
                     "spec": {k: v for k, v in variable_to_dict(var).items() if k != "default"}})

    def text(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no variables declared (add [variables.NAME] tables to the config)"
        return table(["NAME", "VALUE", "VERSION", "DEFINITION"],
                     [[r["name"], _json(r["value"]), r["version"], _json(r["spec"])] for r in rows])

    emit(rows, args, text)
    return 0


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _get(nc: Any, kv: Any, args: argparse.Namespace) -> int:
    space = await load_space(kv)
    space[args.name]  # an unknown name raises with the list of known ones
    store = VariableStore(kv, space, approval=None)  # type: ignore[arg-type]  # reading only
    current = await store.current(args.name)
    history = [{"version": c.version, "value": c.value, "proposer": c.proposer, "reason": c.reason}
               for c in await store.history(args.name)]

    def text(reply: dict[str, Any]) -> str:
        lines = [f"{args.name} = {_json(reply['value'])}"]
        lines += [f"  v{c['version']}: {_json(c['value'])}  by {c['proposer'] or '-'}  {c['reason']}" for c in reply["history"]]
        return "\n".join(lines)

    emit({"name": args.name, "value": current.value, "version": current.version, "history": history}, args, text)
    return 0


async def _propose(nc: Any, kv: Any, args: argparse.Namespace) -> int:
    try:
        value = orjson.loads(args.value)
    except orjson.JSONDecodeError:
        raise FoundationError(f"value must be JSON (quote strings: '\"{args.value}\"')") from None
    proposer = f"cli@{socket.gethostname()}"
    cfg = load(args)
    if cfg.auth.enabled:
        # Only nodes may write the variables bucket: a node runs the vote and applies the change.
        body = {"name": args.name, "value": value, "reason": args.reason, "proposer": proposer, "deadline": args.deadline}
        reply = await request(nc, args.node or cfg.node.name, "propose", body, timeout=args.deadline + 15)
        _accepted(args, reply)
        return 0
    async with open_registry(nc) as registry:
        try:
            change = await propose_variable(nc, registry, args.name, value, proposer=proposer, reason=args.reason,
                                            deadline=args.deadline)
        except VariableValidationError as exc:
            raise FoundationError(f"rejected: {exc}") from None
        except ChangeRejectedError as exc:
            raise FoundationError(f"not accepted: {exc.verdict.reason}") from None
        except VariableConflictError:
            raise FoundationError("another change landed first; read the new value and propose again") from None
    _accepted(args, {"name": args.name, "value": change.value, "version": change.version})
    return 0


def _accepted(args: argparse.Namespace, reply: dict[str, Any]) -> None:
    emit({**reply, "accepted": True}, args, lambda r: f"{r['name']} = {_json(r['value'])} (accepted)")
