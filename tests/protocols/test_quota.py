"""Cluster-wide quotas: ledger records stay within budget, with and without failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import nats
import pytest
from prometheus_client import REGISTRY

from broker import connect
from protocols.quota import (
    BadQuotaRequestError,
    Budget,
    Grant,
    InvalidBudgetError,
    Ledger,
    QuotaClient,
    QuotaRequest,
    QuotaTimeoutError,
    QuotaUnavailableError,
    Window,
    open_quota_service,
    request_subject,
)

RATE = 200
WINDOW_S = 0.5  # 100 tokens per window: more windows per second of test
PER_WINDOW = int(RATE * WINDOW_S)


def metric(name: str, pool: str, kind: str | None = None) -> float:
    labels = {"pool": pool} if kind is None else {"pool": pool, "kind": kind}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def audit(windows: list[Window], budget_per_window: int) -> None:
    """Assert the ledger's own records: no window over budget, budgets as configured."""
    assert windows, "the ledger recorded no window"
    for w in windows:
        assert w.budget == budget_per_window
        assert w.granted <= budget_per_window, f"window {w.index} granted {w.granted} > {budget_per_window}"
        assert all(g.tokens > 0 for g in w.grants)
        assert len({g.id for g in w.grants}) == len(w.grants), "a grant id was recorded twice"


@pytest.fixture
async def clients(nats_url: str) -> AsyncIterator[list[QuotaClient]]:
    """Two workers, each on its own connection (stand-ins for two nodes)."""
    conns = [await connect(nats_url, name=f"worker-{n}") for n in range(2)]
    made = [QuotaClient(nc, "api", f"api.{n}", batch=10, timeout=20) for n, nc in enumerate(conns)]
    try:
        yield made
    finally:
        for client in made:
            await client.close()
        for nc in conns:
            await nc.close()


async def spend(clients: list[QuotaClient], total: int) -> None:
    """Both clients take tokens as fast as they can until ``total`` were used between them."""

    async def run(client: QuotaClient) -> None:
        while sum(c.tokens_used for c in clients) < total:
            await client.acquire()

    await asyncio.gather(*(run(c) for c in clients))


# -- units -----------------------------------------------------------------------------


def test_budget_checks_and_window_sizes() -> None:
    assert Budget(200, window_s=0.5).tokens_per_window == 100
    assert Budget(0.1 * 3, window_s=10).tokens_per_window == 3
    with pytest.raises(InvalidBudgetError, match="no whole token"):
        Budget(0.5, window_s=1.0)
    with pytest.raises(InvalidBudgetError, match=">= 0"):
        Budget(-1)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[]", "JSON object"),
        (b'{"op": "steal", "holder": "a"}', "unknown quota op"),
        (b'{"op": "tokens", "holder": "", "want": 1}', "non-empty string 'holder'"),
        (b'{"op": "tokens", "holder": "a", "want": 0}', "positive integer"),
        (b'{"op": "slots", "holder": "a", "hold": -1}', "non-negative integer"),
    ],
)
def test_malformed_requests_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(BadQuotaRequestError, match=match):
        QuotaRequest.decode(body)


# -- rate ----------------------------------------------------------------------------------


async def test_two_clients_share_a_rate_budget_and_no_window_goes_over(nc, clients) -> None:
    denials_before = metric("foundation_quota_denials_total", "api", "rate")
    async with open_quota_service(nc, "api", Budget(RATE, window_s=WINDOW_S), name="node-a") as service:
        await asyncio.wait_for(service.leading.wait(), 10)
        await spend(clients, 5 * PER_WINDOW)

    windows = await (await Ledger.open(nc, "api")).windows()
    audit(windows, PER_WINDOW)
    # The clients pushed harder than the budget, so it was reached and requests were denied ...
    assert any(w.granted == PER_WINDOW for w in windows)
    assert metric("foundation_quota_denials_total", "api", "rate") > denials_before
    # ... both shared it, and the ledger holds exactly what the clients received.
    holders = {g.holder for w in windows for g in w.grants}
    assert holders == {"api.0", "api.1"}
    assert sum(w.granted for w in windows) == sum(c.tokens_granted for c in clients)
    for client in clients:
        assert client.tokens_used <= client.tokens_granted


