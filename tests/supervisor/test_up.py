"""``foundation up`` end to end: a real node process, real workers, real NATS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from broker import collect_results, jetstream, publish_task, read_stream, subjects
from supervisor.control import request
from supervisor.harness import FOUNDATION, NodeProcess, write_config

pytestmark = pytest.mark.timeout(180)


async def worker_pids(nc, node: str = "test", pool: str = "p") -> dict[str, int]:
    status = await request(nc, node, "status")
    return {w["id"]: w["pid"] for w in status["pools"][pool]["workers"] if w["pid"]}


def test_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "f.toml", pools={"p": {"handler": "workers.examples:echo", "size": 0}})
    proc = subprocess.run([FOUNDATION, "up", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "config error: pools.p.size: must be > 0, got 0" in proc.stderr


def test_unimportable_handler_is_a_config_error_at_load_time(tmp_path: Path, nats_url: str) -> None:
    cfg = write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": {"handler": "no_such_module:fn"}})
    proc = subprocess.run([FOUNDATION, "up", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pools.p.handler: cannot import handler module 'no_such_module'" in proc.stderr


async def test_embedded_nats_echo_round_trip(tmp_path: Path) -> None:
    from broker import connect

    cfg = write_config(tmp_path / "f.toml", pools={"echo": {"handler": "workers.examples:echo", "size": 2}})
    node = NodeProcess(cfg)
    try:
        node.wait_up()
        url = node.url
        nc = await connect(url, name="client")
        js = jetstream(nc)
        async with collect_results(js, "echo") as results:
            await publish_task(js, "echo", {"hello": "world"}, task_id="hello-1")
            got = await results.wait_for({"hello-1"}, timeout=30)
        body = got["hello-1"]
        assert set(body) == {"task_id", "pool", "ok", "result", "worker", "attempt", "duration_ms"}
        assert body["result"] == {"hello": "world"} and body["ok"] and body["worker"] in {"echo.0", "echo.1"}
        await nc.close()
    finally:
        assert node.stop() == 0


async def test_kill_9_of_a_worker_mid_run_loses_nothing(tmp_path: Path, nats_url: str, nc) -> None:
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        pools={"p": {"handler": "tests.handlers:slow", "size": 2, "concurrency": 8, "ack_wait": 2}},
    )
    node = NodeProcess(cfg).wait_up()
    js = jetstream(nc)
    try:
        ids = {f"k{i}" for i in range(400)}
        async with collect_results(js, "p") as results:
            await asyncio.gather(*(publish_task(js, "p", {"seconds": 0.01}, task_id=t) for t in ids))
            await results.wait_for(50, timeout=30)
            victim = (await worker_pids(nc))["p.0"]
            os.kill(victim, signal.SIGKILL)
            got = await results.wait_for(ids, timeout=60)
        assert set(got) == ids and all(r["ok"] for r in got.values())
        # The slot came back under the same id with a new pid.
        async def respawned() -> None:
            while (await worker_pids(nc)).get("p.0") in (None, victim):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(respawned(), 30)
    finally:
        assert node.stop() == 0


async def test_sigterm_leaves_no_unacknowledged_task(tmp_path: Path, nats_url: str, nc) -> None:
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        pools={"p": {"handler": "tests.handlers:slow", "size": 2, "concurrency": 4}},
    )
    node = NodeProcess(cfg).wait_up()
    js = jetstream(nc)
    ids = {f"t{i}" for i in range(40)}
    async with collect_results(js, "p") as results:
        await asyncio.gather(*(publish_task(js, "p", {"seconds": 0.2}, task_id=t) for t in ids))
        await results.wait_for(1, timeout=30)
        assert node.stop() == 0
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
    assert info.num_ack_pending == 0
    # Every task either has its stored result or is still waiting in the stream.
    stored = {m.headers[subjects.MSG_ID] for m in await read_stream(js, subjects.RESULTS_STREAM)}
    assert stored <= ids
    assert len(stored) + info.num_pending == len(ids)
    assert "draining pools" in "".join(node.output)
