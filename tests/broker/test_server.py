from __future__ import annotations

import pytest

from broker import EmbeddedServer, declare_streams, jetstream, subjects
from config import NatsConfig


async def test_streams_declared_idempotently(nc) -> None:
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    await declare_streams(js, NatsConfig())  # a second node declaring again
    names = sorted([s.config.name for s in await js.streams_info()])
    assert names == ["DLQ", "RESULTS", "TASKS", "WORKER_EXITS"]
    tasks = await js.stream_info(subjects.TASKS_STREAM)
    assert tasks.config.retention == "workqueue"


def test_stop_then_url_is_an_error(nats_server: EmbeddedServer) -> None:
    assert nats_server.url.startswith("nats://127.0.0.1:")
    nats_server.stop()
    with pytest.raises(Exception, match="not running"):
        nats_server.url
