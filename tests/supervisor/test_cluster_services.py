"""Node services on a real 3-server cluster: the server the quota leader talks to dies.

Nodes ``a`` and ``b`` list different servers first. Whichever node's quota
service leads the pool's budget, its server is killed with SIGKILL: that node
(supervisor and workers) moves to another server of its list, the quota
service keeps granting (the same leader once reconnected, or the other node's
candidate after the lease expires), no window of the ledger grants more than
the budget, and no worker is restarted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker import LocalCluster, collect_results, connect, jetstream, key_value, publish_task, retrying, subjects
from protocols.election import election_key
from protocols.lease import read_lease
from protocols.quota import Ledger
from tests.supervisor.cluster import start_node, stop_all
from tests.supervisor.test_cluster_failover import starting_at
from tests.supervisor.test_up import worker_pids

pytestmark = pytest.mark.timeout(240)

RATE = 20  # tokens per 1 s window
POOL = {"handler": "tests.handlers:where", "size": 1, "concurrency": 4, "quota": {"rate_per_s": RATE}}


async def test_quota_service_and_its_node_survive_the_death_of_their_server(tmp_path: Path, nats_cluster: LocalCluster) -> None:
    a = await start_node(tmp_path, "a", starting_at(nats_cluster.urls, 0), {"q": {**POOL, "quota": dict(POOL["quota"])}}, nats={"replicas": 3})
    b = await start_node(tmp_path, "b", starting_at(nats_cluster.urls, 1), {"q": {**POOL, "quota": dict(POOL["quota"])}}, nats={"replicas": 3})
    nc = await connect(nats_cluster.url, name="client")
    js = jetstream(nc)
    try:
        leases = await key_value(js, subjects.LEASE_BUCKET)
        deadline = time.monotonic() + 30
        while (record := await read_lease(leases, election_key("quota.q"))) is None or not record.holder:
            assert time.monotonic() < deadline, "no quota service took the lease"
            await asyncio.sleep(0.1)  # the lease record has no event of its own to wait on here
        holder, term = record.holder, record.term
        assert holder in ("a", "b")
        before = {node: await worker_pids(nc, node, "q") for node in ("a", "b")}
        victim = nats_cluster.names[0 if holder == "a" else 1]  # the server the leader's node talks to

        first = {f"x{i}" for i in range(RATE)}
        second = {f"y{i}" for i in range(3 * RATE)}
        leader_pids = set(before[holder].values())
        async with collect_results(js, "q") as results:
            await asyncio.gather(*(publish_task(js, "q", {}, task_id=t) for t in sorted(first)))
            await results.wait_for(first, timeout=60)
            nats_cluster.kill(victim)
            await asyncio.gather(*(publish_task(js, "q", {}, task_id=t) for t in sorted(second)))
            done = await results.wait_for(first | second, timeout=120)
            # The other node may serve every task while the leader's node moves
            # to another server: publish more until the moved node serves one.
            for batch in range(20):
                if {done[t]["result"]["pid"] for t in done if t[0] != "x"} & leader_pids:
                    break
                more = {f"z{batch}-{i}" for i in range(RATE)}
                await asyncio.gather(*(publish_task(js, "q", {}, task_id=t) for t in sorted(more)))
                done = await results.wait_for(set(done) | more, timeout=120)

        assert all(r["ok"] for r in done.values())
        ledger = await retrying(lambda: Ledger.open(nc, "q"), what="open the ledger")
        windows = await retrying(ledger.windows, what="read the ledger")
        assert all(w.granted <= RATE for w in windows), [(w.index, w.granted) for w in windows]
        assert sum(w.granted for w in windows) >= len(done)
        after = {node: await retrying(lambda n=node: worker_pids(nc, n, "q"), what="status") for node in ("a", "b")}
        assert after == before, "a worker was restarted:\n" + "".join(a.output[-80:] + b.output[-80:])
        served_late = {done[t]["result"]["pid"] for t in done if t[0] != "x"}
        assert served_late & leader_pids, f"node {holder} stopped serving after its server died"
        record = await retrying(lambda: read_lease(leases, election_key("quota.q")), what="read the lease")
        assert record is not None and record.term >= term
        print(f"quota leader {holder} (term {term}) lost server {victim}; leader now {record.holder} (term {record.term})")
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        await nc.close()
        codes = await stop_all(a, b)
    assert codes == [0, 0], "".join(a.output[-50:] + b.output[-50:])
