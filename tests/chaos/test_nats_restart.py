"""``kill -9`` of a node's embedded nats-server mid-run: it comes back, the pipeline resumes, nothing acked is lost."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from broker import connect, jetstream, subjects
from chaos import Workload, check, observe
from supervisor.harness import NodeFailedError, start_node
from tests.supervisor.helpers import eventually

pytestmark = pytest.mark.timeout(180)

POOL = {
    "handler": "chaos.handlers:count",
    "size": 2,
    "concurrency": 8,
    "ack_wait": 2.0,
    "max_restarts": 1000,
    "max_seconds": 10,
    "shutdown": 5,
}
SUPERVISOR = {"max_restarts": 1000, "max_seconds": 10}  # the root, too, rides out the restart


async def test_restart_of_the_embedded_nats_server_loses_nothing() -> None:
    with start_node(pools={"chaos": POOL}, node="chaos", supervisor=SUPERVISOR) as node:
        nc = await connect(node.url, name="chaos client")
        js = jetstream(nc, timeout=2)
        workload = Workload(js, "chaos", 3000, payload=lambda i: {"i": i, "work_ms": 1}, window=64, timeout=2)
        killed: list[int] = []

        async def pace(i: int) -> None:
            await asyncio.sleep(0.001)  # spread the tasks over the outage
            if i == 1000:
                pid = node.nats_server_pid()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        history = await workload.run(pace)
        assert killed

        async def restarted() -> bool:
            try:
                return node.nats_server_pid() != killed[0] and nc.is_connected
            except NodeFailedError:  # not running yet
                return False

        # The root supervisor restarts it (same ports, same store); the client reconnects by itself.
        await eventually(restarted, 60, "nats-server to be restarted and the client to reconnect")

        async def drained() -> bool:
            try:
                return (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0
            except Exception:  # still recovering
                return False

        await eventually(drained, 90, "the pool to drain TASKS")
        report = check(history, await observe(js, "chaos"))
        await nc.close()
        print("\n".join(report.lines()))
        assert report.acked > 1000  # publishes before and after the outage were acknowledged
        assert report.lost == [] and report.unexpected == []
        assert report.duplicates_processed == 0 and report.missing_effects == 0
        assert report.valid
        assert node.alive
