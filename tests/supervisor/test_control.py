"""The control service of a real node, used from a second NATS client (and the CLI)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from broker import collect_results, decode, jetstream, publish_task, subjects
from supervisor.control import ControlError, request
from supervisor.harness import FOUNDATION, REPO, NodeProcess, write_config
from tests.supervisor.helpers import EventLog, worker_pids

pytestmark = pytest.mark.timeout(120)


def slow_pool(**extra: object) -> dict[str, object]:
    return {"handler": "tests.handlers:slow", "size": 1, "concurrency": 4, **extra}


async def test_micro_service_discovery_status_and_errors(tmp_path: Path, nats_url: str, nc) -> None:
    node = NodeProcess(write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": slow_pool(size=2)})).wait_up()
    try:
        ping = decode((await nc.request("$SRV.PING.foundation", b"", timeout=5)).data)
        assert ping["name"] == "foundation" and ping["metadata"] == {"node": "test"}
        info = decode((await nc.request(f"$SRV.INFO.foundation.{ping['id']}", b"", timeout=5)).data)
        endpoints = {e["name"]: e["subject"] for e in info["endpoints"]}
        control = ("status", "scale", "restart", "drain", "resume")  # the service may carry others too
        assert {e: endpoints.get(e) for e in control} == {e: f"foundation.control.test.{e}" for e in control}

        status = await request(nc, "test", "status")
        pool = status["pools"]["p"]
        assert (status["node"], status["nats"], pool["size"], pool["running"], pool["drained"]) == ("test", nats_url, 2, 2, False)
        assert [w["id"] for w in pool["workers"]] == ["p.0", "p.1"] and all(w["pid"] and w["rss_mb"] > 0 for w in pool["workers"])
        assert pool["consumer"] == {"pending": 0, "ack_pending": 0, "redelivered": 0}

        with pytest.raises(ControlError, match=r"unknown pool 'nope'; pools on node test: p") as err:
            await request(nc, "test", "scale", {"pool": "nope", "size": 1})
        assert err.value.code == 404
        with pytest.raises(ControlError, match=r"pool p: size must be at least 1, as pools.p.size must; "
                                               r"to stop its workers, drain it \(foundation drain p\)"):
            await request(nc, "test", "scale", {"pool": "p", "size": 0})
        with pytest.raises(ControlError, match=r"pool p has no slot 'p.7'"):
            await request(nc, "test", "restart", {"slot": "p.7"})
        with pytest.raises(ControlError, match=r"no node 'elsewhere' is running") as err:
            await request(nc, "elsewhere", "status", timeout=2)
        assert err.value.code == 503

        stats = decode((await nc.request(f"$SRV.STATS.foundation.{ping['id']}", b"", timeout=5)).data)
        counts = {e["name"]: (e["num_requests"], e["num_errors"]) for e in stats["endpoints"]}
        assert counts["status"] == (1, 0) and counts["scale"] == (2, 2) and counts["restart"] == (1, 1)
    finally:
        assert node.stop() == 0


async def test_live_scale_up_and_down_under_load_loses_nothing(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    node = NodeProcess(write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": slow_pool()})).wait_up()
    js = jetstream(nc)
    try:
        ids = {f"s{i}" for i in range(300)}
        async with collect_results(js, "p") as results:
            await asyncio.gather(*(publish_task(js, "p", {"seconds": 0.02}, task_id=t) for t in ids))
            await results.wait_for(20, timeout=30)
            up = await request(nc, "test", "scale", {"pool": "p", "size": 4})
            assert up == {"pool": "p", "size": 4, "removed": {}}
            assert sorted(await worker_pids(nc)) == ["p.0", "p.1", "p.2", "p.3"]
            await results.wait_for(100, timeout=30)
            # Down to one while all four are busy: the highest slots go, each
            # drained first (exit 0), so none of their tasks waits for a redelivery.
            down = await request(nc, "test", "scale", {"pool": "p", "size": 1})
            assert list(down["removed"]) == ["p.3", "p.2", "p.1"]
            assert all(how == "exit 0 (ok): scaled down" for how in down["removed"].values())
            assert sorted(await worker_pids(nc)) == ["p.0"]
            got = await results.wait_for(ids, timeout=60)
        assert set(got) == ids and all(r["ok"] for r in got.values())
        assert {r["worker"] for r in got.values()} == {"p.0", "p.1", "p.2", "p.3"}
        # Nothing was left in a removed worker's hands to be redelivered.
        assert [t for t, r in got.items() if r["attempt"] != 1] == []
        # Stable slot ids: growing again reuses the lowest free numbers.
        await request(nc, "test", "scale", {"pool": "p", "size": 3})
        assert sorted(await worker_pids(nc)) == ["p.0", "p.1", "p.2"]
        assert [e["size"] for e in events.of("scale")] == [4, 1, 3]
    finally:
        assert node.stop() == 0


async def test_restart_a_slot_or_a_whole_pool(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    node = NodeProcess(write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": slow_pool(size=2)})).wait_up()
    try:
        before = await worker_pids(nc)
        assert await request(nc, "test", "restart", {"slot": "p.1"}) == {"restarted": ["p.1"]}
        after = await worker_pids(nc)
        assert {s for s in before if before[s] != after[s]} == {"p.1"}
        assert await request(nc, "test", "restart", {"pool": "p"}) == {"restarted": ["p.0", "p.1"]}
        final = await worker_pids(nc)
        assert all(final[s] != after[s] for s in final) and sorted(final) == ["p.0", "p.1"]
        await events.wait("restart", count=3, cause="requested")
    finally:
        assert node.stop() == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDATION, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


async def test_drain_stops_fetching_finishes_in_flight_and_resume_restarts(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    node = NodeProcess(write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": slow_pool(size=2)})).wait_up()
    js = jetstream(nc)
    try:
        first = {f"a{i}" for i in range(8)}
        later = {f"b{i}" for i in range(20)}
        async with collect_results(js, "p") as results:
            for t in sorted(first):
                await publish_task(js, "p", {"seconds": 0.5}, task_id=t)
            await results.wait_for(1, timeout=30)  # the workers are busy
            drained = await asyncio.to_thread(_cli, "drain", "--json", "--node", "test", "--url", nats_url)
            assert drained.returncode == 0, drained.stderr
            # The reply comes once both workers drained: the tasks they held
            # are done, nothing is in flight on this node.
            both = {"p.0": "exit 0 (ok): drain requested", "p.1": "exit 0 (ok): drain requested"}
            assert decode(drained.stdout.encode()) == {"drained": {"p": both}}
            info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
            assert info.num_ack_pending == 0
            done = {t for t in first if t in results.results}
            status = (await request(nc, "test", "status"))["pools"]["p"]
            assert (status["running"], status["drained"]) == (0, True)

            # While drained: tasks wait in the stream; scale and restart are refused.
            for t in sorted(later):
                await publish_task(js, "p", {"seconds": 0.01}, task_id=t)
            info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
            assert info.num_pending == len(first - done) + len(later)
            with pytest.raises(ControlError, match=r"pool p is drained; resume it before scale") as err:
                await request(nc, "test", "scale", {"pool": "p", "size": 3})
            assert err.value.code == 409

            resumed = await asyncio.to_thread(_cli, "resume", "p", "--json", "--node", "test", "--url", nats_url)
            assert resumed.returncode == 0, resumed.stderr
            assert decode(resumed.stdout.encode()) == {"resumed": {"p": ["p.0", "p.1"]}}
            got = await results.wait_for(first | later, timeout=60)
        assert all(r["ok"] for r in got.values()) and results.duplicates == 0
        assert (await events.wait("drain"))["workers"] == ["p.0", "p.1"]
        assert (await events.wait("resume"))["workers"] == ["p.0", "p.1"]
    finally:
        assert node.stop() == 0
