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
from supervisor.control import request


def register(sub: Any) -> None:
    p = sub.add_parser("vars", help="shared variables: list, read, propose a change")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="every variable with its type, bounds and value")
    add_client_options(ls)
    ls.set_defaults(func=lambda a: _run(a, _ls))
    get = verbs.add_parser("get", help="one variable's value and change history")
    get.add_argument("name")
    add_client_options(get)
    get.set_defaults(func=lambda a: _run(a, _get))
    prop = verbs.add_parser("propose", help="propose a new value; agents with a stake vote on it")
    prop.add_argument("name")
    prop.add_argument("value", help="a JSON value: 0.01, 64, '\"adam\"', true")
    prop.add_argument("--reason", default="")
    prop.add_argument("--deadline", type=float, default=2.0, help="seconds the stakeholders have to vote")
    prop.add_argument("--node", help="with [auth] enabled, the node that runs the vote and writes the value "
                      "(default: this host's node name)")
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
    if not len(space):
        print("no variables declared (add [variables.NAME] tables to the config)")
        return 0
    store = VariableStore(kv, space, approval=None)  # type: ignore[arg-type]  # reading only
    for var in space:
        change = await store.current(var.name)
        spec = {k: v for k, v in variable_to_dict(var).items() if k != "default"}
        print(f"{var.name:<24} {orjson.dumps(change.value).decode():<16} {orjson.dumps(spec).decode()}")
    return 0


async def _get(nc: Any, kv: Any, args: argparse.Namespace) -> int:
    space = await load_space(kv)
    space[args.name]  # an unknown name raises with the list of known ones
    store = VariableStore(kv, space, approval=None)  # type: ignore[arg-type]  # reading only
    current = await store.current(args.name)
    print(f"{args.name} = {orjson.dumps(current.value).decode()}")
    for change in await store.history(args.name):
        print(f"  v{change.version}: {orjson.dumps(change.value).decode()}  by {change.proposer or '-'}  {change.reason}")
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
        print(f"{args.name} = {orjson.dumps(reply['value']).decode()} (accepted)")
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
    print(f"{args.name} = {orjson.dumps(change.value).decode()} (accepted)")
    return 0
