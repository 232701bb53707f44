"""Metrics under worker churn: totals survive, the multiprocess directory stays bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from broker import collect_results, jetstream, publish_task, subjects
from supervisor.harness import NodeProcess, write_config
from tests.supervisor.helpers import EventLog, eventually, metric_value

pytestmark = pytest.mark.timeout(120)

CHURN = 25


def _value(text: str, name: str, **labels: str) -> float:
    value = metric_value(text, name, **labels)
    assert value is not None, f"{name}{labels} not in /metrics"
    return value


async def _acked(js) -> bool:
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
    return info.num_ack_pending == 0 and info.num_pending == 0


async def test_churn_keeps_totals_and_a_bounded_metrics_dir(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        metrics={"port": -1},
        pools={"p": {"handler": "workers.examples:echo", "size": 1, "max_restarts": 1000}},
    )
    node = NodeProcess(cfg)
    node.wait_up()
    url = node.metrics_url
    metrics_dir = tmp_path / "metrics" / "test"
    js = jetstream(nc)
    pids = set()
    try:
        async with collect_results(js, "p") as results:
            for i in range(CHURN):
                # Each worker processes one task (writing its own counter
                # files), then dies by kill -9 and is replaced.
                await publish_task(js, "p", {"i": i}, task_id=f"t{i}")
                done = await results.wait_for(i + 1, timeout=30)
                worker = (await events.wait("start", count=i + 1, child="p.0"))["pid"]
                assert done[f"t{i}"]["ok"]
                # The result is stored before the task is acked: kill only
                # after the ack, or the task would be processed twice.
                await eventually(lambda: _acked(js), timeout=10, what="the ack of the task")
                pids.add(worker)
                os.kill(worker, signal.SIGKILL)
                await events.wait("restart", count=i + 1, child="p.0")
        files = sorted(p.name for p in metrics_dir.iterdir())
        # No file of a dead worker is left: each was folded into an archive.
        assert not [f for f in files if any(f.endswith(f"_{pid}.db") for pid in pids)], files
        assert len(files) <= 10, files  # the supervisor, one live worker, the archives
        assert {"counter_archive.db", "histogram_archive.db"} <= set(files)
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        # Every dead worker's count survived the folding, none twice.
        assert _value(text, "foundation_tasks_processed_total", pool="p") == CHURN
        assert _value(text, "foundation_task_duration_seconds_count", pool="p") == CHURN
        assert _value(text, "foundation_worker_restarts_total", pool="p", reason="signal") == CHURN
    finally:
        assert node.stop() == 0


def test_a_file_being_created_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker that is creating its value file has it at 0 bytes for a moment;
    # a scrape or a status request at that moment must not fail.
    from prometheus_client import Counter, CollectorRegistry
    from prometheus_client.values import MultiProcessValue

    from supervisor import metrics

    monkeypatch.setenv(metrics.ENV, str(tmp_path))
    monkeypatch.setattr("prometheus_client.values.ValueClass", MultiProcessValue(lambda: 4242))
    Counter("foundation_probe", "probe", ["pool"], registry=CollectorRegistry()).labels("p").inc(3)
    (tmp_path / "counter_4243.db").touch()
    assert metrics.totals("foundation_probe", "pool") == {"p": 3.0}
