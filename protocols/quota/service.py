"""The quota service of one pool: elected, it grants rate tokens and concurrency slots.

Message sequence::

    service  -> KV leases   campaign for ``election.quota.<pool>`` (CAS + TTL lease)
    leader   -- subscribes  coord.quota.<pool>.service.request
    worker   -> leader      {"op": "tokens", "want": n}  /  {"op": "slots", "hold": n}
    leader   -> KV quota    CAS-append the grant to the window record / slot table
    leader   -> worker      the grant (or "exhausted" with retry_in)
    leader   -- lease lost  unsubscribes; campaigns again

Invariants (tests/protocols/test_quota.py):

1. The tokens recorded for any window never exceed ``rate_per_s * window_s``,
   across failovers too: a grant is handed out only after its CAS write to
   the window's record succeeded, and every leader, old or new, writes to the
   same record.
2. Slots recorded as held never exceed ``max_concurrency``. A new leader
   counts the recorded holdings as live for one slot TTL from its takeover,
   longer than any lease the old leader could have handed out.
3. A candidate never stops campaigning on an error: opening the buckets is
   retried with backoff, and the election campaigns again after any error
   (see :meth:`protocols.election.Election.run`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from broker import Connection, Message, connect, jetstream, reply_allowed
from config.schema import QuotaConfig
from protocols.election import Election
from protocols.lease import open_lease_bucket
from protocols.quota.errors import InvalidBudgetError, LedgerConflictError, QuotaError
from protocols.quota.ledger import Grant, Ledger, SlotTable, Window, window_index
from protocols.quota.metrics import BREACHES, DENIALS, LEADER_CHANGES, TOKENS_GRANTED
from protocols.quota.wire import BadQuotaRequestError, QuotaRequest, reply, request_subject

log = logging.getLogger("foundation.quota")

DEFAULT_LEASE_TTL = 5.0
DEFAULT_SLOT_TTL = 10.0
_CAS_ATTEMPTS = 5
_OPEN_BACKOFF = (0.1, 5.0)


@dataclass(frozen=True)
class Budget:
    """A pool's cluster-wide budgets; 0 means unlimited.

    Attributes:
        rate_per_s: tasks per second across every worker of the pool.
        max_concurrency: tasks in flight at once across the pool.
        window_s: length of a rate window; ``rate_per_s * window_s`` tokens each.
        window_origin: wall-clock instant window 0 starts at (the epoch by
            default); every service of the pool must use the same.
    """

    rate_per_s: float = 0.0
    max_concurrency: int = 0
    window_s: float = 1.0
    window_origin: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.max_concurrency < 0 or self.window_s <= 0:
            raise InvalidBudgetError(f"budgets must be >= 0 and window_s > 0, got {self}")
        if self.rate_per_s and self.tokens_per_window < 1:
            raise InvalidBudgetError(
                f"rate_per_s={self.rate_per_s} gives no whole token per {self.window_s}s window; "
                f"use window_s >= {1 / self.rate_per_s:g}"
            )

    @property
    def tokens_per_window(self) -> int:
        # The epsilon keeps 0.1 * 10 from rounding down to 0.999… tokens.
        return math.floor(self.rate_per_s * self.window_s + 1e-9)

    @classmethod
    def from_config(cls, quota: QuotaConfig, window_s: float | None = None) -> Budget:
        """The budget of a pool's ``[pools.<name>.quota]``; the window fits slow rates."""
        if window_s is None:
            window_s = max(1.0, 1.0 / quota.rate_per_s) if quota.rate_per_s else 1.0
        return cls(quota.rate_per_s, quota.max_concurrency, window_s)


