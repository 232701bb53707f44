"""systemd: sd_notify over a real unix datagram socket, and the shipped units."""

from __future__ import annotations

import asyncio
import configparser
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_config
from deploy import systemd_unit
from supervisor.control import request
from supervisor.harness import REPO, NodeProcess, write_config
from supervisor.quota import HARD_RSS_FACTOR
from supervisor.systemd import Notifier

pytestmark = pytest.mark.timeout(90)


def _socket(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notifier_speaks_the_protocol_on_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = _socket(path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"})
    assert notifier.enabled and notifier.watchdog_interval == 1.5
    assert notifier.ready("pools: p 2/2")
    assert sock.recv(4096) == b"READY=1\nSTATUS=pools: p 2/2"
    assert not notifier.status("pools: p 2/2")  # unchanged: not sent again
    assert notifier.status("pools: p 1/2")
    assert sock.recv(4096) == b"STATUS=pools: p 1/2"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("draining")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"
    notifier.close()
    sock.close()


def test_notifier_outside_systemd_and_watchdog_for_another_pid() -> None:
    silent = Notifier({})
    assert not silent.enabled and not silent.ready("x") and silent.watchdog_interval is None
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None
    mine = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 0.5


async def test_foundation_up_notifies_ready_watchdog_status_stopping(tmp_path: Path, nats_url: str, nc) -> None:
    cfg = write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": {"handler": "workers.examples:echo", "size": 2}})
    node = NodeProcess(cfg, env={"WATCHDOG_USEC": "400000"})  # the harness owns $NOTIFY_SOCKET

    async def next_message() -> str:
        return await asyncio.to_thread(node.next_notification, 30)

    try:
        ready = await next_message()
        assert ready == f"READY=1\nSTATUS=pools: p 2/2\nX_FOUNDATION_NODE=test\nX_FOUNDATION_NATS={nats_url}\n" \
                        "X_FOUNDATION_MONITOR=\nX_FOUNDATION_METRICS="
        # READY means the pools are up: both workers answer for their slots now.
        status = await request(nc, "test", "status")
        assert [w["running"] for w in status["pools"]["p"]["workers"]] == [True, True]
        # Watchdog pings from the main loop (every 0.2 s, half of WATCHDOG_USEC).
        messages = [await next_message() for _ in range(3)]
        assert messages.count("WATCHDOG=1") >= 2
        # STATUS follows the pool counts.
        await request(nc, "test", "scale", {"pool": "p", "size": 3})
        while (message := await next_message()) != "STATUS=pools: p 3/3":
            assert message == "WATCHDOG=1"
        node.proc.send_signal(signal.SIGTERM)
        while (message := await next_message()) != "STOPPING=1\nSTATUS=draining pools and stopping":
            assert message.startswith(("WATCHDOG=1", "STATUS="))
        assert await asyncio.to_thread(node.wait_exit, 30) == 0
    finally:
        node.kill()


# -- the shipped units ----------------------------------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(systemd_unit(name))
    return parser


def _seconds(value: str) -> float:
    return float(value.rstrip("s"))


def _bytes(value: str) -> float:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


def test_foundation_unit_is_consistent_with_the_shipped_config() -> None:
    unit = _unit("foundation.service")
    service, head = unit["Service"], unit["Unit"]
    cfg = load_config(str(REPO / "config" / "foundation.toml"))
    assert (service["Type"], service["NotifyAccess"], service["KillMode"], service["Restart"]) == ("notify", "main", "mixed", "on-failure")
    assert "foundation up" in service["ExecStart"]
    # systemd's intensity mirrors the root supervisor's, one level up.
    burst = int(head["StartLimitBurst"])
    assert burst == cfg.supervisor.max_restarts
    assert _seconds(head["StartLimitIntervalSec"]) >= burst * (_seconds(service["RestartSec"]) + cfg.supervisor.max_seconds)
    # A stop drains every pool (one after another), then nats-server.
    drain = sum(p.shutdown for p in cfg.pools.values()) + cfg.supervisor.shutdown
    assert _seconds(service["TimeoutStopSec"]) > drain
    # The watchdog is pinged at least every second: far inside WatchdogSec.
    assert _seconds(service["WatchdogSec"]) >= 10
    # The cgroup limit sits above every worker at its hard RSS limit.
    hard_mb = sum(HARD_RSS_FACTOR * p.quota.max_rss_mb * max(p.size, p.max_size) for p in cfg.pools.values())
    assert _bytes(service["MemoryMax"]) > hard_mb * 2**20 and not math.isinf(hard_mb)
    assert service["RestartPreventExitStatus"] == "2"  # a bad config is not retried


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart binaries exist: point them at this venv's.
    bindir = Path(sys.executable).parent
    for name, installed, here in (
        ("foundation.service", "/opt/foundation/venv/bin/foundation", bindir / "foundation"),
        ("nats-server.service", "/usr/local/bin/nats-server", bindir / "nats-server"),
    ):
        text = systemd_unit(name).read_text()
        assert installed in text
        (tmp_path / name).write_text(text.replace(installed, str(here)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "foundation.service"), str(tmp_path / "nats-server.service")],
        capture_output=True, text=True, timeout=60,
    )
    # Unknown keys or misplaced sections are only warnings: fail on any output.
    assert (proc.returncode, proc.stderr.strip(), proc.stdout.strip()) == (0, "", "")
