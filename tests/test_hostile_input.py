"""A real node under hostile input: malformed records in every shared bucket, and
malformed, huge, replayed and non-finite messages on every subject it listens to.

Afterwards the node must still serve tasks, answer ``status``, keep its
workers (none died, nothing escalated), and its output must name what it
skipped (the key or subject of each bad record or message).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker import collect_results, connect, jetstream, publish_task
from protocols.consensus import proposals_of
from protocols.market import messages as m
from protocols.quota.wire import request_subject
from protocols.registry import Entry
from protocols.registry.service import QUERY_SUBJECT
from supervisor.control import control_subject, request
from supervisor.harness import start_node
from workers.deadletter import advisory_subject

pytestmark = pytest.mark.timeout(180)

NODE = "test"
POOLS = {
    # Votes on group g and on variable changes; its slot id gets squatted below.
    "echo": {"handler": "workers.examples:echo", "size": 1, "capabilities": ["echo", "variables", "vote:g"]},
    # A market-dispatched pool: its agent answers cfps and watches the registry.
    "mk": {"handler": "workers.examples:echo", "size": 1, "dispatch": "market"},
    # A rate-limited pool: the node runs its quota service (an election on the leases bucket).
    "q": {"handler": "workers.examples:echo", "size": 1, "quota": {"rate_per_s": 1000}},
}
VARIABLES = {"lr": {"kind": "float", "default": 0.1, "low": 0.0, "high": 1.0}}


def raw(data: Any) -> bytes:
    """JSON as any writer may produce it: integers beyond 64 bits included."""
    return json.dumps(data).encode()


async def _buckets(js) -> dict[str, Any]:
    return {name: await js.key_value(name) for name in ("registry", "variables", "agent_state", "leases", "quota")}


async def _write_malformed_records(js) -> list[str]:
    """Garbage in every shared bucket; the keys the node's output must name."""
    kv = await _buckets(js)
    squat = Entry.new(f"{NODE}.echo.0", pool="echo", node="elsewhere", pid=1, capabilities=["echo"], status="ready")
    now = int(time.time())
    writes = [
        ("registry", "fuzz.bad.0", raw({"id": "fuzz.bad.0", "pool": "p", "node": ["a", "list"], "pid": 1})),
        ("registry", "fuzz.other.0", Entry.new("fuzz.x.0", pool="p", node="n", pid=1).to_json()),  # id is not key
        ("registry", "fuzz.junk.0", b"\xff\xfe"),
        ("registry", f"{NODE}.echo.0", squat.to_json()),  # a squat without TTL on a live worker's id
        ("variables", "spec.fuzzvar", raw({"kind": "float", "default": "high", "low": 0, "high": 1})),
        ("variables", "value.lr", raw({"name": "lr", "value": 0.9, "version": 1e300})),
        ("agent_state", f"{NODE}.echo.0", raw({"state": [1, 2], "applied": "t"})),
        ("leases", "election.quota.q", raw({"holder": "x", "owner": "y", "term": 2**64 - 1, "ttl": 1e300})),
        ("quota", "q.slots", raw({"holders": ["a"]})),
        ("quota", f"q.rate.{now}", raw({"grants": "all"})),
        ("quota", f"q.rate.{now + 1}", raw({"grants": "all"})),
    ]
    for bucket, key, data in writes:
        await kv[bucket].put(key, data)
    return ["fuzz.bad.0", "fuzz.other.0", "fuzz.junk.0", "value.lr", "election.quota.q"]