class QuotaService:
    """One candidate quota service for one pool; :meth:`run` it on every node.

    Args:
        nc: NATS connection.
        pool: the pool whose budget this is.
        budget: the budget (the same on every node).
        name: this candidate's name (shown in the lease record and in grants' ids).
        lease_ttl: seconds a dead leader keeps the lead at most.
        slot_ttl: seconds a concurrency slot stays held without renewal.
        on_lead: called with the term each time this candidate starts leading.
    """

    def __init__(self, nc: Connection, pool: str, budget: Budget, *, name: str,
                 lease_ttl: float = DEFAULT_LEASE_TTL, slot_ttl: float = DEFAULT_SLOT_TTL,
                 on_lead: Callable[[int], None] | None = None) -> None:
        self.nc = nc
        self.pool = pool
        self.budget = budget
        self.name = name
        self.lease_ttl = lease_ttl
        self.slot_ttl = slot_ttl
        self.term = 0
        self.leading = asyncio.Event()
        self._on_lead = on_lead
        self._ledger: Ledger | None = None
        self._election: Election | None = None
        self._window: Window | None = None
        self._slots: SlotTable | None = None
        self._slot_deadlines: dict[str, float] = {}
        self._slot_lock = asyncio.Lock()
        self._grant_ids = itertools.count(1)

    async def run(self) -> None:
        """Campaign and serve while leading, forever (cancel to stop; it resigns)."""
        pause, longest = _OPEN_BACKOFF
        while self._election is None:
            try:
                self._ledger = await Ledger.open(self.nc, self.pool)
                leases = await open_lease_bucket(jetstream(self.nc))
                self._election = Election(leases, f"quota.{self.pool}", self.name, ttl=self.lease_ttl)
            except Exception as exc:  # NATS not there yet: a candidate keeps trying
                log.warning("quota %s: cannot open the ledger (%r); retrying in %.1fs", self.pool, exc, pause)
                await asyncio.sleep(pause)  # a backoff pause, not a wait for an event
                pause = min(pause * 2, longest)
        await self._election.run(self._lead)

    async def _lead(self, term: int) -> None:
        # State of an earlier lead may be stale: another leader wrote since.
        self.term, self._window, self._slots = term, None, None
        sub = await self.nc.subscribe(request_subject(self.pool), cb=self._on_request)
        self.leading.set()
        LEADER_CHANGES.labels(self.pool).inc()
        log.info("quota %s: %s serves, term %d", self.pool, self.name, term)
        if self._on_lead is not None:
            self._on_lead(term)
        try:
            while True:
                await asyncio.sleep(self.slot_ttl / 4)
                if self.budget.max_concurrency:
                    await self._sweep_slots()
        finally:
            self.leading.clear()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_request(self, msg: Message) -> None:
        try:
            request = QuotaRequest.decode(msg.data)
            if request.op == "tokens":
                answer = await self._grant_tokens(request)
            else:
                answer = await self._hold_slots(request)
        except BadQuotaRequestError as exc:
            answer = reply(ok=False, reason="bad_request", error=str(exc), term=self.term)
        except QuotaError as exc:  # the ledger could not be read or written
            answer = reply(ok=False, reason="unavailable", error=str(exc), retry_in=0.05, term=self.term)
        except Exception as exc:  # a client must get an answer, not a timeout
            log.exception("quota %s: request failed", self.pool)
            answer = reply(ok=False, reason="error", error=repr(exc), term=self.term)
        if not reply_allowed(msg.reply, f"quota request of pool {self.pool}"):
            return  # granted leases expire unused
        with contextlib.suppress(Exception):
            await msg.respond(answer)

    # -- rate tokens ------------------------------------------------------------

    async def _grant_tokens(self, request: QuotaRequest) -> bytes:
        budget = self.budget
        if not budget.rate_per_s:
            return reply(ok=True, op="tokens", tokens=request.amount, expires_in=budget.window_s, term=self.term)
        assert self._ledger is not None
        for _ in range(_CAS_ATTEMPTS):
            index = window_index(time.time(), budget.window_s, budget.window_origin)
            window = self._window
            if window is None or window.index != index:
                window = await self._ledger.window(index, budget.window_s, budget.tokens_per_window,
                                                   budget.window_origin)
                # The budget in force is ours, whatever the record's writer had configured.
                window = replace(window, budget=budget.tokens_per_window)
                self._audit(window)
            tokens = min(request.amount, window.remaining)
            if tokens == 0:
                DENIALS.labels(self.pool, "rate").inc()
                return reply(ok=False, reason="exhausted", retry_in=max(window.end - time.time(), 0.001),
                             term=self.term)
            grant = Grant(f"{self.term}-{next(self._grant_ids)}", request.holder, tokens, self.term)
            try:
                self._window = await self._ledger.save_window(window.with_grant(grant))
            except LedgerConflictError:
                self._window = None
                await self._check_fenced(max((g.term for g in window.grants), default=0))
                continue
            if tokens < request.amount:
                DENIALS.labels(self.pool, "rate").inc()
            TOKENS_GRANTED.labels(self.pool).inc(tokens)
            return reply(ok=True, op="tokens", tokens=tokens, expires_in=window.end - time.time(),
                         window=window.index, grant=grant.id, term=self.term)
        return reply(ok=False, reason="contended", retry_in=0.01, term=self.term)

    def _audit(self, window: Window) -> None:
        if window.granted > window.budget:
            BREACHES.labels(self.pool, "rate").inc()
            log.error("quota %s: window %d granted %d of %d", self.pool, window.index, window.granted, window.budget)

    async def _check_fenced(self, seen_term: int) -> None:
        """Step down if the ledger shows a newer leader's writes."""
        assert self._ledger is not None and self._election is not None
        budget = self.budget
        index = window_index(time.time(), budget.window_s, budget.window_origin)
        latest = await self._ledger.window(index, budget.window_s, budget.tokens_per_window, budget.window_origin)
        newest = max([seen_term, *(g.term for g in latest.grants)])
        if newest > self.term:
            log.warning("quota %s: term %d superseded by term %d; stepping down", self.pool, self.term, newest)
            await self._election.lease.abandon()

    # -- concurrency slots -------------------------------------------------------

    async def _load_slots(self) -> SlotTable:
        assert self._ledger is not None
        table = await self._ledger.slots(self.budget.max_concurrency)
        # Holdings granted by an earlier leader may be in use for up to one slot TTL.
        grace = time.monotonic() + self.slot_ttl
        self._slot_deadlines = {holder: grace for holder in table.holders}
        if table.held > table.max:
            BREACHES.labels(self.pool, "concurrency").inc()
        return table

    async def _hold_slots(self, request: QuotaRequest) -> bytes:
        max_c = self.budget.max_concurrency
        if not max_c:
            return reply(ok=True, op="slots", held=request.amount, ttl=self.slot_ttl, term=self.term)
        assert self._ledger is not None
        async with self._slot_lock:
            for _ in range(_CAS_ATTEMPTS):
                table = self._slots or await self._load_slots()
                current = table.holders.get(request.holder, 0)
                allowed = max_c - (table.held - current)
                held = min(request.amount, max(allowed, current))
                holders = dict(table.holders)
                if held:
                    holders[request.holder] = held
                else:
                    holders.pop(request.holder, None)
                try:
                    if holders != table.holders:
                        table = await self._ledger.save_slots(replace(table, holders=holders, term=self.term))
                except LedgerConflictError:
                    self._slots = None
                    continue
                self._slots = table
                if held:
                    self._slot_deadlines[request.holder] = time.monotonic() + self.slot_ttl
                else:
                    self._slot_deadlines.pop(request.holder, None)
                if held < request.amount:
                    DENIALS.labels(self.pool, "concurrency").inc()
                return reply(ok=True, op="slots", held=held, ttl=self.slot_ttl,
                             retry_in=min(0.05, self.slot_ttl / 10), term=self.term)
        return reply(ok=False, reason="contended", retry_in=0.01, term=self.term)

    async def _sweep_slots(self) -> None:
        """Free the slots of holders that stopped renewing (dead workers)."""
        assert self._ledger is not None
        async with self._slot_lock:
            if self._slots is None:
                return
            now = time.monotonic()
            expired = {h for h, deadline in self._slot_deadlines.items() if deadline < now}
            if not expired:
                return
            holders = {h: n for h, n in self._slots.holders.items() if h not in expired}
            try:
                self._slots = await self._ledger.save_slots(replace(self._slots, holders=holders, term=self.term))
            except LedgerConflictError:
                self._slots = None
                return
            for holder in expired:
                self._slot_deadlines.pop(holder, None)
            log.info("quota %s: freed the slots of %s (not renewed)", self.pool, sorted(expired))


