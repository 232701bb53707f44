"""``foundation top`` as a person uses it: in a real terminal (tmux), reading the screen, pressing q."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from supervisor.cli.topview import quantile
from supervisor.harness import FOUNDATION, REPO, start_node

pytestmark = pytest.mark.timeout(120)

POOLS = {"echo": {"handler": "workers.examples:echo", "size": 2}, "spare": {"handler": "workers.examples:echo", "size": 1}}


def test_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    buckets = [[0.001, 0], [0.01, 50], [0.1, 100], ["+Inf", 100]]
    assert quantile(0.5, buckets) == pytest.approx(0.01)  # the 50th of 100 is the last in (0.001, 0.01]
    assert quantile(0.25, buckets) == pytest.approx(0.0055)
    assert quantile(0.99, buckets) == pytest.approx(0.0982)
    assert quantile(0.99, [[0.1, 0], ["+Inf", 10]]) == 0.1  # past the last bound: that bound
    assert quantile(0.5, [[0.1, 0], ["+Inf", 0]]) is None


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)


def _until(what: str, condition, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll the screen (a terminal has no event to wait on) until ``condition()`` is truthy."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_top_in_a_terminal_shows_a_running_pool_and_quits_on_q(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is required in CI (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    with start_node(tmp_path, pools=POOLS) as node:
        client = ("--url", node.url, "--config", str(node.config))
        done = subprocess.run([FOUNDATION, "publish", "tasks.echo", "{}", "--count", "300", "--wait", *client],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        socket = f"foundation-test-{uuid.uuid4().hex[:8]}"
        started = _tmux(socket, "new-session", "-d", "-x", "80", "-y", "24", FOUNDATION, "top", *client)
        assert started.returncode == 0, started.stderr
        try:
            def screen() -> str:
                return _tmux(socket, "capture-pane", "-p").stdout

            row = re.compile(r"^echo +2/2 +300 +\S+ +[\d.]+ +[\d.]+ +0 +0 +0 +(\d+)$", re.M)
            shown = _until("the echo pool's row", lambda: row.search(screen()))
            text = screen()
            print(text)  # the captured screen, for the record
            assert int(shown.group(1)) > 0  # RSS of its two workers, in MB
            assert re.search(r"^spare +1/1 +0 ", text, re.M)
            assert "foundation top  1 node(s), 2 pool(s)" in text and "node test  up " in text
            assert all(len(line) <= 80 for line in text.splitlines())
            assert _tmux(socket, "send-keys", "q").returncode == 0
            _until("top to quit on q", lambda: _tmux(socket, "has-session").returncode != 0, timeout=30)
        finally:
            _tmux(socket, "kill-server")


def test_top_once_prints_rows_for_scripts(tmp_path: Path) -> None:
    with start_node(tmp_path, pools=POOLS) as node:
        once = subprocess.run([FOUNDATION, "top", "--once", "--json", "--interval", "0.2", "--url", node.url,
                               "--config", str(node.config)], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert once.returncode == 0, once.stderr
        rows = {r["pool"]: r for r in json.loads(once.stdout)["rows"]}
        assert sorted(rows) == ["echo", "spare"]
        assert (rows["echo"]["node"], rows["echo"]["running"], rows["echo"]["size"], rows["echo"]["drained"]) == ("test", 2, 2, False)
        assert rows["echo"]["rss_mb"] > 0 and rows["echo"]["agents"] == {"ready": 2}
