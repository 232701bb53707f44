"""A group member as its own OS process, driven from outside.

``python -m protocols.bft run --url URL --id p0 --seed-file p0.seed --keys keys.json
--group g --instance i --proposal '"v"'`` connects, takes part in one
instance, and keeps answering late joiners until stdin closes or SIGTERM.

Output is one JSON object per line on stdout:
``{"event": "ready", "id", "pid"}``, ``{"event": "started", "id"}``,
``{"event": "decided", "id", "value", "round", "elapsed_ms", "certificate"}``
or ``{"event": "error", "id", "error"}``.

Control comes only from the launching process, one JSON line on stdin:
``{"cmd": ...}`` with ``start`` (begin, when run with ``--wait-start``),
``isolate`` / ``heal`` (fault injection: drop all instance traffic in and
out, then resume), ``status``. The answer is an output line
``{"event": "control", "cmd", "id", "paused", "started", "decided"}``.
There is no control subject: the fault switch is not reachable over NATS,
so no other client can cut a member off. Closing stdin stops the node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from broker import Identity, connect, die_with_parent
from config.errors import FoundationError
from protocols.bft.keys import Signer, StaticKeyDirectory
from protocols.bft.participant import Participant
from protocols.bft.signed_keys import load_signed_key_directory

_MAX_CONTROL_LINE = 4096


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="NATS URL")
    parser.add_argument("--id", required=True, help="this member's id, as in the keys file")
    parser.add_argument("--seed-file", required=True, type=Path, help="file holding this member's nkeys seed")
    parser.add_argument("--keys", required=True, type=Path, help="JSON object: member id -> public key")
    parser.add_argument("--operator-key", metavar="U…", help="accept --keys only if signed by this operator key "
                        "(`foundation auth sign-keys`; the key is in operator.pub of `foundation auth init`)")
    parser.add_argument("--nkey", type=Path, help="connect to NATS with this nkey seed (e.g. worker.nk of auth init)")
    parser.add_argument("--group", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--proposal", required=True, help="JSON value to propose")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the decision")
    parser.add_argument("--wait-start", action="store_true", help="wait for a 'start' control command")
    parser.add_argument("--isolated", action="store_true", help="start cut off (until a 'heal' command)")
    parser.add_argument("--die-with-parent", action="store_true", help="exit when the launching process dies")


async def run(args: argparse.Namespace) -> int:
    """Run one member until stdin closes or SIGTERM; 0 if it decided (or was stopped first)."""
    if args.die_with_parent:
        die_with_parent()
    signer = Signer(args.id, args.seed_file.read_bytes().strip())
    try:
        if args.operator_key:
            directory = load_signed_key_directory(args.keys, [args.operator_key])
        else:
            directory = StaticKeyDirectory(orjson.loads(args.keys.read_bytes()))
        identity = Identity(nkey_seed_file=str(args.nkey)) if args.nkey else Identity()
        nc = await connect(args.url, name=f"bft-{args.id}", **identity.connect_options())
    except FoundationError as exc:  # a key file that does not verify, a refused identity
        _emit({"event": "error", "id": args.id, "error": f"{type(exc).__name__}: {exc}"})
        return 2
    proposal = orjson.loads(args.proposal)
    participant = Participant(nc, signer, directory, linger=None)
    participant.paused = args.isolated
    start = asyncio.Event()
    stop = asyncio.Event()
    state = {"decided": False, "failed": False}
    if not args.wait_start:
        start.set()

    def on_control(line: bytes) -> None:
        try:
            cmd = orjson.loads(line).get("cmd")
        except (orjson.JSONDecodeError, AttributeError):
            cmd = None
        if cmd == "start":
            start.set()
        elif cmd == "isolate":
            participant.paused = True
        elif cmd == "heal":
            participant.paused = False
        reply = {"event": "control", "cmd": cmd, "id": args.id, "paused": participant.paused,
                 "started": start.is_set(), "decided": state["decided"]}
        if cmd not in ("start", "isolate", "heal", "status"):
            reply["error"] = f"unknown command {cmd!r}; use start, isolate, heal or status"
        _emit(reply)

    async def take_part() -> None:
        await start.wait()
        _emit({"event": "started", "id": args.id})
        began = time.perf_counter()
        try:
            value, cert = await participant.decide(args.group, proposal, args.timeout, instance=args.instance)
        except FoundationError as exc:
            state["failed"] = True
            _emit({"event": "error", "id": args.id, "error": f"{type(exc).__name__}: {exc}"})
            return
        state["decided"] = True
        _emit({
            "event": "decided", "id": args.id, "value": value, "round": cert.round,
            "elapsed_ms": round((time.perf_counter() - began) * 1000, 3), "certificate": cert.to_dict(),
        })

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader(limit=_MAX_CONTROL_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line over the limit: not a command
                continue
            if not line:
                break
            if line.strip():
                on_control(line)
        stop.set()

    _emit({"event": "ready", "id": args.id, "pid": os.getpid()})
    tasks = [loop.create_task(take_part()), loop.create_task(watch_stdin())]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await participant.close()
    await nc.close()
    return 1 if state["failed"] else 0