@contextlib.asynccontextmanager
async def open_quota_service(nc: Connection, pool: str, budget: Budget, *, name: str,
                             **options: Any) -> AsyncIterator[QuotaService]:
    """Run a candidate quota service for the block; it resigns on exit.

    ``await service.leading.wait()`` to know when this one serves.
    """
    service = QuotaService(nc, pool, budget, name=name, **options)
    task = asyncio.create_task(service.run(), name=f"quota-service:{pool}")
    try:
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    """Run one candidate quota service in this process until SIGTERM/SIGINT.

    Prints a JSON line ``{"event": "leading", "term": T}`` each time it starts
    serving, so a parent process can wait for it.
    """
    parser = argparse.ArgumentParser(prog="python -m protocols.quota")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=0)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--window-origin", type=float, default=0.0)
    parser.add_argument("--lease-ttl", type=float, default=DEFAULT_LEASE_TTL)
    parser.add_argument("--slot-ttl", type=float, default=DEFAULT_SLOT_TTL)
    args = parser.parse_args(argv)

    def announce(term: int) -> None:
        sys.stdout.write(f'{{"event": "leading", "term": {term}}}\n')
        sys.stdout.flush()

    async def serve() -> None:
        nc = await connect(args.url, name=f"quota-{args.pool}-{args.name}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        budget = Budget(args.rate, args.max_concurrency, args.window, args.window_origin)
        async with open_quota_service(nc, args.pool, budget, name=args.name, lease_ttl=args.lease_ttl,
                                      slot_ttl=args.slot_ttl, on_lead=announce):
            await stop.wait()
        await nc.close()

    asyncio.run(serve())
    return 0

