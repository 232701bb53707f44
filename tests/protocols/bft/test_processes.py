"""Members as separate OS processes on a real nats-server.

The leader is killed with SIGKILL mid-instance, a member is cut off through
its control subject and healed, and certificates are checked by yet another
process that trusts nothing but the keys file.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import orjson

from protocols.bft import proposer, subject
from protocols.bft.messages import decode
from tests.protocols.bft.nodes import Node, verify_in_process, write_keys

GROUP = "council"


async def _spawn_all(stack: AsyncExitStack, ids: list[str], url: str, keys: Path, instance: str) -> dict[str, Node]:
    nodes = await asyncio.gather(*(Node.spawn(i, url=url, keys=keys, group=GROUP, instance=instance) for i in ids))
    for node in nodes:
        stack.push_async_callback(node.stop)
    await asyncio.gather(*(node.expect("ready") for node in nodes))
    return {node.id: node for node in nodes}


async def _leader_proposal(nc, instance: str, leader: str) -> asyncio.Future:
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_proposal(msg) -> None:
        if not seen.done() and decode(msg.data).sender == leader:
            seen.set_result(decode(msg.data))

    await nc.subscribe(subject(GROUP, instance, "proposal"), cb=on_proposal)
    await nc.flush()
    return seen


async def test_four_processes_survive_a_killed_leader_and_the_certificate_verifies_elsewhere(
    nats_url: str, nc, tmp_path: Path
) -> None:
    ids = [f"m{i}" for i in range(4)]
    keys = write_keys(tmp_path, ids)
    instance = "k4"
    leader = proposer(ids, GROUP, instance, 0)
    async with AsyncExitStack() as stack:
        nodes = await _spawn_all(stack, ids, nats_url, keys, instance)
        proposal = await _leader_proposal(nc, instance, leader)
        # Start only the leader and one other: two of four cannot decide, so
        # the instance is certainly still open when the leader dies.
        first = next(i for i in ids if i != leader)
        for member in (leader, first):
            await nodes[member].command("start")
        await asyncio.wait_for(proposal, 20)
        nodes[leader].kill()
        for member in ids:
            if member not in (leader, first):
                await nodes[member].command("start")
        survivors = [m for m in ids if m != leader]
        decided = await asyncio.gather(*(nodes[m].expect("decided", 30) for m in survivors))
        print("rounds", [d["round"] for d in decided], [d["elapsed_ms"] for d in decided])
        values = {d["value"] for d in decided}
        assert len(values) == 1 and values <= {f"from-{m}" for m in ids}
        assert await nodes[leader].proc.wait() == -9

        code, out, err = await verify_in_process(keys, decided[0]["certificate"], tmp_path)
        assert (code, orjson.loads(out)) == (0, decided[0]["value"]), err
        tampered = {**decided[0]["certificate"], "value": "from-nobody"}
        code, _, err = await verify_in_process(keys, tampered, tmp_path)
        assert code == 1 and b"does not hash" in err


async def test_seven_processes_kill_leader_isolate_and_heal(nats_url: str, nc, tmp_path: Path) -> None:
    ids = [f"m{i}" for i in range(7)]
    keys = write_keys(tmp_path, ids)
    instance = "k7"
    leader = proposer(ids, GROUP, instance, 0)
    async with AsyncExitStack() as stack:
        nodes = await _spawn_all(stack, ids, nats_url, keys, instance)
        proposal = await _leader_proposal(nc, instance, leader)
        others = [m for m in ids if m != leader]
        early, cut, late = others[:2], others[2], others[3:]
        # Leader, two members and the one to be cut off: four of seven, below
        # the quorum of five.
        for member in (leader, *early, cut):
            await nodes[member].command("start")
        await asyncio.wait_for(proposal, 20)
        assert (await nodes[cut].command("isolate"))["paused"] is True
        nodes[leader].kill()
        for member in late:
            await nodes[member].command("start")
        # Five live, connected members: exactly a quorum.
        decided = await asyncio.gather(*(nodes[m].expect("decided", 30) for m in (*early, *late)))
        assert len({d["value"] for d in decided}) == 1
        status = await nodes[cut].command("status")
        assert status == {"event": "control", "cmd": "status", "id": cut, "paused": True, "started": True,
                          "decided": False}
        await nodes[cut].command("heal")
        healed = await nodes[cut].expect("decided", 30)
        assert healed["value"] == decided[0]["value"]

        code, out, err = await verify_in_process(keys, healed["certificate"], tmp_path)
        assert (code, orjson.loads(out)) == (0, healed["value"]), err
