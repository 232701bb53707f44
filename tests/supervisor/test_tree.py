"""The supervision contract with real processes: strategies, restart types,
intensity, start/stop order, shutdown escalation to SIGKILL.

Children are real processes forked from the fork server (tests/supervisor/
targets.py); they log ``start``/``stop`` lines to one file, and the tests
compare the exact lines that follow one exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor import EXIT_ESCALATED, ChildStartError, ProcessChild, Supervisor
from tests.supervisor import targets
from tests.supervisor.targets import read_log

pytestmark = pytest.mark.timeout(60)


class Events:
    """Collects ``(kind, data)`` from a supervisor; waits for a matching one."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.items.append((kind, dict(data)))
        self._changed.set()

    def of(self, kind: str, child: str | None = None) -> list[dict[str, Any]]:
        return [d for k, d in self.items if k == kind and (child is None or d.get("child") == child)]

    async def wait(self, kind: str, child: str | None = None, count: int = 1, timeout: float = 15.0) -> dict[str, Any]:
        async def until() -> dict[str, Any]:
            while len(self.of(kind, child)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(kind, child)[count - 1]

        return await asyncio.wait_for(until(), timeout)


class Tree:
    """A supervisor of ``sleeper`` children sharing one log file."""

    def __init__(self, tmp_path: Path, specs: list[tuple[str, str]], *, strategy: str = "one_for_one",
                 max_restarts: int = 10, max_seconds: float = 60.0, shutdown: float = 5.0) -> None:
        self.log = tmp_path / "log"
        self.events = Events()
        self.sup = Supervisor(
            "t", [self.child(cid, restart, shutdown) for cid, restart in specs],
            strategy=strategy, max_restarts=max_restarts, max_seconds=max_seconds, on_event=self.events,
        )

    def child(self, cid: str, restart: str = "permanent", shutdown: float = 5.0, ignore_term: bool = False) -> ProcessChild:
        log = str(self.log)
        return ProcessChild(cid, targets.sleeper, lambda: (log, cid, ignore_term), restart=restart, shutdown=shutdown)

    def pids(self) -> dict[str, int | None]:
        return {c.id: c.pid for c in self.sup.children if c.running}

    def lines(self, since: int = 0) -> list[str]:
        """Log lines from ``since`` on, without pids (``start a``, ``stop b``)."""
        return [" ".join(line.split()[:2]) for line in read_log(self.log)[since:]]

    async def exit_one(self, cid: str, sig: int, nth: int = 1) -> list[str]:
        """Make ``cid`` exit via ``sig``; once the supervisor has handled it, the new log lines."""
        mark = len(read_log(self.log))
        os.kill(self.sup.child(cid).pid, sig)
        await self.events.wait("exit", cid, count=nth)
        await self.sup.settled()
        return self.lines(mark)


async def test_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [("a", "permanent"), ("b", "permanent"), ("c", "permanent")])
    await tree.sup.start()
    assert tree.lines() == ["start a", "start b", "start c"]
    info = await tree.sup.stop("test over")
    assert info.code == 0 and info.requested
    assert tree.lines(3) == ["stop c", "stop b", "stop a"]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", ["start b"]),
        ("one_for_all", ["stop d", "stop c", "stop a", "start a", "start b", "start c", "start d"]),
        ("rest_for_one", ["stop d", "stop c", "start b", "start c", "start d"]),
    ],
)
async def test_strategy_restarts_exactly(tmp_path: Path, strategy: str, expected: list[str]) -> None:
    tree = Tree(tmp_path, [(c, "permanent") for c in "abcd"], strategy=strategy)
    await tree.sup.start()
    before = tree.pids()
    try:
        assert await tree.exit_one("b", signal.SIGUSR1) == expected
        after = tree.pids()
        restarted = {line.split()[1] for line in expected if line.startswith("start")}
        assert {c for c in "abcd" if after[c] != before[c]} == restarted
        assert all(psutil.pid_exists(p) for p in after.values())
        assert [d["child"] for d in tree.events.of("restart")] == sorted(restarted)
        causes = {d["child"]: d["cause"] for d in tree.events.of("restart")}
        assert causes.pop("b") == "exit" and set(causes.values()) <= {"sibling"}
    finally:
        await tree.sup.stop()


@pytest.mark.parametrize(
    ("restart", "sig", "restarted"),
    [
        ("permanent", signal.SIGUSR2, True),
        ("permanent", signal.SIGUSR1, True),
        ("permanent", signal.SIGKILL, True),
        ("transient", signal.SIGUSR2, False),
        ("transient", signal.SIGUSR1, True),
        ("transient", signal.SIGKILL, True),
        ("temporary", signal.SIGUSR2, False),
        ("temporary", signal.SIGUSR1, False),
        ("temporary", signal.SIGKILL, False),
    ],
)
async def test_restart_types(tmp_path: Path, restart: str, sig: int, restarted: bool) -> None:
    tree = Tree(tmp_path, [("a", "permanent"), ("x", restart)])
    await tree.sup.start()
    try:
        lines = await tree.exit_one("x", sig)
        assert lines == (["start x"] if restarted else [])
        exit_event = tree.events.of("exit", "x")[0]
        assert exit_event["restart"] is restarted
        if sig == signal.SIGKILL:
            assert exit_event["signal"] == "SIGKILL" and exit_event["code"] is None
        else:
            assert exit_event["code"] == (0 if sig == signal.SIGUSR2 else 1) and exit_event["signal"] is None
        # A temporary child is forgotten; a transient one that ended normally stays, stopped.
        assert [c.id for c in tree.sup.children] == (["a"] if restart == "temporary" else ["a", "x"])
        assert tree.sup.child("a").running
    finally:
        await tree.sup.stop()


