"""Node services are a child of the root: present with no pools, restarted with the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import connect, decode
from supervisor.control import request
from supervisor.harness import start_node

pytestmark = pytest.mark.timeout(90)


async def test_a_node_with_no_pools_answers_ping_and_status(tmp_path: Path) -> None:
    with start_node(tmp_path, pools={}) as node:
        nc = await connect(node.url, name="test")
        try:
            ping = decode((await nc.request("$SRV.PING.foundation", b"", timeout=5)).data)
            assert (ping["name"], ping["metadata"]) == ("foundation", {"node": "test"})
            status = await request(nc, "test", "status")
            assert (status["node"], status["nats"], status["pools"]) == ("test", node.url, {})
        finally:
            await nc.close()
        assert node.ready["STATUS"] == "pools: none"
    assert node.proc.returncode == 0


def test_stopping_many_workers_logs_one_summary_not_a_line_each(tmp_path: Path) -> None:
    with start_node(tmp_path, pools={"echo": {"handler": "workers.examples:echo", "size": 4}}) as node:
        pass
    out = "".join(node.output)
    assert node.proc.returncode == 0
    assert "disconnected" not in out
    assert "node test: stopped (4 worker(s) drained, NATS connections closed)\n" in out
