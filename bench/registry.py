"""Registry benchmark: local-cache reads against their baselines, and propagation between processes.

Prints, measured in one run on a local embedded nats-server:

* ``lookup`` from the local cache, against a plain ``dict.get`` (the floor)
  and a ``kv.get`` round trip to the bucket (what a cache-less read costs);
* ``find`` over 10,000 agents: by one capability (~300 matches), by
  capability + pool + status (index intersection), and by a capability all
  agents share (10,000 matches: the cost of building the answer);
* a ``query`` on a nested metadata path narrowed by capability;
* the time from ``register`` in this process to the entry being in another
  process's cache (p50/p99). Both processes read ``time.monotonic()``, which
  on Linux is one system-wide clock.

Targets: lookup < 1 µs, find < 100 µs, propagation p99 < 50 ms.

    .venv/bin/python bench/registry.py [--agents 10000] [--probes 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._stats import quantile  # noqa: E402
from broker import EmbeddedServer, ServerOptions, connect, jetstream, subjects  # noqa: E402
from protocols.registry import ChangeKind, Entry, Load, open_registry  # noqa: E402

CAPABILITIES = [f"cap{n}" for n in range(100)]
POOLS = [f"pool{n}" for n in range(20)]
STATUSES = ["ready", "busy", "starting", "draining"]


def per_call_ns(fn: Callable[[], Any], repeat: int = 7, number: int | None = None) -> float:
    """Best-of-``repeat`` mean time of one call in ns (the best run has the least noise)."""
    if number is None:
        number = 1
        while True:  # calibrate to ~20 ms per run
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            if time.perf_counter() - t0 > 0.02:
                break
            number *= 2
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e9


def agent(n: int, rng: random.Random) -> Entry:
    caps = ["all", *rng.sample(CAPABILITIES, 3)]
    entry = Entry.new(
        f"{POOLS[n % len(POOLS)]}.{n}", pool=POOLS[n % len(POOLS)], node=f"node{n % 4}", pid=10_000 + n,
        capabilities=caps, metadata={"gpu": {"mem": rng.choice([8, 16, 24, 40, 80])}, "zone": rng.choice("abc")},
        status=rng.choice(STATUSES),
    )
    return entry.beat(load=Load(rng.randrange(8), rng.randrange(1000)))


async def follower(url: str) -> None:
    """The other process: report when each probe entry reaches its cache."""
    nc = await connect(url, name="bench-follower")
    latencies: list[float] = []
    async with open_registry(nc, ttl=60) as registry:
        with registry.watch() as events:
            print("ready", flush=True)
            async for event in events:
                seen = time.monotonic()
                if event.kind is ChangeKind.PUT and event.id.startswith("probe."):
                    if event.id == "probe.done":
                        break
                    latencies.append(seen - event.entry.metadata["sent"])
        print(json.dumps(latencies), flush=True)
    await nc.close()


async def propagation(url: str, nc: Any, probes: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--follow", url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    async with open_registry(nc, ttl=60) as registry:
        for n in range(probes):
            entry = Entry.new(f"probe.{n}", pool="probe", node="bench", pid=n, metadata={"sent": time.monotonic()})
            await registry.register(entry)
        await registry.register(Entry.new("probe.done", pool="probe", node="bench", pid=0, metadata={"sent": 0}))
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
    await proc.wait()
    return json.loads(line)


async def main(agents: int, probes: int) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(ServerOptions(store_dir=Path(tmp))) as server:
        nc = await connect(server.url, name="bench")
        async with open_registry(nc, ttl=600) as registry:
            t0 = time.perf_counter()
            population = [agent(n, rng) for n in range(agents)]
            for start in range(0, agents, 500):
                await asyncio.gather(*(registry.register(e) for e in population[start : start + 500]))
            fill_s = time.perf_counter() - t0
            ids = [e.id for e in population]
            plain = {e.id: e for e in population}
            key = ids[agents // 2]

            kv = await jetstream(nc).key_value(subjects.REGISTRY_BUCKET)
            kv_rtts = []
            for probe_id in rng.sample(ids, 300):
                t = time.perf_counter()
                await kv.get(probe_id)
                kv_rtts.append((time.perf_counter() - t) * 1e9)

            dict_ns = per_call_ns(lambda: plain.get(key))
            lookup_ns = per_call_ns(lambda: registry.lookup(key))
            one_cap = CAPABILITIES[3]
            n_cap = len(registry.find(capability=one_cap))
            n_inter = len(registry.find(capability=one_cap, pool=POOLS[1], status="ready"))
            find_ns = per_call_ns(lambda: registry.find(capability=one_cap))
            inter_ns = per_call_ns(lambda: registry.find(capability=one_cap, pool=POOLS[1], status="ready"))
            all_ns = per_call_ns(lambda: registry.find(capability="all"), repeat=5)
            where = [("metadata.gpu.mem", "gte", 40), ("load.in_flight", "lt", 4)]
            n_query = len(registry.query(where, capability=one_cap))
            query_ns = per_call_ns(lambda: registry.query(where, capability=one_cap))
            least_ns = per_call_ns(lambda: registry.least_loaded(one_cap, 3))

            latencies = await propagation(server.url, nc, probes)
        await nc.close()

    kv_p50 = statistics.median(kv_rtts)
    print(f"registry benchmark: {agents} agents (registered in {fill_s:.2f}s), {len(CAPABILITIES)} capabilities")
    print(f"  baseline dict.get            {dict_ns:10.0f} ns")
    print(f"  baseline kv.get round trip   {kv_p50:10.0f} ns (p50; p99 {quantile(kv_rtts, 0.99):.0f} ns)")
    print(f"  lookup (local cache)         {lookup_ns:10.0f} ns   {lookup_ns / dict_ns:5.1f}x dict, "
          f"{kv_p50 / lookup_ns:7.0f}x faster than kv.get   target < 1000 ns")
    print(f"  find capability ({n_cap:5d} hits) {find_ns / 1e3:8.1f} µs   target < 100 µs")
    print(f"  find cap+pool+status ({n_inter:2d} hits) {inter_ns / 1e3:6.1f} µs")
    print(f"  find capability ({agents} hits) {all_ns / 1e3:7.1f} µs   (every agent matches)")
    print(f"  query gpu.mem>=40 & in_flight<4 on one capability ({n_query} hits) {query_ns / 1e3:.1f} µs")
    print(f"  least_loaded(capability, 3)  {least_ns / 1e3:8.1f} µs")
    ms = [x * 1e3 for x in latencies]
    print(f"  propagation register -> other process's cache ({len(ms)} probes): "
          f"p50 {statistics.median(ms):.2f} ms, p99 {quantile(ms, 0.99):.2f} ms, max {max(ms):.2f} ms   "
          "target p99 < 50 ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--follow", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follow:
        asyncio.run(follower(args.follow))
    else:
        asyncio.run(main(args.agents, args.probes))
    sys.exit(0)
