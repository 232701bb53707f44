"""A lease on a name: KV compare-and-set with a TTL and a fencing term.

Message sequence (bucket ``leases``, one key per lease name)::

    holder  -> KV  update(key, {holder, owner, term: T+1, ttl}, last=R)   grant (CAS on revision R)
    holder  -> KV  update(key, {same, term: T+1}, last=R')                 renew, every ``renew_every``
    holder  -> KV  update(key, {holder: null, owner: null, term}, last=R'') release (record stays)
    waiter  <- KV  watch(key)                                              learns of renewals/releases
    waiter  -> KV  update(key, {..., term: T+2}, last=R'')                 takeover of a free or expired record

Why expiry lives in the record and not in a per-key server TTL:

* A per-key TTL deletes the record on expiry, and with it the last term: the
  next grant could not continue the sequence, so fencing tokens would repeat.
  Here the record is never deleted (release writes a *free* record that keeps
  the term), so ``term = previous term + 1`` holds across every grant.
* Expiry is judged from *durations measured on each party's own monotonic
  clock*, never from timestamps compared across machines, so no clock
  synchronisation is assumed (only that clock rates agree within the margin):

  - the holder sends a renewal at ``t0`` (its clock, read *before* sending) and,
    once the server accepts it, believes it holds until
    ``t0 + ttl - safety_margin``;
  - a contender may take over only by CAS on a revision it has *observed
    unchanged for a whole ttl* on its own clock. It observed revision R at
    ``t1``, after R was written, hence after the holder's ``t0``; it takes
    over after ``t1 + ttl > t0 + ttl - safety_margin``.

Invariants (checked by tests/protocols/test_lease.py and test_election.py):

1. At most one holder believes it holds a name at any instant: the holder's
   belief ends ``safety_margin`` before any takeover is possible.
2. Every grant of a name carries a term one above the previous grant's term;
   the CAS on the revision makes each term granted at most once.
3. ``lost`` is set as soon as the holder can no longer be sure it holds:
   its belief window passed without a confirmed renewal, or a renewal found
   another owner. A lost grant is never silently regained; acquire again.
4. Lease keys are never deleted by this module; deleting one by hand resets
   the term sequence and voids fencing for that name.
5. Any client can write the bucket: :func:`decode_record` is the one strict
   parser (holder and owner strings or null, ``term`` an integer in
   ``[0, MAX_TERM]``, ``ttl`` finite in ``(0, MAX_TTL]``). A record that fails
   it is, to a contender, held by an unknown holder for the contender's own
   ttl: it is taken over (by CAS, continuing from term 0) once it has stayed
   unchanged that long, and never raised into an acquire or an election.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from broker import (
    NATS_ERRORS,
    JetStream,
    KeyNotFoundError,
    KeyValueBucket,
    NatsTimeoutError,
    WrongRevisionError,
    codec,
    streams,
    subjects,
)
from config.errors import ProtocolError

log = logging.getLogger("foundation.protocols.lease")

LEASE_BUCKET = subjects.LEASE_BUCKET
_VERSION = 1
_KEY = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")
MAX_TERM = 2**53 - 2  # term + 1 must still round-trip through every JSON reader
MAX_TTL = 3600.0  # seconds; a record claiming longer is malformed
UNKNOWN_HOLDER = "(malformed record)"


class LeaseError(ProtocolError):
    """A lease operation could not complete."""


class LeaseTimeoutError(LeaseError):
    """The lease was not granted before the timeout."""


class LeaseLostError(LeaseError):
    """This holder no longer holds the lease (expired or taken over)."""


class LeaseUnavailableError(LeaseError):
    """The lease bucket could not be reached."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the bucket says about a lease.

    Attributes:
        holder: the holder's name, ``None`` when the lease is free.
        owner: a nonce unique to one :class:`Lease` object, so that two
            processes that reuse a holder name (a respawned slot) never
            mistake each other's grants for their own.
        term: the term of the latest grant (0 before the first).
        ttl: the holder's ttl in seconds; contenders wait this long.
        revision: the KV revision the record was read at.
    """

    holder: str | None
    owner: str | None
    term: int
    ttl: float
    revision: int

    @property
    def free(self) -> bool:
        return self.holder is None


def _encode(holder: str | None, owner: str | None, term: int, ttl: float) -> bytes:
    return codec.encode({"v": _VERSION, "holder": holder, "owner": owner, "term": term, "ttl": ttl})


def decode_record(data: bytes, revision: int) -> LeaseRecord:
    """Parse a lease record read at ``revision``, strictly (invariant 5).

    Raises:
        LeaseError: the bytes are not a lease record.
    """
    try:
        body: Any = codec.decode(data)
    except codec.CodecError as exc:
        raise LeaseError(f"lease record at revision {revision} is not JSON ({exc}); was the key written by hand?") from exc
    if not isinstance(body, dict):
        raise LeaseError(f"lease record at revision {revision} is not a JSON object; was the key written by hand?")
    holder, owner, term, ttl = body.get("holder"), body.get("owner"), body.get("term"), body.get("ttl")
    problem = None
    if not all(x is None or isinstance(x, str) for x in (holder, owner)):
        problem = "holder and owner must be strings or null"
    elif isinstance(term, bool) or not isinstance(term, int) or not 0 <= term <= MAX_TERM:
        problem = f"term {term!r} is not an integer in [0, {MAX_TERM}]"
    elif isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL):
        problem = f"ttl {ttl!r} is not a number of seconds in (0, {MAX_TTL:g}]"
    if problem is not None:
        raise LeaseError(f"lease record at revision {revision} is malformed: {problem}; was the key written by hand?")
    return LeaseRecord(holder=holder, owner=owner, term=term, ttl=float(ttl), revision=revision)


def _tolerant(name: str, data: bytes, revision: int, ttl: float) -> LeaseRecord:
    """The record, or for a malformed one a record held by an unknown holder for ``ttl``."""
    try:
        return decode_record(data, revision)
    except LeaseError as exc:
        log.warning("lease %s: %s; treating it as held for %.3gs, then taking it over", name, exc, ttl)
        return LeaseRecord(holder=UNKNOWN_HOLDER, owner=None, term=0, ttl=ttl, revision=revision)


async def read_lease(kv: KeyValueBucket, name: str, *, malformed_ttl: float | None = None) -> LeaseRecord | None:
    """The current record of lease ``name``, or ``None`` if it was never granted.

    Args:
        malformed_ttl: if given, a malformed record reads as held by an
            unknown holder for this long instead of raising.

    Raises:
        LeaseUnavailableError: the bucket could not be read.
        LeaseError: the record is malformed and no ``malformed_ttl`` was given.
    """
    try:
        entry = await kv.get(name)
    except KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise LeaseUnavailableError(f"cannot read lease {name!r}: {exc!r}; is NATS reachable?") from exc
    if malformed_ttl is not None:
        return _tolerant(name, entry.value or b"", entry.revision or 0, malformed_ttl)
    return decode_record(entry.value or b"", entry.revision or 0)


async def open_lease_bucket(js: JetStream, bucket: str = LEASE_BUCKET) -> KeyValueBucket:
    """Open (creating if needed) the KV bucket that holds leases."""
    return await streams.key_value(js, bucket, history=1)


class Lease:
    """One holder's claim on a named lease.

    Use ``async with Lease(...) as term:`` to acquire, renew in the background
    and release; or call :meth:`acquire` / :meth:`try_acquire` (which also start
    the background renewal) and :meth:`release`.

    Attributes:
        name: the lease key.
        holder: this holder's name, as recorded in the bucket.
        term: the fencing token of the current (or last) grant; 0 before any.
        lost: set when the current grant can no longer be trusted. A new
            event is made for each grant.
    """

    def __init__(
        self,
        kv: KeyValueBucket,
        name: str,
        holder: str,
        ttl: float,
        *,
        safety_margin: float | None = None,
        renew_every: float | None = None,
    ) -> None:
        if not _KEY.match(name):
            raise LeaseError(f"lease name {name!r} is not a KV key; use letters, digits, '-_/=' and inner dots")
        if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL):
            raise LeaseError(f"lease ttl must be in (0, {MAX_TTL:g}] seconds, got {ttl}")
        margin = ttl * 0.2 if safety_margin is None else safety_margin
        if not 0 <= margin < ttl:
            raise LeaseError(f"safety_margin must be in [0, ttl={ttl}), got {margin}")
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.safety_margin = margin
        # Three renewal chances inside one belief window.
        self.renew_every = renew_every if renew_every is not None else (ttl - margin) / 3
        self.term = 0
        self.lost = asyncio.Event()
        self._kv = kv
        self._owner = uuid.uuid4().hex
        self._revision: int | None = None
        self._valid_until = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._keeper: asyncio.Task[None] | None = None
        # Last revision observed held by someone else, and when (our clock).
        self._seen: tuple[int, float, float] | None = None  # (revision, seen at, its ttl)

    # -- state ---------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True while this holder may act as the holder (belief window open)."""
        return (
            self._revision is not None
            and not self.lost.is_set()
            and asyncio.get_running_loop().time() < self._valid_until
        )

    @property
    def valid_until(self) -> float:
        """End of the belief window on the loop's (monotonic) clock; 0 when not held.

        Work that must finish while the lease is held can be bounded by it.
        """
        return self._valid_until if self._revision is not None and not self.lost.is_set() else 0.0

    @property
    def valid_for(self) -> float:
        """Seconds left in the belief window (0 when not held)."""
        if not self.held:
            return 0.0
        return max(0.0, self._valid_until - asyncio.get_running_loop().time())

    async def record(self) -> LeaseRecord | None:
        """The holder of record, as the bucket says now (a malformed record: an unknown holder)."""
        return await read_lease(self._kv, self.name, malformed_ttl=self.ttl)

    # -- acquiring -----------------------------------------------------------

    async def try_acquire(self) -> int | None:
        """Take the lease if it is free, expired (as observed by us) or ours.

        A record held by another is expired once this object has seen the same
        revision for a whole ttl; repeated calls therefore take over a dead
        holder's lease, and :meth:`acquire` does exactly that via a watch.

        Returns:
            the new term, or ``None`` if another holder has it.

        Raises:
            LeaseUnavailableError: the bucket could not be reached.
        """
        if self.held:
            return self.term
        loop = asyncio.get_running_loop()
        current = await read_lease(self._kv, self.name, malformed_ttl=self.ttl)
        now = loop.time()
        if current is not None and not current.free and current.owner != self._owner:
            if self._seen is None or self._seen[0] != current.revision:
                self._seen = (current.revision, now, current.ttl)
                return None
            if now < self._seen[1] + self._seen[2]:
                return None
            log.info("lease %s: taking over from %s (term %d) after %.3fs unchanged",
                     self.name, current.holder, current.term, now - self._seen[1])
        term = 1 if current is None else current.term + 1
        data = _encode(self.holder, self._owner, term, self.ttl)
        t0 = loop.time()  # before sending: the server writes after this instant
        try:
            if current is None:
                revision = await self._kv.create(self.name, data)
            else:
                revision = await self._kv.update(self.name, data, last=current.revision)
        except WrongRevisionError:
            return None  # someone else wrote first; they hold it or it moved on
        except NATS_ERRORS as exc:
            raise LeaseUnavailableError(f"cannot write lease {self.name!r}: {exc!r}; is NATS reachable?") from exc
        self._granted(term, revision, t0)
        return term

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait until the lease is granted to this holder.

        Waits on a KV watch of the key: a release is taken at once, and a
        holder that stops renewing is taken over one ttl after its last
        observed renewal.

        Returns:
            the term of the grant (the fencing token).

        Raises:
            LeaseTimeoutError: not granted within ``timeout`` seconds.
            LeaseUnavailableError: the bucket could not be reached.
        """
        term = await self.try_acquire()
        if term is not None:
            return term
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            watcher = await self._kv.watch(self.name)
        except NATS_ERRORS as exc:
            raise LeaseUnavailableError(f"cannot watch lease {self.name!r}: {exc!r}") from exc
        try:
            while True:
                term = await self.try_acquire()
                if term is not None:
                    return term
                now = loop.time()
                wake = now + self.ttl if self._seen is None else self._seen[1] + self._seen[2]
                if deadline is not None:
                    if now >= deadline:
                        raise LeaseTimeoutError(
                            f"lease {self.name!r} not granted within {timeout}s; it is held by another holder"
                        )
                    wake = min(wake, deadline)
                try:
                    # Any update (renewal, release, takeover) or the expiry
                    # instant wakes us; try_acquire then decides.
                    await watcher.updates(timeout=max(wake - now, 0.001))
                except NatsTimeoutError:
                    pass
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    # The client's wait_for (Python 3.11) can swallow a cancel
                    # that races with an update; honour it here.
                    raise asyncio.CancelledError
        finally:
            await _stop_quietly(watcher)

    # -- holding -------------------------------------------------------------

    def _granted(self, term: int, revision: int, t0: float) -> None:
        self.term = term
        self._revision = revision
        self._seen = None
        self.lost = asyncio.Event()
        self._extend(t0)
        if self._keeper is not None:
            self._keeper.cancel()  # it served an earlier grant, lost or released
        self._keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"lease-keeper:{self.name}")
        log.debug("lease %s: granted to %s, term %d", self.name, self.holder, term)

    def _extend(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        self._valid_until = t0 + self.ttl - self.safety_margin
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_at(self._valid_until, self._expired, self.lost)

    def _expired(self, event: asyncio.Event) -> None:
        if not event.is_set():
            log.warning("lease %s: term %d expired without a confirmed renewal", self.name, self.term)
            event.set()

    def _lose(self) -> None:
        self.lost.set()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def renew(self) -> None:
        """Renew the current grant now (the background task calls this).

        Raises:
            LeaseLostError: the grant is lost (expired, or another owner wrote).
            LeaseUnavailableError: the bucket could not be reached; the grant
                stays valid until its belief window closes.
        """
        if self._revision is None or self.lost.is_set():
            raise LeaseLostError(f"lease {self.name!r} is not held by {self.holder}; acquire it again")
        loop = asyncio.get_running_loop()
        lost = self.lost
        data = _encode(self.holder, self._owner, self.term, self.ttl)
        for _ in range(2):
            t0 = loop.time()
            try:
                revision = await self._kv.update(self.name, data, last=self._revision)
            except WrongRevisionError:
                # An earlier renewal whose ack we missed may have landed; adopt
                # it if the record is still our grant, else we lost.
                current = await read_lease(self._kv, self.name, malformed_ttl=self.ttl)
                if current is not None and current.owner == self._owner and current.term == self.term:
                    self._revision = current.revision
                    continue
                self._lose()
                raise LeaseLostError(f"lease {self.name!r} term {self.term} was taken over") from None
            except NATS_ERRORS as exc:
                raise LeaseUnavailableError(f"cannot renew lease {self.name!r}: {exc!r}") from exc
            if lost.is_set() or lost is not self.lost:
                raise LeaseLostError(f"lease {self.name!r} term {self.term} expired before the renewal landed")
            self._revision = revision
            self._extend(t0)
            return
        self._lose()
        raise LeaseLostError(f"lease {self.name!r} changed under us twice while renewing")

    async def _keep(self) -> None:
        lost = self.lost
        delay = self.renew_every
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.renew()
                delay = self.renew_every
            except LeaseLostError:
                return
            except LeaseUnavailableError as exc:
                log.warning("lease %s: renewal failed (%s); retrying", self.name, exc)
                delay = min(self.renew_every, max(self.valid_for / 4, 0.01))

    async def release(self) -> None:
        """Give the lease up, keeping its term in the record.

        Safe to call when not held; a lease already taken over is left alone.
        """
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        revision, self._revision = self._revision, None
        self._valid_until = 0.0
        if revision is None:
            return
        try:
            await self._kv.update(self.name, _encode(None, None, self.term, self.ttl), last=revision)
        except WrongRevisionError:
            pass  # taken over already: nothing of ours to release
        except NATS_ERRORS as exc:
            # The record expires for others one ttl after our last renewal.
            log.warning("lease %s: release failed (%r); it frees itself after %.1fs", self.name, exc, self.ttl)

    async def abandon(self) -> None:
        """Stop renewing without releasing, as a crashed holder would."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        self._lose()
        self._revision = None

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def _stop_quietly(watcher: Any) -> None:
    try:
        await watcher.stop()
    except NATS_ERRORS:
        pass  # the connection is going away; the server drops the consumer
