from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from broker import connect, jetstream
from protocols.lease import LeaseTimeoutError, open_lease_bucket, read_lease
from protocols.lock import Lock, lock, lock_key

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 20
INCREMENTS = 3


class Counter:
    """A counter in a file, read-modified-written with no OS locking at all.

    Only the distributed lock keeps increments from being lost. Writes carry
    the lock's fencing token; one below the highest seen is refused and logged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"value": 0, "token": 0}

    async def increment(self, token: int, who: str) -> None:
        state = self.read()
        await asyncio.sleep(0.002)  # work inside the critical section widens any race
        ok = token >= state["token"]
        if ok:
            tmp = self.path.with_suffix(f".{os.getpid()}")
            tmp.write_text(json.dumps({"value": state["value"] + 1, "token": token}))
            os.replace(tmp, self.path)
        with open(self.log, "a") as log:  # O_APPEND: one short line per write is atomic
            log.write(json.dumps({"token": token, "who": who, "read": state["value"], "ok": ok}) + "\n")


async def test_twenty_processes_lose_no_update(nc, nats_url, tmp_path) -> None:
    await open_lease_bucket(jetstream(nc))
    counter = Counter(tmp_path / "counter.json")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.protocols.test_lock", nats_url, str(counter.path), f"p{i}",
            cwd=ROOT,
        )
        for i in range(PROCESSES)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 50.0)
    assert codes == [0] * PROCESSES
    entries = [json.loads(line) for line in counter.log.read_text().splitlines()]
    assert all(e["ok"] for e in entries)
    assert counter.read()["value"] == PROCESSES * INCREMENTS
    tokens = [e["token"] for e in entries]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # unique, in grant order
    assert [e["read"] for e in entries] == list(range(PROCESSES * INCREMENTS))


async def test_lock_is_held_until_released(nc) -> None:
    kv = await open_lease_bucket(jetstream(nc))
    async with lock(kv, "job", holder="a", ttl=0.5) as held:
        assert held.token == 1 and held.held
        other = Lock(kv, "job", holder="b", ttl=0.5)
        # Several ttls pass: the background renewals keep the lock held.
        with pytest.raises(LeaseTimeoutError):
            await other.acquire(timeout=1.2)
        assert held.held and not held.lost.is_set()
    assert (await read_lease(kv, lock_key("job"))).free
    async with Lock(kv, "job", holder="b", timeout=1.0) as again:
        assert again.token == 2


async def test_dead_holder_frees_the_lock_after_its_ttl(nc, nats_url) -> None:
    kv = await open_lease_bucket(jetstream(nc))
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.protocols.test_lock", "hold", nats_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    assert await asyncio.wait_for(holder.stdout.readline(), 20.0) == b"held 1\n"
    holder.kill()
    await holder.wait()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    async with lock(kv, "job", holder="next", ttl=0.5, timeout=5.0) as held:
        assert held.token == 2
        assert loop.time() - killed_at < 0.5 + 1.0  # about one ttl after the last renewal


async def _hold(url: str) -> None:
    nc = await connect(url, name="holder")
    async with lock(await open_lease_bucket(jetstream(nc)), "job", holder="dead", ttl=0.5) as held:
        print(f"held {held.token}", flush=True)
        await asyncio.Event().wait()


async def _contender(url: str, path: str, who: str) -> None:
    nc = await connect(url, name=who)
    kv = await open_lease_bucket(jetstream(nc))
    counter = Counter(Path(path))
    for _ in range(INCREMENTS):
        async with lock(kv, "counter", holder=who, ttl=2.0, timeout=40.0) as held:
            await counter.increment(held.token, who)
    await nc.close()


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        asyncio.run(_hold(sys.argv[2]))
    else:
        asyncio.run(_contender(*sys.argv[1:4]))
