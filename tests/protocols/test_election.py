from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from broker import connect, jetstream
from protocols.election import Election, Leader, LeaderWatch
from protocols.lease import LeaseTimeoutError, open_lease_bucket

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0


class GuardedResource:
    """A file that accepts a write only with a fencing token >= the highest seen.

    Every attempt is logged with the instant (system-wide CLOCK_MONOTONIC) at
    which the writer believed it led, so the test can check that no two terms'
    beliefs interleave.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_suffix(".lock")

    def write(self, token: int, who: str, believed_at: float) -> bool:
        with open(self._lock, "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            guard.seek(0)
            highest = int(guard.read() or 0)
            ok = token >= highest
            if ok:
                guard.seek(0)
                guard.truncate()
                guard.write(str(token))
                guard.flush()
            with open(self.path, "a") as log:
                log.write(json.dumps({"term": token, "who": who, "t": believed_at, "ok": ok}) + "\n")
        return ok

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


def _assert_one_leader_at_a_time(records: list[dict]) -> None:
    beliefs: dict[int, list[float]] = {}
    writers: dict[int, set[str]] = {}
    for r in records:
        beliefs.setdefault(r["term"], []).append(r["t"])
        writers.setdefault(r["term"], set()).add(r["who"])
    assert all(len(w) == 1 for w in writers.values()), writers
    terms = sorted(beliefs)
    for older, newer in zip(terms, terms[1:]):
        assert max(beliefs[older]) < min(beliefs[newer]), f"terms {older} and {newer} believed they led at once"


class Link:
    """A TCP relay between one client and NATS that can be cut (a partition).

    When cut, bytes are held in both directions: the client keeps running and
    believes it is connected, but nothing it sends reaches the server.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("nats://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.up = asyncio.Event()
        self.up.set()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, client_r, client_w) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        self._tasks += [asyncio.create_task(self._pipe(client_r, server_w)),
                        asyncio.create_task(self._pipe(server_r, client_w))]

    async def _pipe(self, reader, writer) -> None:
        while data := await reader.read(65536):
            await self.up.wait()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()


class Candidates:
    """Candidate processes, each with a queue of its stdout lines."""

    def __init__(self, url: str, resource: Path) -> None:
        self.url = url
        self.resource = resource
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.links: dict[str, Link] = {}
        self.lines: dict[str, asyncio.Queue[str]] = {}
        self._readers: list[asyncio.Task] = []

    async def start(self, *names: str) -> None:
        for name in names:
            # On a cluster (make cluster-protocols) candidates talk to different servers.
            servers = self.url.split(",")
            self.links[name] = link = Link(servers[len(self.links) % len(servers)])
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.protocols.test_election", await link.start(), name, str(TTL),
                str(self.resource),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )
            self.procs[name] = proc
            self.lines[name] = asyncio.Queue()
            self._readers.append(asyncio.create_task(self._read(name, proc)))
        for name in names:
            assert await asyncio.wait_for(self.lines[name].get(), 20.0) == "ready"

    async def _read(self, name: str, proc) -> None:
        async for raw in proc.stdout:
            await self.lines[name].put(raw.decode().strip())

    async def expect(self, who: str, line: str) -> None:
        seen = []
        try:
            while (got := await asyncio.wait_for(self.lines[who].get(), 20.0)) != line:
                seen.append(got)
        except asyncio.TimeoutError:
            raise AssertionError(f"{who} did not print {line!r}; it printed {seen}") from None

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        for reader in self._readers:
            reader.cancel()
        for link in self.links.values():
            await link.close()


async def _next_leader(changes: LeaderWatch, above: int = 0) -> Leader:
    while True:
        leader = await asyncio.wait_for(changes.__anext__(), 10.0)
        if leader.name is not None and leader.term > above:
            return leader


@pytest.fixture
async def kv(nc):
    return await open_lease_bucket(jetstream(nc))


async def test_kill_9_of_the_leader_fails_over_within_the_ttl(kv, nats_url, tmp_path) -> None:
    resource = GuardedResource(tmp_path / "resource.log")
    candidates = Candidates(nats_url, resource.path)
    try:
        async with LeaderWatch(kv, "svc") as changes:
            await candidates.start("c1", "c2", "c3")
            first = await _next_leader(changes)
            await candidates.expect(first.name, f"wrote {first.term}")
            loop = asyncio.get_running_loop()
            os.kill(candidates.procs[first.name].pid, signal.SIGKILL)
            killed_at = loop.time()
            second = await _next_leader(changes, above=first.term)
            failover = loop.time() - killed_at
            assert second.name != first.name
            assert second.term == first.term + 1
            # The dead leader renewed shortly before the kill; takeover follows one ttl later.
            assert failover < TTL + 1.0, f"failover took {failover:.2f}s"
            await candidates.expect(second.name, f"wrote {second.term}")
    finally:
        await candidates.stop()
    records = resource.records()
    assert all(r["ok"] for r in records)
    assert {r["term"] for r in records} == {first.term, second.term}
    _assert_one_leader_at_a_time(records)


