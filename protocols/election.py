"""Leader election: candidates compete for one :class:`~protocols.lease.Lease`.

Message sequence (bucket ``leases``, key ``election.<name>``)::

    candidate  -> KV  grant by CAS (term T+1)            the winner leads for term T+1
    leader     -> KV  renewals every ttl/3-ish           keeps the term alive
    candidate  <- KV  watch(key)                         waits for a release or an expiry
    watcher    <- KV  watch(key)                         sees Leader(name, term) on every change
    leader     -> KV  free record (term kept)            on resign; the next grant is T+2

Invariants (tests/protocols/test_election.py checks them with real
processes, kill -9 and SIGSTOP, and a guarded resource that records every
write with its fencing term and the instant the writer believed it led):

1. Terms of successive leaders strictly increase; a term is granted once.
2. At no instant do two candidates both believe they lead: every belief
   instant of term T precedes every belief instant of term T+1.
3. When a leader dies, another candidate leads within about one ttl after
   the dead leader's last renewal.
4. Watchers see each new (leader, term), each resignation, and an expiry
   (no renewal seen for a whole ttl) as ``Leader(None, term, expired=True)``.
5. A candidate never gives up: :meth:`Election.run` campaigns again, with
   backoff, after any error (a NATS outage or read timeout, a malformed
   record), and a watcher skips a malformed record with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker import NATS_ERRORS, KeyValueBucket, NatsTimeoutError

from protocols.lease import Lease, LeaseError, LeaseRecord, LeaseUnavailableError, decode_record, read_lease
from protocols.metrics import timed_round

log = logging.getLogger("foundation.protocols.election")

RETRY_BACKOFF = (0.1, 5.0)  # first and longest pause before campaigning again after an error


def election_key(name: str) -> str:
    """The lease key of election ``name``."""
    return f"election.{name}"


@dataclass(frozen=True)
class Leader:
    """Who leads, as seen by a watcher.

    Attributes:
        name: the leader's candidate name; ``None`` when nobody leads.
        term: the term (fencing token) of the latest grant.
        expired: ``True`` when nobody leads because the last leader stopped
            renewing (it may be dead or cut off), rather than resigning.
    """

    name: str | None
    term: int
    expired: bool = False


class Election:
    """One candidate in election ``name``.

    Args:
        kv: the lease bucket (see :func:`protocols.lease.open_lease_bucket`).
        name: the election's name.
        candidate: this candidate's name (shown to watchers).
        ttl: seconds a dead leader keeps the lead at most.
        safety_margin: see :class:`~protocols.lease.Lease`.
    """

    def __init__(
        self, kv: KeyValueBucket, name: str, candidate: str, ttl: float = 5.0, *, safety_margin: float | None = None
    ) -> None:
        self.name = name
        self.candidate = candidate
        self.lease = Lease(kv, election_key(name), candidate, ttl, safety_margin=safety_margin)
        self._kv = kv

    @property
    def is_leader(self) -> bool:
        """True while this candidate may act as leader."""
        return self.lease.held

    @property
    def term(self) -> int:
        """The term of this candidate's current or last lead; 0 if it never led."""
        return self.lease.term

    @property
    def lost(self) -> asyncio.Event:
        """Set when the current lead can no longer be trusted."""
        return self.lease.lost

    @timed_round("election", "won")
    async def campaign(self, timeout: float | None = None) -> int:
        """Wait until this candidate leads.

        Returns:
            the term of its lead (pass it to guarded resources as the fencing token).

        Raises:
            LeaseTimeoutError: not elected within ``timeout`` seconds.
        """
        term = await self.lease.acquire(timeout)
        log.info("election %s: %s leads, term %d", self.name, self.candidate, term)
        return term

    async def resign(self) -> None:
        """Stop leading; another candidate may be elected at once."""
        await self.lease.release()

    async def leader(self) -> Leader:
        """The leader of record now (it may have died without resigning)."""
        record = await read_lease(self._kv, election_key(self.name), malformed_ttl=self.lease.ttl)
        if record is None:
            return Leader(None, 0)
        return Leader(record.holder, record.term)

    def watch(self) -> LeaderWatch:
        """A watch of this election's leader changes."""
        return LeaderWatch(self._kv, self.name)

    async def run(self, lead: Callable[[int], Awaitable[Any]]) -> None:
        """Campaign forever; while leading, run ``lead(term)``.

        ``lead`` is cancelled as soon as the lead is lost, and the candidate
        campaigns again; if ``lead`` returns, the candidate resigns and
        campaigns again. Any error, of the campaign or of ``lead``, is logged
        and the candidate campaigns again after a backoff pause. Cancel
        :meth:`run` to stop (it resigns).
        """
        pause, longest = RETRY_BACKOFF
        try:
            while True:
                try:
                    await self._serve_once(lead)
                    pause = RETRY_BACKOFF[0]
                except Exception as exc:  # a candidate that stops campaigning is lost for good
                    log.warning("election %s: %s campaigns again in %.1fs after %r", self.name, self.candidate,
                                pause, exc)
                    with contextlib.suppress(Exception):
                        await self.resign()
                    await asyncio.sleep(pause)  # a backoff pause, not a wait for an event
                    pause = min(pause * 2, longest)
        finally:
            await asyncio.shield(self.resign())

    async def _serve_once(self, lead: Callable[[int], Awaitable[Any]]) -> None:
        """Campaign once, then lead until the lead is lost or ``lead`` ends.

        Raises:
            Exception: whatever the campaign or ``lead`` raised.
        """
        term = await self.campaign()
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            # Python 3.11's wait_for can swallow a cancel that races
            # with its result; a stop asked for must still stop us.
            raise asyncio.CancelledError
        lost = self.lost
        work = asyncio.ensure_future(lead(term))
        watch = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)
        if not lost.is_set():
            await self.resign()
        if work.done() and not work.cancelled() and work.exception() is not None:
            raise work.exception()  # type: ignore[misc]

    async def __aenter__(self) -> int:
        return await self.campaign()

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()