async def test_most_acquires_make_no_round_trip(nc, clients) -> None:
    # A long window, so the batch cannot expire at a window boundary during the test.
    async with open_quota_service(nc, "api", Budget(100, window_s=60), name="node-a") as service:
        await asyncio.wait_for(service.leading.wait(), 10)
        client = clients[0]
        await client.acquire()  # the first one fetches a batch
        for _ in range(client.batch - client.low_water - 2):
            await client.acquire()
        # Still the first batch, above the low-water mark: no second grant was asked for.
        windows = await (await Ledger.open(nc, "api")).windows()
        assert [len(w.grants) for w in windows] == [1]
        assert (client.tokens_granted, client.available()) == (client.batch, client.low_water + 1)


async def test_unlimited_rate_grants_without_a_ledger(nc, clients) -> None:
    async with open_quota_service(nc, "api", Budget(0, 0), name="node-a") as service:
        await asyncio.wait_for(service.leading.wait(), 10)
        for _ in range(50):
            await clients[0].acquire()
        assert await (await Ledger.open(nc, "api")).windows() == []


async def test_without_a_service_acquire_fails_with_unavailable(clients) -> None:
    with pytest.raises(QuotaUnavailableError, match="no quota service of pool 'api'"):
        await clients[0].acquire(timeout=0.3)


async def test_bad_request_from_a_plain_client_gets_an_error_reply(nc, nats_url: str) -> None:
    async with open_quota_service(nc, "api", Budget(RATE), name="node-a") as service:
        await asyncio.wait_for(service.leading.wait(), 10)
        plain = await nats.connect(servers=nats_url.split(","))
        try:
            reply = await plain.request(request_subject("api"), b'{"op": "tokens", "holder": "x"}', timeout=5)
            good = await plain.request(request_subject("api"), b'{"op": "tokens", "holder": "x", "want": 3}',
                                       timeout=5)
        finally:
            await plain.close()
    bad = json.loads(reply.data)
    assert (bad["ok"], bad["reason"]) == (False, "bad_request") and "'want'" in bad["error"]
    granted = json.loads(good.data)
    assert granted["ok"] and granted["tokens"] == 3 and 0 < granted["expires_in"] <= 1.0


async def test_a_window_found_over_budget_counts_a_breach_and_grants_nothing(nc, clients) -> None:
    # As after a budget was lowered: the ledger already holds more than the new budget allows.
    budget = Budget(2, window_s=50, window_origin=time.time())
    ledger = await Ledger.open(nc, "api")
    over = Window("api", 0, budget.window_s, 150, grants=(Grant("0-1", "old", 150, 0),), origin=budget.window_origin)
    await ledger.save_window(over)
    breaches_before = metric("foundation_quota_breaches_total", "api", "rate")
    async with open_quota_service(nc, "api", budget, name="node-a") as service:
        await asyncio.wait_for(service.leading.wait(), 10)
        with pytest.raises(QuotaTimeoutError, match="'reason': 'exhausted'"):
            await clients[0].acquire(timeout=0.3)
    assert metric("foundation_quota_breaches_total", "api", "rate") == breaches_before + 1
    assert [w.granted for w in await ledger.windows()] == [150]


# -- failover with the service in another OS process ------------------------------------------


class ServiceProcess:
    """A candidate quota service running in its own OS process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, name: str, *args: str) -> ServiceProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "protocols.quota", "--url", url, "--pool", "api", "--name", name, *args,
            stdout=asyncio.subprocess.PIPE, cwd=os.getcwd(),
        )
        return cls(proc)

    async def leading(self, timeout: float = 15.0) -> int:
        """Wait for the process to announce that it serves; returns its term."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        event = json.loads(line)
        assert event["event"] == "leading"
        return int(event["term"])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def test_budget_holds_when_the_service_is_killed_mid_run(nc, nats_url: str, clients) -> None:
    args = ("--rate", str(RATE), "--window", str(WINDOW_S), "--lease-ttl", "1.5")
    first = await ServiceProcess.start(nats_url, "node-a", *args)
    second = None
    try:
        first_term = await first.leading()
        second = await ServiceProcess.start(nats_url, "node-b", *args)
        await spend(clients, 3 * PER_WINDOW)

        first.kill()  # SIGKILL: no resignation, the lease must expire
        await first.proc.wait()
        spending = asyncio.ensure_future(spend(clients, 10**9))
        try:
            second_term = await second.leading()
            used_at_takeover = sum(c.tokens_used for c in clients)
            await spend(clients, used_at_takeover + 3 * PER_WINDOW)
        finally:
            spending.cancel()
            await asyncio.gather(spending, return_exceptions=True)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()

    assert second_term > first_term
    windows = await (await Ledger.open(nc, "api")).windows()
    audit(windows, PER_WINDOW)
    terms = {g.term for w in windows for g in w.grants}
    assert terms == {first_term, second_term}
    # A grant written just before the kill may never have reached its client, hence <=.
    assert sum(c.tokens_granted for c in clients) <= sum(w.granted for w in windows)


