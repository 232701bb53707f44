"""NATS goes away under a running worker: the worker keeps its process,
reconnects, stores every result it owes, and acks nothing unstored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import (
    EmbeddedServer,
    ServerOptions,
    connect,
    declare_pool_consumer,
    declare_streams,
    jetstream,
    subjects,
)
from chaos import Workload, check, observe
from config import NatsConfig, PoolConfig
from workers import Handler, Worker

pytestmark = pytest.mark.timeout(120)


async def poll(condition, timeout: float) -> None:
    """Poll an async condition: across a server restart no event survives to wait on."""
    async def wait() -> None:
        while not await condition():
            await asyncio.sleep(0.1)

    await asyncio.wait_for(wait(), timeout)


@pytest.mark.parametrize("handler", ["chaos.handlers:count", "tests.handlers:slow"])
async def test_worker_rides_out_a_nats_server_restart(tmp_path: Path, handler: str) -> None:
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats"))
    address = server.start()
    port = int(address.url.rsplit(":", 1)[1])
    stateful = handler.startswith("chaos")
    try:
        worker_nc = await connect(server.url, name="worker")
        client = await connect(server.url, name="client")
        js = jetstream(client, timeout=2)
        await declare_streams(js, NatsConfig())
        pool = PoolConfig(name="o", handler=handler, concurrency=8, ack_wait=2, max_deliver=20, backoff=(0.1,))
        await declare_pool_consumer(js, pool)
        worker = Worker(pool, "o.0", worker_nc, Handler.load(handler), fetch_timeout=0.2)
        await worker.bind()
        stop = asyncio.Event()
        runner = asyncio.create_task(worker.run(stop))
        history = await Workload(js, "o", 300, payload=lambda i: {"i": i, "work_ms": 5, "seconds": 0.005}).run()

        async def some_done() -> bool:
            return worker.processed >= 50

        await poll(some_done, 30)
        server.kill()  # kill -9, mid-run
        server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", port=port))
        server.start()

        async def drained() -> bool:
            try:
                info = await js.stream_info(subjects.TASKS_STREAM)
                return info.state.messages == 0
            except Exception:  # the client is still reconnecting
                return False

        await poll(drained, 60)
        assert not runner.done()  # the worker never stopped
        assert worker_nc.stats["reconnects"] >= 1
        report = check(history, await observe(js, "o", effects=stateful))
        assert report.acked == 300 and report.lost == [] and report.unexpected == []
        assert report.completed == 300
        if stateful:
            assert report.duplicates_processed == 0 and report.missing_effects == 0, report.per_agent
        stop.set()
        assert await runner == "stopped"
        await worker_nc.close()
        await client.close()
    finally:
        server.stop()