class LeaderWatch:
    """Leader changes of one election, as an async iterator.

    Use ``async with LeaderWatch(kv, name) as changes: async for leader in changes``.
    The first item is the current state.
    """

    def __init__(self, kv: KeyValueBucket, name: str) -> None:
        self._kv = kv
        self._key = election_key(name)
        self._watcher: Any = None
        self._last: Leader | None = None
        self._seen: tuple[LeaseRecord, float] | None = None

    async def __aenter__(self) -> LeaderWatch:
        try:
            self._watcher = await self._kv.watch(self._key)
        except NATS_ERRORS as exc:
            raise LeaseUnavailableError(f"cannot watch election key {self._key!r}: {exc!r}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._watcher.stop()
            self._watcher = None

    def __aiter__(self) -> LeaderWatch:
        return self

    async def __anext__(self) -> Leader:
        if self._watcher is None:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        while True:
            timeout = None
            if self._seen is not None and not self._seen[0].free:
                # No renewal for a whole ttl (our clock) means the leader is gone.
                timeout = max(self._seen[1] + self._seen[0].ttl - loop.time(), 0.001)
            try:
                entry = await self._watcher.updates(timeout)
            except NatsTimeoutError:
                record = self._seen[0]  # type: ignore[index]
                self._seen = None
                change = self._emit(Leader(None, record.term, expired=True))
                if change is not None:
                    return change
                continue
            if entry is None:
                if self._last is None:
                    self._last = Leader(None, 0)
                    return self._last
                continue
            if not hasattr(entry, "value"):
                raise StopAsyncIteration  # the watch was stopped
            if entry.operation is not None or not entry.value:
                continue  # deleted by hand; the next grant restarts the record
            try:
                record = decode_record(entry.value, entry.revision or 0)
            except LeaseError as exc:
                log.warning("election watch %s: skipping a record: %s", self._key, exc)
                continue
            self._seen = (record, loop.time())
            change = self._emit(Leader(record.holder, record.term))
            if change is not None:
                return change

    def _emit(self, leader: Leader) -> Leader | None:
        if self._last is not None and (self._last.name, self._last.term, self._last.expired) == (
            leader.name, leader.term, leader.expired,
        ):
            return None
        self._last = leader
        return leader
