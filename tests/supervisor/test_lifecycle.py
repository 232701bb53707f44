"""``foundation up`` as a process: lifecycle events, escalation exit code, orphans."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from broker import jetstream, publish_task
from supervisor.harness import NodeProcess, write_config
from tests.supervisor.helpers import EventLog, all_gone, worker_pids

pytestmark = pytest.mark.timeout(120)


async def test_events_of_a_kill_9_and_of_an_escalation_then_exit_3(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        supervisor={"max_restarts": 0, "max_seconds": 60},
        pools={"p": {"handler": "tests.handlers:crash_on", "size": 1, "concurrency": 1,
                     "max_restarts": 2, "max_seconds": 60, "ack_wait": 2}},
    )
    node = NodeProcess(cfg).wait_up()
    try:
        first = await events.wait("start", child="p.0")
        assert first["supervisor"] == "pool:p" and first["node"] == "test"
        assert events.subjects[0].startswith("foundation.events.test.")

        # kill -9: an exit with a signal, then a restart under the same slot.
        os.kill(first["pid"], signal.SIGKILL)
        gone = await events.wait("exit", child="p.0")
        assert (gone["pid"], gone["signal"], gone["code"], gone["restart"]) == (first["pid"], "SIGKILL", None, True)
        again = await events.wait("restart", child="p.0")
        assert again["cause"] == "signal" and again["pid"] not in (None, first["pid"])
        assert (await worker_pids(nc))["p.0"] == again["pid"]

        # Poison tasks: each kills its worker (exit 13). The pool allows 2
        # restarts in 60 s and has used one: the second crash escalates the
        # pool, and the root (max_restarts = 0) gives up: exit code 3.
        js = jetstream(nc)
        for i in range(3):
            await publish_task(js, "p", {"crash": True}, task_id=f"poison-{i}")
        crashed = await events.wait("exit", child="p.0", count=2)
        assert (crashed["code"], crashed["signal"]) == (13, None)
        pool_gave_up = await events.wait("escalate", supervisor="pool:p")
        assert "more than 2 restarts in 60s" in pool_gave_up["reason"]
        assert (await events.wait("exit", child="pool:p"))["code"] == 3
        root_gave_up = await events.wait("escalate", supervisor="root")
        assert "more than 0 restarts" in root_gave_up["reason"]
        assert node.wait_exit(60) == 3
        assert "gave up" in "".join(node.output)
    finally:
        node.kill()


async def test_kill_9_of_the_supervisor_leaves_no_orphan(tmp_path: Path) -> None:
    # Embedded nats-server too: an external command child must die as well.
    cfg = write_config(tmp_path / "f.toml", pools={"p": {"handler": "workers.examples:echo", "size": 3}})
    node = NodeProcess(cfg).wait_up()
    tree = psutil.Process(node.proc.pid).children(recursive=True)
    names = " ".join(p.name() for p in tree)
    assert "nats-server" in names and len(tree) >= 5  # fork server, nats-server, 3 workers
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    survivors = all_gone([p.pid for p in tree], timeout=15)
    assert survivors == [], f"orphans left: {[(p, psutil.Process(p).cmdline()) for p in survivors]}"
