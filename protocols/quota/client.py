"""A worker's side of the quota protocol: small leases held locally.

Rate: the client asks the pool's service for ``batch`` tokens at a time and
spends them locally, so ``acquire()`` usually returns without any I/O. When
the local stock falls to ``low_water`` it fetches the next batch in the
background. Tokens expire with their window (at a deadline the client
computes from its own clock, see :mod:`protocols.quota.wire`).

Concurrency: ``async with client.slot():`` holds one cluster-wide slot. The
client keeps the slots it was granted while it uses them and renews them
every third of their TTL, handing idle ones back; a new slot costs a round
trip only when every held slot is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from broker import NATS_ERRORS, Connection, codec
from protocols.quota.errors import QuotaTimeoutError, QuotaUnavailableError
from protocols.quota.metrics import BREACHES
from protocols.quota.wire import QuotaRequest, reply_count, reply_seconds, request_subject

log = logging.getLogger("foundation.quota")

_NO_SERVICE_BACKOFF = (0.02, 0.5)  # first and longest wait between tries while no service answers
_MIN_RETRY = 0.001  # seconds: a refusal asking to retry sooner (or at once) cannot make us spin


class QuotaClient:
    """Rate tokens and concurrency slots of one pool, for one holder.

    Args:
        nc: NATS connection.
        pool: the pool.
        holder: who holds the leases (the worker's slot id); recorded in the ledger.
        batch: tokens asked for at a time. Small batches share the budget
            more evenly between workers; large ones make fewer round trips.
        low_water: refill in the background when this many tokens remain
            (default: a quarter of ``batch``).
        timeout: default seconds :meth:`acquire` and :meth:`acquire_slot` wait.
        request_timeout: seconds to wait for one service reply.
    """

    def __init__(self, nc: Connection, pool: str, holder: str, *, batch: int = 10, low_water: int | None = None,
                 timeout: float = 30.0, request_timeout: float = 1.0) -> None:
        self.nc = nc
        self.pool = pool
        self.holder = holder
        self.batch = max(1, batch)
        self.low_water = self.batch // 4 if low_water is None else low_water
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.subject = request_subject(pool)
        self.tokens_granted = 0
        self.tokens_used = 0
        self._grants: deque[list[float]] = deque()  # [tokens left, deadline], oldest deadline first
        self._fetch: asyncio.Task[float] | None = None
        self._queue = asyncio.Lock()
        self._queued = 0
        self._no_service = False
        self._backoff = _NO_SERVICE_BACKOFF[0]
        self._slots_held = 0
        self._slots_in_use = 0
        self._slots_deadline = 0.0
        self._slot_ttl = 0.0
        self._overrun_deadline = -1.0
        self._last_refusal: dict[str, Any] | None = None
        self._slot_lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None

    # -- talking to the service ---------------------------------------------------

    async def _ask(self, request: QuotaRequest) -> dict[str, Any] | None:
        """One request; None when no service answered (none elected, or it just died)."""
        try:
            msg = await self.nc.request(self.subject, request.encode(), timeout=self.request_timeout)
            body = codec.decode(msg.data)
        except (*NATS_ERRORS, codec.CodecError) as exc:
            # No responders, a timeout, a closed connection or a garbled reply: all
            # mean "no service answered"; the caller retries with backoff.
            log.debug("quota %s: no answer (%s)", self.pool, type(exc).__name__)
            self._no_service = True
            return None
        self._no_service = False
        self._backoff = _NO_SERVICE_BACKOFF[0]
        return body if isinstance(body, dict) else None

    def _no_service_wait(self) -> float:
        wait, self._backoff = self._backoff, min(self._backoff * 2, _NO_SERVICE_BACKOFF[1])
        return wait

    def _give_up(self, what: str, waited: float) -> Exception:
        if self._no_service:
            return QuotaUnavailableError(
                f"no quota service of pool {self.pool!r} answered within {waited}s; is one running on some node?"
            )
        return QuotaTimeoutError(
            f"{what} of pool {self.pool!r}: still refused after {waited}s (last refusal: {self._last_refusal})"
        )

    # -- rate tokens ------------------------------------------------------------------

    def available(self) -> int:
        """Tokens held locally and not expired."""
        now = asyncio.get_running_loop().time()
        grants = self._grants
        while grants and (grants[0][1] <= now or grants[0][0] <= 0):
            grants.popleft()
        return int(sum(g[0] for g in grants if g[1] > now))

    def _take(self, tokens: int) -> bool:
        if self.available() < tokens:
            return False
        for grant in self._grants:
            used = min(grant[0], tokens)
            grant[0] -= used
            tokens -= used
            if not tokens:
                break
        return True

    async def _fetch_tokens(self, want: int) -> float:
        """Ask for tokens; returns 0 when granted, else seconds to wait before asking again."""
        loop = asyncio.get_running_loop()
        sent = loop.time()  # before sending: our deadline is never later than the service's
        body = await self._ask(QuotaRequest("tokens", self.holder, want))
        if body is None:
            return self._no_service_wait()
        if not body.get("ok"):
            self._last_refusal = body
            return reply_seconds(body, "retry_in", 0.05, low=_MIN_RETRY)
        deadline = sent + reply_seconds(body, "expires_in", 0.0)
        tokens = reply_count(body, "tokens", want)  # never more than we asked for
        self.tokens_granted += tokens
        # A grant whose window closed while it travelled is dropped; the caller asks again.
        if deadline > loop.time():
            self._grants.append([tokens, deadline])
        return 0.0

    def _refill(self, want: int) -> asyncio.Task[float]:
        # One request in flight at a time, shared by every waiting acquirer.
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_tokens(want))
        return self._fetch

    async def acquire(self, tokens: int = 1, timeout: float | None = None) -> None:
        """Take ``tokens`` rate tokens, waiting for the budget if needed.

        Waiters are served first come, first served: while any caller waits,
        later callers queue behind it instead of taking the tokens it waits for.

        Raises:
            QuotaTimeoutError: the budget stayed exhausted for ``timeout`` seconds.
            QuotaUnavailableError: no quota service answered for ``timeout`` seconds.
        """
        if not self._queued and self._take(tokens):
            self._spent(tokens)
            return
        limit = self.timeout if timeout is None else timeout
        self._queued += 1
        try:
            async with asyncio.timeout(limit):
                async with self._queue:  # FIFO: the head of the queue takes the next tokens
                    while not self._take(tokens):
                        wait = await asyncio.shield(self._refill(max(self.batch, tokens)))
                        if wait:
                            await asyncio.sleep(wait)  # refused, or no service yet
        except TimeoutError:
            raise self._give_up("rate tokens", limit) from None
        finally:
            self._queued -= 1
        self._spent(tokens)

    def _spent(self, tokens: int) -> None:
        self.tokens_used += tokens
        if self.available() <= self.low_water:
            self._refill(self.batch)  # early renewal: the next acquire finds tokens here

    # -- concurrency slots ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold one cluster-wide concurrency slot for the block."""
        await self.acquire_slot(timeout)
        try:
            yield
        finally:
            self.release_slot()

    async def _hold(self, hold: int) -> float:
        """Ask to hold ``hold`` slots; returns seconds to wait before asking again."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        body = await self._ask(QuotaRequest("slots", self.holder, hold))
        if body is None:
            return self._no_service_wait()
        if not body.get("ok"):
            self._last_refusal = body
            return reply_seconds(body, "retry_in", 0.05, low=_MIN_RETRY)
        self._slots_held = reply_count(body, "held", hold)  # never more than we asked to hold
        self._slot_ttl = reply_seconds(body, "ttl", 0.0)
        self._slots_deadline = sent + self._slot_ttl
        return 0.0 if self._slots_held >= hold else reply_seconds(body, "retry_in", 0.05, low=_MIN_RETRY)

    def _check_overrun(self) -> None:
        lapsed = asyncio.get_running_loop().time() >= self._slots_deadline
        if self._slots_in_use and lapsed and self._overrun_deadline != self._slots_deadline:
            # Our slots' lease ran out while tasks still hold them: the service may have given them away.
            self._overrun_deadline = self._slots_deadline  # count each lapse once
            BREACHES.labels(self.pool, "concurrency").inc()
            log.warning("quota %s: %d slots in use past their lease", self.pool, self._slots_in_use)

    async def acquire_slot(self, timeout: float | None = None) -> None:
        """Take one concurrency slot; release it with :meth:`release_slot`.

        Raises:
            QuotaTimeoutError: no slot came free within ``timeout`` seconds.
            QuotaUnavailableError: no quota service answered for ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        give_up = loop.time() + limit
        async with self._slot_lock:
            while True:
                if self._slots_in_use < self._slots_held and loop.time() < self._slots_deadline:
                    self._slots_in_use += 1
                    break
                self._check_overrun()
                wait = await self._hold(self._slots_in_use + 1)
                if self._slots_in_use < self._slots_held:
                    continue
                left = give_up - loop.time()
                if left <= 0:
                    raise self._give_up("a concurrency slot", limit)
                await asyncio.sleep(min(wait or 0.01, left))
        if self._renewer is None or self._renewer.done():
            self._renewer = loop.create_task(self._renew_slots())

    def release_slot(self) -> None:
        """Give a slot back locally; it returns to the pool at the next renewal."""
        if self._slots_in_use <= 0:
            raise RuntimeError("release_slot() without a matching acquire_slot()")
        self._slots_in_use -= 1

    async def _renew_slots(self) -> None:
        loop = asyncio.get_running_loop()
        while self._slots_held or self._slots_in_use:
            await asyncio.sleep(max(self._slot_ttl / 3, 0.01))
            async with self._slot_lock:
                self._check_overrun()
                # Renew what is in use; hand idle slots back so other workers can have them.
                await self._hold(self._slots_in_use)
            if not self._slots_in_use and not self._slots_held:
                return
            if loop.time() >= self._slots_deadline:
                log.warning("quota %s: slot renewal failed; retrying", self.pool)

    async def close(self) -> None:
        """Stop background work and hand every slot back (best effort)."""
        for task in (self._fetch, self._renewer):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._slots_held:
            with contextlib.suppress(Exception):
                await self._ask(QuotaRequest("slots", self.holder, 0))
            self._slots_held = 0

    async def __aenter__(self) -> QuotaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
