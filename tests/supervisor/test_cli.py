"""The operator's CLI against a real node, as a person runs it: separate processes, real pipes."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cli import build_parser
from supervisor.harness import FOUNDATION, REPO, NodeProcess, start_node, write_config

pytestmark = pytest.mark.timeout(120)

POOLS = {
    "echo": {"handler": "workers.examples:echo", "size": 1},
    "idle": {"handler": "workers.examples:echo", "size": 1},
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(tmp_path_factory.mktemp("cli"), pools=POOLS, supervisor={"max_workers": 4}) as proc:
        yield proc


def cli(*args: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDATION, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, **(env or {})})


def at(node: NodeProcess, *args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """``foundation ARGS`` against the test node."""
    return cli(*args, "--url", node.url, "--config", str(node.config), stdout=stdout)


def _actions(parser: argparse.ArgumentParser, path: str = "foundation") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_argument_has_help_and_there_is_a_version() -> None:
    missing = [f"{path} {action.dest}" for path, action in _actions(build_parser()) if not action.help]
    assert missing == []
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"foundation \d+\.\d+\.\d+\n", version.stdout)
    assert "exit codes:" in cli("--help").stdout


def test_status_is_a_table_and_json_on_request(node: NodeProcess) -> None:
    table = at(node, "status", "--node", "test")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"node test  nats {node.url}  up ")
    assert lines[2].split() == ["POOL", "WORKERS", "STATE", "WAITING", "IN", "FLIGHT", "PROCESSED", "FAILED", "RESTARTS", "RSS", "MB"]
    assert lines[3].split()[:3] == ["echo", "1/1", "running"]
    reply = json.loads(at(node, "status", "--node", "test", "--json").stdout)
    assert set(reply["pools"]) == {"echo", "idle"} and reply["max_workers"] == 4


def test_a_closed_pipe_ends_the_command_quietly(node: NodeProcess) -> None:
    # As `foundation status | head -0`: the reader is gone before anything is written.
    read, write = os.pipe()
    os.close(read)
    try:
        proc = at(node, "status", "--node", "test", stdout=write)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_refused_connection_is_reported_at_once(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # With a connect timeout far above the subprocess timeout, only an
    # immediate report of the refusal can pass.
    proc = cli("status", "--url", f"nats://127.0.0.1:{port}", env={"FOUNDATION_NATS__CONNECT_TIMEOUT": "600"})
    assert proc.returncode == 5
    assert proc.stderr == (f"foundation: NATS refused the connection at nats://127.0.0.1:{port}: is `foundation up` "
                           "(or nats-server) running there? (--url or nats.url of --config)\n")


def test_publish_to_a_pool_that_does_not_exist_is_refused(node: NodeProcess) -> None:
    proc = at(node, "publish", "tasks.ech", "{}")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ("foundation: no pool 'ech': nothing consumes tasks.ech, so its tasks would wait in TASKS; "
                           "pools: echo, idle (--anyway publishes regardless)\n")


def test_publish_to_a_drained_pool_says_the_task_will_wait(node: NodeProcess) -> None:
    drained = at(node, "drain", "idle", "--node", "test")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.splitlines()[0].split() == ["POOL", "WORKER", "HOW", "IT", "ENDED"]
    assert drained.stdout.splitlines()[1].split()[:2] == ["idle", "idle.0"]
    try:
        waited = at(node, "publish", "tasks.idle", "{}", "--wait", "--timeout", "1")
        note = ("no live worker of pool idle (drained, scaled to 0, or no node runs it): tasks wait in TASKS "
                "until one starts (`foundation status`, `foundation resume idle`)")
        assert waited.returncode == 1
        assert waited.stderr == f"note: {note}\n\ntimed out after 1s: 0/1 results; {note}\n"
    finally:
        resumed = at(node, "resume", "idle", "--node", "test")
    assert resumed.returncode == 0 and resumed.stdout.splitlines()[1].split() == ["idle", "idle.0"]


def test_publish_wait_splits_latency_and_its_bar_ends_at_the_summary_rate(node: NodeProcess) -> None:
    proc = at(node, "publish", "tasks.echo", '{"n": 1}', "--count", "200", "--wait")
    assert proc.returncode == 0, proc.stderr
    summary, unit, total, handler, waiting = proc.stdout.splitlines()
    rate = re.fullmatch(r"200 task\(s\) in [\d.]+s: ([\d,]+) tasks/s", summary).group(1)
    assert unit == "ms, per task:"
    assert [total.split()[:3], handler.split()[:2], waiting.split()[:3]] == [
        ["publish", "to", "result"], ["handler", "p50"], ["waiting,", "transport", "p50"]]
    bar = proc.stderr.strip().splitlines()[-1]  # the results bar's last drawing (text mode reads \r as a line end)
    assert bar.startswith("results [") and bar.endswith(f" 200/200 {rate} tasks/s")


def test_scale_is_bounded_and_zero_is_refused_like_in_the_config(node: NodeProcess) -> None:
    zero = at(node, "scale", "echo", "0", "--node", "test")
    assert zero.returncode == 1
    assert zero.stderr == ("foundation: pool echo: size must be at least 1, as pools.echo.size must; "
                           "to stop its workers, drain it (foundation drain echo)\n")
    big = at(node, "scale", "echo", "4", "--node", "test")  # idle holds 1 of max_workers = 4
    assert big.returncode == 1
    assert big.stderr == ("foundation: pool echo: size 4 is above 3 (supervisor.max_workers is 4 and "
                          "the node's other pools run 1)\n")
    up = at(node, "scale", "echo", "2", "--node", "test")
    assert (up.returncode, up.stdout) == (0, "pool echo: 2 worker(s)\n")
    down = at(node, "scale", "echo", "1", "--node", "test")
    assert down.returncode == 0
    assert down.stdout.splitlines()[3].split() == ["echo.1", "exit", "0", "(ok):", "scaled", "down"]


def test_no_node_answers_is_exit_5(node: NodeProcess) -> None:
    proc = at(node, "status", "--node", "elsewhere", "--timeout", "2")
    assert proc.returncode == 5
    assert proc.stderr.startswith("foundation: no node 'elsewhere' is running")


def test_a_second_node_on_the_same_store_exits_2_naming_the_first(node: NodeProcess) -> None:
    proc = cli("up", "--config", str(node.config))
    assert proc.returncode == 2
    store = node.config.parent / "nats"
    assert re.fullmatch(rf"foundation: nats.store_dir {store} is in use by node 'test' \(pid {node.pid} on \S+, since \S+\); "
                        r"stop that node first, or give this one its own nats.store_dir \(or nats.url for an external server\)\n",
                        proc.stdout), proc.stdout


def test_the_embedded_server_says_why_it_did_not_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "f.toml", pools={}, nats={"monitor_port": port})
        proc = cli("up", "--config", str(config))
    assert proc.returncode == 4
    assert (f"foundation: nats-server failed to start: Can't start monitoring: can't listen to the monitor port: "
            f"listen tcp 127.0.0.1:{port}: bind: address already in use") in proc.stdout, proc.stdout


def test_the_readme_python_snippet_runs_twice(node: NodeProcess) -> None:
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"From Python:\n\n```python\n(.*?)```", readme, re.S).group(1)
    code = snippet.replace("nats://127.0.0.1:4222", node.url)
    runs = [subprocess.run([str(Path(FOUNDATION).parent / "python"), "-c", code], capture_output=True, text=True,
                           timeout=60) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        result = ast.literal_eval(run.stdout)  # the snippet prints a dict
        assert (result["ok"], result["result"]) == (True, {"n": 1})


def test_a_long_scale_leaves_the_control_service_answering(tmp_path: Path) -> None:
    slow = {"handler": "tests.handlers:slow", "size": 2, "concurrency": 1, "shutdown": 120}
    with start_node(tmp_path, pools={"slow": slow}) as busy:
        held = at(busy, "publish", "tasks.slow", '{"seconds": 600}', "--count", "2")
        assert held.returncode == 0, held.stderr
        deadline = time.monotonic() + 60
        while json.loads(at(busy, "status", "--json").stdout)["pools"]["slow"]["consumer"]["ack_pending"] < 2:
            assert time.monotonic() < deadline, "the two tasks were never taken"
        # Scaling down drains slow.1, which holds a ten-minute task: a long scale.
        scale = subprocess.Popen([FOUNDATION, "scale", "slow", "1", "--url", busy.url, "--config", str(busy.config)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while True:  # until that scale is under way; "scale to 2" is a no-op until then
                again = at(busy, "scale", "slow", "2")
                if again.returncode == 1:
                    break
                assert again.stdout == "pool slow: 2 worker(s)\n" and time.monotonic() < deadline
            assert again.stderr == "foundation: pool slow: a scale or restart is under way; scale it once that is done\n"
            status = at(busy, "status", "--json")  # refused, not queued; and status answers
            assert status.returncode == 0 and json.loads(status.stdout)["pools"]["slow"]["running"] == 2
            assert scale.poll() is None  # still draining
        finally:
            scale.kill()
            scale.wait()
            busy.kill()