async def test_paused_leader_never_overlaps_its_successor(kv, nats_url, tmp_path) -> None:
    resource = GuardedResource(tmp_path / "resource.log")
    candidates = Candidates(nats_url, resource.path)
    try:
        async with LeaderWatch(kv, "svc") as changes:
            await candidates.start("c1", "c2")
            first = await _next_leader(changes)
            await candidates.expect(first.name, f"wrote {first.term}")
            paused = candidates.procs[first.name]
            os.kill(paused.pid, signal.SIGSTOP)  # frozen mid-lead, as by a long GC or a VM pause
            second = await _next_leader(changes, above=first.term)
            await candidates.expect(second.name, f"wrote {second.term}")
            os.kill(paused.pid, signal.SIGCONT)
            await candidates.expect(first.name, f"stepped down {first.term}")
    finally:
        await candidates.stop()
    records = resource.records()
    assert {r["term"] for r in records} == {first.term, second.term}
    _assert_one_leader_at_a_time(records)


async def test_partitioned_leader_steps_down_before_its_successor_leads(kv, nats_url, tmp_path) -> None:
    resource = GuardedResource(tmp_path / "resource.log")
    candidates = Candidates(nats_url, resource.path)
    try:
        async with LeaderWatch(kv, "svc") as changes:
            await candidates.start("c1", "c2")
            first = await _next_leader(changes)
            await candidates.expect(first.name, f"wrote {first.term}")
            # The leader keeps running and writing, but its renewals no longer arrive.
            candidates.links[first.name].up.clear()
            await candidates.expect(first.name, f"stepped down {first.term}")
            second = await _next_leader(changes, above=first.term)
            await candidates.expect(second.name, f"wrote {second.term}")
    finally:
        await candidates.stop()
    records = resource.records()
    assert all(r["ok"] for r in records)
    assert {r["term"] for r in records} == {first.term, second.term}
    _assert_one_leader_at_a_time(records)


async def test_resign_hands_over_and_watchers_see_every_change(kv) -> None:
    a = Election(kv, "svc", "a", ttl=5.0)
    b = Election(kv, "svc", "b", ttl=5.0)
    async with a.watch() as changes:
        assert await asyncio.wait_for(changes.__anext__(), 5.0) == Leader(None, 0)
        assert await a.campaign() == 1
        assert a.is_leader and (await a.leader()) == Leader("a", 1)
        assert await asyncio.wait_for(changes.__anext__(), 5.0) == Leader("a", 1)
        with pytest.raises(LeaseTimeoutError):
            await b.campaign(timeout=0.2)
        waiting = asyncio.create_task(b.campaign(timeout=5.0))
        await a.resign()
        assert await asyncio.wait_for(waiting, 5.0) == 2
        seen = [await asyncio.wait_for(changes.__anext__(), 5.0) for _ in range(2)]
        assert seen == [Leader(None, 1), Leader("b", 2)]
        await b.resign()


async def test_watchers_report_an_expired_leader(kv) -> None:
    dead = Election(kv, "svc", "dead", ttl=0.5)
    await dead.campaign()
    await dead.lease.abandon()  # stops renewing, like a crashed process
    async with dead.watch() as changes:
        assert await asyncio.wait_for(changes.__anext__(), 5.0) == Leader("dead", 1)
        assert await asyncio.wait_for(changes.__anext__(), 5.0) == Leader(None, 1, expired=True)


async def test_run_leads_until_cancelled(kv) -> None:
    terms: asyncio.Queue[int] = asyncio.Queue()

    async def lead(term: int) -> None:
        await terms.put(term)
        await asyncio.Event().wait()

    election = Election(kv, "svc", "a", ttl=5.0)
    runner = asyncio.create_task(election.run(lead))
    assert await asyncio.wait_for(terms.get(), 5.0) == 1
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert (await election.leader()) == Leader(None, 1)


async def _candidate(url: str, candidate: str, ttl: str, path: str) -> None:
    nc = await connect(url, name=candidate)
    kv = await open_lease_bucket(jetstream(nc))
    resource = GuardedResource(Path(path))
    election = Election(kv, "svc", candidate, ttl=float(ttl))
    print("ready", flush=True)
    while True:
        term = await election.campaign()
        wrote = False
        while True:
            # The belief instant is taken first and judged against the lease's window.
            now = time.monotonic()
            if election.lost.is_set() or now >= election.lease.valid_until:
                break
            resource.write(term, candidate, now)
            if not wrote:
                print(f"wrote {term}", flush=True)
                wrote = True
            await asyncio.sleep(0.01)  # the leader's work
        print(f"stepped down {term}", flush=True)


if __name__ == "__main__":
    asyncio.run(_candidate(*sys.argv[1:5]))
