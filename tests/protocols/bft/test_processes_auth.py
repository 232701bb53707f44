"""Member processes under auth: the worker identity of `foundation auth init`, keys signed by the operator."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import orjson

from broker import EmbeddedServer, ServerOptions, init_auth
from protocols.bft import Signer, new_seed, operator_public_key, sign_key_file
from tests.protocols.bft.nodes import Node, write_keys

GROUP = "council"


async def test_members_decide_as_the_worker_role_from_an_operator_signed_key_file(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    init_auth(auth, [], [])
    ids = [f"m{i}" for i in range(4)]
    keys = write_keys(tmp_path, ids)
    operator = Signer("operator", (auth / "operator.nk").read_bytes().strip())
    signed = tmp_path / "keys.signed.json"
    signed.write_bytes(orjson.dumps(sign_key_file(orjson.loads(keys.read_bytes()), operator)))
    extra = ("--nkey", str(auth / "worker.nk"), "--operator-key", operator_public_key(auth))
    conf = str(auth / "auth.conf")
    with EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", extra_args=("--config", conf))) as server:
        async with AsyncExitStack() as stack:
            nodes = await asyncio.gather(*(
                Node.spawn(i, url=server.url, keys=signed, group=GROUP, instance="a1", extra=("--wait-start", *extra))
                for i in ids
            ))
            for node in nodes:
                stack.push_async_callback(node.stop)
            await asyncio.gather(*(node.expect("ready") for node in nodes))
            for node in nodes:
                await node.command("start")
            decided = await asyncio.gather(*(node.expect("decided", timeout=30) for node in nodes))
        assert len({orjson.dumps(d["value"]) for d in decided}) == 1
        log = (tmp_path / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log

    # A key file changed after signing is refused: the member reports the error and decides nothing.
    tampered = tmp_path / "tampered.json"
    doc = orjson.loads(signed.read_bytes())
    doc["m3"] = Signer("m3", new_seed()).public_key  # a member's key swapped
    tampered.write_bytes(orjson.dumps(doc))
    node = await Node.spawn("m0", url="nats://127.0.0.1:1", keys=tampered, group=GROUP, instance="a2",
                            extra=("--operator-key", operator_public_key(auth)))
    try:
        event = await asyncio.wait_for(node.events.get(), 20)
        assert event["event"] == "error" and "does not verify" in event["error"]
    finally:
        await node.stop()