async def spend_until_exhausted(clients: list[QuotaClient], patience: float) -> None:
    """Both clients take tokens until the budget stays exhausted for ``patience`` seconds."""

    async def run(client: QuotaClient) -> None:
        with contextlib.suppress(QuotaTimeoutError):
            while True:
                await client.acquire(timeout=patience)

    await asyncio.gather(*(run(c) for c in clients))


async def test_a_new_service_continues_the_window_its_predecessor_started(nc, nats_url: str, clients) -> None:
    # One long window that starts now: the takeover surely happens inside it, so the
    # second service must count the first one's grants or it would grant the budget twice.
    window_s, origin = 20.0, time.time()
    budget = int(RATE * window_s)
    args = ("--rate", str(RATE), "--window", str(window_s), "--window-origin", repr(origin), "--lease-ttl", "1")
    first = await ServiceProcess.start(nats_url, "node-a", *args)
    second = None
    try:
        first_term = await first.leading()
        second = await ServiceProcess.start(nats_url, "node-b", *args)
        await spend(clients, budget // 2)
        first.kill()
        await first.proc.wait()
        # Through the gap and the takeover, until node-b reports the window spent.
        await spend_until_exhausted(clients, patience=5.0)
        second_term = await second.leading(timeout=1)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()

    assert time.time() < origin + window_s, "the test outlived its window; the check below would be vacuous"
    windows = await (await Ledger.open(nc, "api")).windows()
    audit(windows, budget)
    assert [w.index for w in windows] == [0]
    assert windows[0].granted == budget  # spent to the last token, and not one more
    assert {g.term for g in windows[0].grants} == {first_term, second_term}
    # What the clients actually received is within the ledger, hence within the budget.
    assert sum(c.tokens_granted for c in clients) <= budget


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrency_budget_is_shared_by_two_clients(nc, clients) -> None:
    limit = 3
    in_flight = 0
    peak = 0
    done = 0

    async def task() -> None:
        nonlocal in_flight, peak, done
        client = clients[done % 2]
        async with client.slot(timeout=20):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)  # the handler's work
            in_flight -= 1
        done += 1

    async def worker(n: int) -> None:
        for _ in range(10):
            await task()

    async with open_quota_service(nc, "api", Budget(max_concurrency=limit), name="node-a", slot_ttl=2.0) as svc:
        await asyncio.wait_for(svc.leading.wait(), 10)
        await asyncio.gather(*(worker(n) for n in range(8)))
        table = await (await Ledger.open(nc, "api")).slots(limit)
    assert done == 80
    assert peak == limit  # the budget was reached, never passed
    assert table.held <= limit


async def test_slots_of_a_dead_holder_are_freed_after_their_ttl(nc, clients) -> None:
    hoarder, waiter = clients
    async with open_quota_service(nc, "api", Budget(max_concurrency=2), name="node-a", slot_ttl=1.0) as svc:
        await asyncio.wait_for(svc.leading.wait(), 10)
        await hoarder.acquire_slot()
        await hoarder.acquire_slot()
        hoarder._renewer.cancel()  # it dies holding both: no renewal, no release
        with pytest.raises(QuotaTimeoutError, match="still refused"):
            await waiter.acquire_slot(timeout=0.2)
        await waiter.acquire_slot(timeout=10)  # freed by the service's sweep
        table = await (await Ledger.open(nc, "api")).slots(2)
        assert table.holders == {"api.1": 1}
        waiter.release_slot()


async def test_a_new_leader_respects_slots_held_under_the_old_one(nc, nats_url: str, clients) -> None:
    holder, waiter = clients
    async with open_quota_service(nc, "api", Budget(max_concurrency=1), name="node-a", slot_ttl=30.0) as svc:
        await asyncio.wait_for(svc.leading.wait(), 10)
        await holder.acquire_slot()
    # node-a resigned; node-b takes over with the ledger's table.
    other = await connect(nats_url, name="node-b")
    try:
        async with open_quota_service(other, "api", Budget(max_concurrency=1), name="node-b", slot_ttl=30.0) as svc:
            await asyncio.wait_for(svc.leading.wait(), 10)
            with pytest.raises(QuotaTimeoutError):
                await waiter.acquire_slot(timeout=0.3)
            holder.release_slot()
            await holder._hold(0)  # the holder hands it back: now the waiter gets it
            await waiter.acquire_slot(timeout=5)
            waiter.release_slot()
    finally:
        await other.close()