async def test_temporary_sibling_is_not_restarted_by_one_for_all(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [("a", "permanent"), ("t", "temporary"), ("c", "transient")], strategy="one_for_all")
    await tree.sup.start()
    try:
        assert await tree.exit_one("a", signal.SIGUSR1) == ["stop c", "stop t", "start a", "start c"]
        assert [c.id for c in tree.sup.children] == ["a", "c"]
    finally:
        await tree.sup.stop()


async def test_intensity_exceeded_stops_all_in_reverse_and_exits_escalated(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [(c, "permanent") for c in "abc"], max_restarts=2, max_seconds=60)
    await tree.sup.start()
    assert await tree.exit_one("b", signal.SIGUSR1) == ["start b"]
    assert await tree.exit_one("b", signal.SIGKILL, nth=2) == ["start b"]
    # The third restart within max_seconds is one too many.
    assert await tree.exit_one("b", signal.SIGUSR1, nth=3) == ["stop c", "stop a"]
    info = await asyncio.wait_for(tree.sup.wait(), 10)
    assert info.code == EXIT_ESCALATED == 3
    assert "more than 2 restarts in 60s" in info.reason
    assert tree.events.of("escalate")[0]["supervisor"] == "t"
    assert not tree.pids()


async def test_recycle_exits_do_not_count_toward_intensity(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [("a", "permanent")], max_restarts=1, max_seconds=60)
    await tree.sup.start()
    try:
        for n in range(1, 6):
            assert await tree.exit_one("a", signal.SIGHUP, nth=n) == ["start a"]
        assert {d["cause"] for d in tree.events.of("restart")} == {"recycle"}
        assert len(tree.sup.restarts) == 0 and tree.sup.running
        await tree.exit_one("a", signal.SIGUSR1, nth=6)
        assert tree.sup.running  # one counted restart is allowed ...
        await tree.exit_one("a", signal.SIGUSR1, nth=7)
        assert (await tree.sup.wait()).code == EXIT_ESCALATED  # ... the second is not
    finally:
        await tree.sup.stop()


async def test_nested_supervisor_escalation_is_its_parents_failure(tmp_path: Path) -> None:
    outer = Tree(tmp_path, [("x", "permanent")], strategy="rest_for_one", max_restarts=3)
    pool = Supervisor("pool", [outer.child("p0"), outer.child("p1")], max_restarts=0, on_event=outer.events)
    after = outer.child("y")
    outer.sup.children.extend([pool, after])
    await outer.sup.start()
    x_pid = outer.sup.child("x").pid
    try:
        mark = len(read_log(outer.log))
        os.kill(pool.child("p0").pid, signal.SIGUSR1)
        await outer.events.wait("restart", "pool")
        await outer.sup.settled()
        # The pool gave up (p1 stopped), the root restarted it and the child after it.
        assert outer.lines(mark) == ["stop p1", "stop y", "start p0", "start p1", "start y"]
        assert outer.events.of("exit", "pool")[0]["code"] == EXIT_ESCALATED
        assert outer.sup.child("x").pid == x_pid and pool.running and len(outer.sup.restarts) == 1
    finally:
        await outer.sup.stop()
    assert outer.lines()[-4:] == ["stop y", "stop p1", "stop p0", "stop x"]


async def test_failed_start_stops_the_started_in_reverse(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [("a", "permanent"), ("b", "permanent")])
    log = str(tree.log)
    tree.sup.children.insert(2, ProcessChild("bad", targets.fail_start, lambda: (log, "bad")))
    tree.sup.children.append(tree.child("z"))
    with pytest.raises(ChildStartError, match="bad failed to start: cannot start on purpose"):
        await tree.sup.start()
    assert tree.lines() == ["start a", "start b", "start bad", "stop b", "stop a"]
    assert not tree.sup.running


async def test_sigterm_ignored_means_sigkill_of_the_group_after_shutdown(tmp_path: Path) -> None:
    log = tmp_path / "log"
    child = ProcessChild("stubborn", targets.with_grandchild, lambda: (str(log),), shutdown=0.3)
    await child.start()
    grandchild = psutil.Process(int(read_log(log)[0].split()[1]))
    info = await asyncio.wait_for(child.stop("test"), 10)
    assert info.code == -signal.SIGKILL
    assert "killed after 0.3s shutdown" in info.reason
    # The grandchild was in the child's process group: gone too.
    gone, alive = psutil.wait_procs([grandchild], timeout=10)
    assert not alive or alive[0].status() == psutil.STATUS_ZOMBIE


async def test_replace_is_graceful_and_uncounted_kill_is_counted(tmp_path: Path) -> None:
    tree = Tree(tmp_path, [("a", "transient"), ("b", "permanent")], max_restarts=0)
    await tree.sup.start()
    mark = len(read_log(tree.log))
    old = tree.sup.child("a").pid
    assert tree.sup.replace_child("a", "quota rss", cause="quota")
    assert not tree.sup.replace_child("a", "again")  # already under way
    await tree.events.wait("restart", "a")
    await tree.sup.settled()
    # SIGTERM (graceful), then restarted although transient and exit 0; not counted.
    assert tree.lines(mark) == ["stop a", "start a"]
    assert tree.sup.child("a").pid != old and tree.sup.running
    assert tree.events.of("restart", "a")[0]["cause"] == "quota"
    assert tree.sup.kill_child("b", "quota rss far over")
    info = await asyncio.wait_for(tree.sup.wait(), 10)
    assert info.code == EXIT_ESCALATED
    assert "SIGKILL: quota rss far over" in tree.events.of("exit", "b")[0]["how"]
