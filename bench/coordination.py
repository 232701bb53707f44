"""Coordination latencies on a local embedded nats-server: p50 and p99 of

* a consensus round (propose → votes → decision stored and published) with
  5, 25 and 100 participants, the voters living in another process; the
  baseline is a bare scatter-gather (publish, collect N raw replies) over the
  same voters' connections, measured in the same run;
* a lock acquire + release (uncontended); baseline: one KV update round trip;
* election failover: the leader stops renewing (as a crashed process does)
  and a waiting candidate takes over; reported against the ttl.

Target (issue 6): a 25-participant round at p50 under 10 ms.

    .venv/bin/python bench/coordination.py [--rounds 200] [--ttl 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._stats import p50_p99_ms, row  # noqa: E402
from broker import EmbeddedServer, ServerOptions, connect, jetstream  # noqa: E402
from protocols.consensus import Voter, propose  # noqa: E402
from protocols.election import Election  # noqa: E402
from protocols.lease import open_lease_bucket  # noqa: E402
from protocols.lock import Lock  # noqa: E402

SIZES = (5, 25, 100)
_CONNECTIONS = 8  # voters of the host process share this many connections


async def _voter_host(url: str) -> None:
    """Every bench participant, answering yes, on a few shared connections."""
    conns = [await connect(url, name=f"voters-{i}") for i in range(_CONNECTIONS)]
    voters = []
    for size in SIZES:
        for i in range(size):
            voters.append(Voter(conns[i % len(conns)], f"bench{size}", f"v{i}", lambda _p: True))
    for v in voters:
        await v.start()

    async def echo(msg) -> None:
        await msg.respond(b"{}")  # the bare baseline's participant

    for size in SIZES:
        for i in range(size):
            await conns[i % len(conns)].subscribe(f"bare.{size}", cb=echo)
    for c in conns:
        await c.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _bare_round(nc, size: int) -> float:
    got = 0
    done = asyncio.Event()

    async def on_reply(_msg) -> None:
        nonlocal got
        got += 1
        if got == size:
            done.set()

    started = time.perf_counter()
    sub = await nc.subscribe(nc.new_inbox(), cb=on_reply)
    await nc.publish(f"bare.{size}", b"{}", reply=sub.subject)
    await asyncio.wait_for(done.wait(), 5.0)
    await sub.unsubscribe()
    return time.perf_counter() - started


async def _consensus(url: str, rounds: int) -> None:
    host = subprocess.Popen([sys.executable, __file__, "--voter-host", url], stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, host.stdout.readline)
        if line != b"ready\n":
            raise SystemExit("voter host failed to start")
        nc = await connect(url, name="proposer")
        print("consensus round (majority, decision stored in KV and published):")
        for size in SIZES:
            participants = [f"v{i}" for i in range(size)]
            n = rounds if size < 100 else max(rounds // 2, 20)
            for _ in range(10):  # warm-up: buckets opened, connections hot
                await propose(nc, f"bench{size}", 1, participants=participants, deadline=5.0)
                await _bare_round(nc, size)
            samples, bare = [], []
            for _ in range(n):
                started = time.perf_counter()
                decision = await propose(nc, f"bench{size}", 1, participants=participants, deadline=5.0)
                samples.append(time.perf_counter() - started)
                if not decision.accepted:
                    raise SystemExit(f"round with {size} participants was {decision.outcome}")
                bare.append(await _bare_round(nc, size))
            print(row(f"{size} participants ({n} rounds)", samples, bare, width=34))
            if size == 25:
                p50, _ = p50_p99_ms(samples)
                verdict = "met" if p50 < 10.0 else "NOT met"
                print(f"  target 25 participants p50 < 10 ms: {verdict} ({p50:.2f} ms)")
        await nc.close()
    finally:
        host.kill()
        host.wait()


async def _lock(url: str, rounds: int) -> None:
    nc = await connect(url, name="locker")
    kv = await open_lease_bucket(jetstream(nc))
    lock = Lock(kv, "bench", holder="bench", ttl=5.0)
    samples, baseline = [], []
    for i in range(rounds + 10):
        started = time.perf_counter()
        await lock.acquire()
        await lock.release()
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        await kv.put("bench.baseline", b"x")
        put = time.perf_counter() - started
        if i >= 10:
            samples.append(elapsed)
            baseline.append(put)
    print("lock (uncontended):")
    print(row(f"acquire + release ({rounds} rounds)", samples, baseline, width=34))
    await nc.close()


async def _failover(url: str, ttl: float, rounds: int) -> None:
    a_nc, b_nc = await connect(url, name="a"), await connect(url, name="b")
    kv_a, kv_b = await open_lease_bucket(jetstream(a_nc)), await open_lease_bucket(jetstream(b_nc))
    crash, graceful = [], []
    for i in range(rounds):
        leader = Election(kv_a, f"bench{i}", "a", ttl=ttl)
        standby = Election(kv_b, f"bench{i}", "b", ttl=ttl)
        await leader.campaign()
        waiting = asyncio.create_task(standby.campaign())
        await asyncio.sleep(ttl)  # let the standby settle on its watch across a few renewals
        started = time.perf_counter()
        if i % 2:
            await leader.resign()
        else:
            await leader.lease.abandon()  # stops renewing without a word, like kill -9
        await waiting
        (graceful if i % 2 else crash).append(time.perf_counter() - started)
        await standby.resign()
    print(f"election failover (ttl {ttl:g} s):")
    p50, p99 = p50_p99_ms(crash)
    print(row(f"leader dies ({len(crash)} rounds)", crash) + f"   p50 = {p50 / 1000 / ttl:.2f} ttl")
    print(row(f"leader resigns ({len(graceful)} rounds)", graceful, width=34))
    await a_nc.close()
    await b_nc.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with EmbeddedServer(ServerOptions(store_dir=Path(tmp))) as server:
            await _consensus(server.url, args.rounds)
            await _lock(server.url, args.rounds)
            await _failover(server.url, args.ttl, args.failovers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--ttl", type=float, default=0.5)
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--voter-host", metavar="URL")
    args = parser.parse_args()
    if args.voter_host:
        asyncio.run(_voter_host(args.voter_host))
    else:
        asyncio.run(main(args))