async def _send_hostile_messages(nc) -> None:
    """Malformed, huge, replayed and non-finite messages on every subject the node listens to."""
    big = b"x" * (900 * 1024)
    garbage = [b"", b"\xff", b"[]", b"null", b'{"a":', big]
    inbox = nc.new_inbox()
    subjects = [
        proposals_of("g").replace("*", "fuzz"), proposals_of("variables").replace("*", "fuzz"),
        m.cfp_subject("mk", "fuzz"), request_subject("q"), advisory_subject("echo"), QUERY_SUBJECT,
        "coord.bft.variables.fuzz.request", "coord.bft.variables._control.p0",
    ]
    for subject in subjects:
        for body in garbage:
            await nc.publish(subject, body, reply=inbox)
    # Control endpoints: only bodies that are no command at all ({} is a valid "every pool").
    for endpoint in ("status", "scale", "restart", "drain", "resume"):
        for body in (b"\xff", b'{"a":', big, raw({"pool": ["echo"]}), raw({"slot": {"x": 1}})):
            await nc.publish(control_subject(NODE, endpoint), body, reply=inbox)
    # Numbers from the wire: huge deadlines, wrong types, floods.
    for i in range(300):
        proposal = {"session": f"f{i}", "group": "g", "value": i, "participants": [], "timeout": 1e300}
        await nc.publish(proposals_of("g").replace("*", f"f{i}"), raw(proposal), reply=inbox)
    headers = {m.H_PERFORMATIVE: m.CFP, m.H_SENDER: "evil", m.H_REPLY_TO: inbox}
    for i, (reply_by, within) in enumerate([(1e300, 1e300), ("x", None), (-1e300, -5), (1e300, 0)] * 25):
        cfp = {"v": 1, "task_id": f"t{i}", "task": {}, "reply_by": reply_by, "reply_within": within, "round": 2**70}
        await nc.publish(m.cfp_subject("mk", f"c{i}"), raw(cfp), headers={**headers, m.H_CONVERSATION: f"c{i}"})
    for want in (2**70, -1, 1e300, "many"):
        await nc.publish(request_subject("q"), raw({"op": "tokens", "holder": "h", "want": want}), reply=inbox)
    for i in range(200):
        advisory = {"stream_seq": 2**70 + i, "deliveries": 1e300}
        await nc.publish(advisory_subject("echo"), raw(advisory))
    await nc.publish(QUERY_SUBJECT, raw({"where": [["load.in_flight", "gt", 1e300]], "limit": -1}), reply=inbox)
    await nc.publish(control_subject(NODE, "scale"), raw({"pool": "echo", "size": 1e300}), reply=inbox)
    await nc.flush()


async def _served(js, pool: str, task_id: str) -> dict[str, Any]:
    async with collect_results(js, pool) as results:
        await publish_task(js, pool, {"n": task_id}, task_id=task_id)
        got = await results.wait_for({task_id}, timeout=60)
    return got[task_id]


async def _pids(nc) -> dict[str, int]:
    status = await request(nc, NODE, "status")
    return {w["id"]: w["pid"] for pool in status["pools"].values() for w in pool["workers"]}


async def test_a_node_survives_hostile_records_and_messages(tmp_path: Path) -> None:
    with start_node(tmp_path, pools=POOLS, node=NODE, variables=VARIABLES,
                    supervisor={"max_restarts": 1, "max_seconds": 60}) as node:
        nc = await connect(node.url, name="fuzz")
        try:
            js = jetstream(nc)
            for pool in POOLS:
                assert (await _served(js, pool, f"before-{pool}"))["ok"]
            before = await _pids(nc)
            keys = await _write_malformed_records(js)
            await _send_hostile_messages(nc)
            # Replayed tasks: the same id twice is one task, one result.
            for _ in range(2):
                await publish_task(js, "echo", {"again": 1}, task_id="replayed-1")
            # The squatted slot restarts: its new worker must start (unlisted) and serve.
            await request(nc, NODE, "restart", {"slot": "echo.0"})
            for pool in POOLS:
                result = await _served(js, pool, f"after-{pool}")
                assert result["ok"], result
            after = await _pids(nc)
            assert set(after) == set(before) and all(after.values())
            assert {k: v for k, v in after.items() if k != "echo.0"} == {
                k: v for k, v in before.items() if k != "echo.0"}  # no other worker died
            assert node.alive
            # Every skipped record is named by its key (some only once a renewal or heartbeat reads it).
            for key in [*keys, "registry id 'test.echo.0' is held by pid 1 on node 'elsewhere'"]:
                await _named(node, key)
            assert (await _served(js, "q", "after-lease"))["ok"]  # the quota service leads again
        finally:
            await nc.close()
        out = "\n".join(node.output)
        assert "Traceback" not in out, node.tail(120)


async def _named(node: Any, text: str, timeout: float = 30.0) -> None:
    """Wait until the node's output has a line containing ``text``."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in list(node.output)):
        assert time.monotonic() < deadline, f"the node's output never named {text!r}:\n{node.tail(80)}"
        await asyncio.sleep(0.1)  # polling the output the harness's reader thread collects
