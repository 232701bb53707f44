"""10,000 tasks while ``kill -9`` hits random workers: nothing lost, nothing applied twice."""

from __future__ import annotations

import pytest

from broker import connect, jetstream, read_stream, subjects
from chaos import kill_workers
from supervisor.harness import start_node

pytestmark = pytest.mark.timeout(240)

POOL = {
    "handler": "chaos.handlers:count",
    "size": 4,
    "concurrency": 8,
    "ack_wait": 2.0,
    "max_restarts": 10_000,
    "max_seconds": 10,
}
SUPERVISOR = {"max_restarts": 1000, "max_seconds": 10}  # the root, too, rides out the kills


@pytest.mark.parametrize("handler", ["chaos.handlers:count", "chaos.handlers:count_sync"])
async def test_ten_thousand_tasks_twenty_kills(handler: str) -> None:
    pools = {"chaos": {**POOL, "handler": handler}}
    with start_node(pools=pools, node="chaos", supervisor=SUPERVISOR) as node:
        result = await kill_workers(node.url, node.name, "chaos", tasks=10_000, kills=20, seed=7, is_alive=lambda: node.alive)
        report = result.report
        assert result.kills >= 20
        assert report.acked == 10_000
        assert report.lost == [] and report.unexpected == []
        # Every result stored once, one per task.
        nc = await connect(node.url, name="check")
        try:
            stored = await read_stream(jetstream(nc), subjects.RESULTS_STREAM, subjects.results("chaos"))
        finally:
            await nc.close()
        ids = [m.headers[subjects.MSG_ID] for m in stored]
        assert len(ids) == len(set(ids)) == 10_000
        assert report.completed == 10_000 and report.duplicates_stored == 0
        # Each agent's count, kept in ctx.state, equals the tasks it completed.
        assert sum(effects for effects, _ in report.per_agent.values()) == 10_000
        assert all(effects == completed for effects, completed in report.per_agent.values()), report.per_agent
        assert report.duplicates_processed == 0 and report.missing_effects == 0
        assert report.valid
        assert node.alive
