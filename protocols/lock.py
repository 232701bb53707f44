"""A distributed lock: a :class:`~protocols.lease.Lease` on ``lock.<name>``.

Message sequence (bucket ``leases``)::

    holder  -> KV  grant by CAS (token T+1)      ``async with lock(kv, name) as held``
    holder  -> KV  renewals in the background    the lock outlives any ttl while its holder lives
    waiter  <- KV  watch(key)                    woken by the release, or one ttl after a dead holder's last renewal
    holder  -> KV  free record (token kept)      on leaving the ``async with`` block

Invariants (tests/protocols/test_lock.py: 20 processes increment one shared
counter under the lock; every increment lands and every token is unique):

1. Mutual exclusion: at most one holder believes it holds the lock at once.
2. The lock is held until released or until its holder dies (stops renewing);
   it is never released by merely being taken.
3. Each grant carries a fencing token greater than every earlier grant's.
   A resource that rejects writes carrying a token lower than the highest it
   has seen stays safe even against a holder paused past its lease.
4. ``held.lost`` is set when the holder can no longer be sure it holds the
   lock; work guarded by the lock should stop then.
"""

from __future__ import annotations

import asyncio
import os
import socket

from broker import KeyValueBucket

from protocols.lease import Lease
from protocols.metrics import timed_round


def lock_key(name: str) -> str:
    """The lease key of lock ``name``."""
    return f"lock.{name}"


class Lock:
    """A named lock; ``async with`` acquires it and releases it on exit.

    Args:
        kv: the lease bucket (see :func:`protocols.lease.open_lease_bucket`).
        name: the lock's name.
        holder: shown in the record; ``<host>:<pid>`` when omitted.
        ttl: seconds a dead holder keeps the lock at most.
        timeout: seconds ``async with`` waits before raising
            :class:`~protocols.lease.LeaseTimeoutError`; ``None`` waits forever.
        safety_margin: see :class:`~protocols.lease.Lease`.
    """

    def __init__(
        self,
        kv: KeyValueBucket,
        name: str,
        *,
        holder: str | None = None,
        ttl: float = 10.0,
        timeout: float | None = None,
        safety_margin: float | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._lease = Lease(kv, lock_key(name), holder, ttl, safety_margin=safety_margin)

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) grant."""
        return self._lease.term

    @property
    def held(self) -> bool:
        return self._lease.held

    @property
    def lost(self) -> asyncio.Event:
        return self._lease.lost

    @timed_round("lock", "acquired")
    async def acquire(self, timeout: float | None = None) -> int:
        """Wait for the lock; returns its fencing token.

        Raises:
            LeaseTimeoutError: not acquired within ``timeout`` seconds.
        """
        return await self._lease.acquire(timeout)

    async def try_acquire(self) -> int | None:
        """Take the lock if it is free now; the token, or ``None``."""
        return await self._lease.try_acquire()

    async def release(self) -> None:
        await self._lease.release()

    async def __aenter__(self) -> Lock:
        await self.acquire(self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def lock(
    kv: KeyValueBucket,
    name: str,
    *,
    holder: str | None = None,
    ttl: float = 10.0,
    timeout: float | None = None,
    safety_margin: float | None = None,
) -> Lock:
    """``async with lock(kv, "name") as held:`` — ``held.token`` is the fencing token."""
    return Lock(kv, name, holder=holder, ttl=ttl, timeout=timeout, safety_margin=safety_margin)
