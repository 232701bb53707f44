"""The consume loop of one worker: the life of a delivery, from fetch to settle.

1. **Fetch** up to the free slots from the pool's work queue
   (:class:`broker.WorkQueue`); each message becomes a
   :class:`~workers.delivery.Delivery` with a *lease* (how long it is
   certainly ours) and is kept alive by heartbeats while held
   (:mod:`workers.inflight`).
2. **Run the chain** (:mod:`workers.middleware`): metrics, *settling*,
   dead-lettering and retries, suspect isolation, the quota gate, the state
   transaction, time limits, then the handler — or the market step. The
   links below settling answer with an :class:`~workers.delivery.Outcome`.
3. **Settle** (the settling link, :mod:`workers.settling`), as
   the outcome says: store its result body (retried until stored) *then*
   ack — confirmed, or else the message deleted, for a stateful task —; or
   nak with a delay; or leave it (its delivery may be another worker's
   now). A crash anywhere before the ack means a redelivery, never a loss.
   The middleware given to the worker (metrics) see the settled outcome.

An exception that escapes the links below settling is logged and the task
naked for a retry; one raised by a middleware given to the worker before
the task was settled, likewise; a task cancelled because the worker stops
is handed back (nak). Nothing is lost either way.

Stopping (``stop`` set, a recycle due, or the agent state failing for
good): fetch no more, wait for the open pull request to end and take in
what it delivered (a delivery counts as an attempt: naking it would waste
one), let every task in hand reach its outcome (up to the pool's
``shutdown``; then hand the rest back).
Tasks whose worker dies on every attempt are dead-lettered through the
server's advisory (:mod:`workers.deadletter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from broker import Message, OutcomeStore, WorkQueue, jetstream
from broker.retry import ELECTION_POLL
from config.errors import BrokerError
from config.schema import PoolConfig
from workers.deadletter import DeadLetters
from workers.delivery import NAK, Delivery, Outcome
from workers.handler import Handler, HandlerCall
from workers.inflight import InFlight
from workers.journal import AttemptJournal
from workers.middleware import Gate, Link, Middleware, Next, chain
from workers.recycle import HARD_TIME_LIMIT, RecyclePolicy
from workers.retries import DeadLettering
from workers.settling import Settling
from workers.stateful import StateTransaction
from workers.suspects import SuspectIsolation
from workers.timelimits import TimeLimits

log = logging.getLogger("foundation.worker")

STOPPED = "stopped"


class Step(Protocol):
    """The last link of the chain, with its own start and stop."""

    async def __call__(self, d: Delivery, call_next: None = None) -> Outcome: ...

    async def start(self) -> None: ...

    def stopping(self) -> None: ...

    async def close(self) -> None: ...


class Worker:
    """Consumes one pool's tasks in this process.

    Args:
        pool: the pool's config.
        worker_id: the slot id, ``<pool>.<n>``.
        nc: a connected NATS client (the worker does not close it).
        handler: the pool's handler.
        node: the node name; with the slot it names the agent's state key.
        middleware: the outermost links of the chain (metrics, …).
        state: the volatile ``ctx.state`` of a stateless pool.
        gate: entered around the rest of the chain (cluster-wide quotas, see
            :mod:`workers.agent`); it may wait, and a wait is not an attempt.
        variables: the live shared variables handlers see as ``ctx.variables``.
        fetch_timeout: seconds a fetch waits for work; bounds how long a stop
            request waits for the fetch in progress.
        step: makes the last link from the bound worker (default: the
            handler call; :func:`workers.market.market_step` for a market pool).
    """

    def __init__(
        self,
        pool: PoolConfig,
        worker_id: str,
        nc: Any,
        handler: Handler,
        *,
        node: str = "local",
        middleware: list[Middleware] | None = None,
        state: dict[str, Any] | None = None,
        fetch_timeout: float = 1.0,
        gate: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
        step: Callable[[Worker], Step] | None = None,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.node = node
        self.nc = nc
        self.handler = handler
        self.middleware: list[Link] = list(middleware or [])
        self.stateful = pool.persist_state and handler.wants_ctx and pool.dispatch != "market"
        self.state: dict[str, Any] = state if state is not None else {}
        self.fetch_timeout = fetch_timeout
        self.gate = gate
        self.variables: Mapping[str, Any] = variables if variables is not None else {}
        self.outcomes = OutcomeStore(nc, None, pool.name)
        self.processed = 0
        self.recycle = RecyclePolicy(pool)
        self.queue: WorkQueue | None = None
        self.inflight: InFlight | None = None
        self.journal: AttemptJournal | None = None
        self.suspects: SuspectIsolation | None = None
        self.transaction: StateTransaction | None = None
        self.dead: DeadLetters | None = None
        self.step: Step | None = None
        self.fatal: BaseException | None = None
        self._make_step = step
        self._chain: Next | None = None
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._room = asyncio.Event()  # set when enough slots are free to fetch again
        self._refill = max(1, min(pool.fetch_batch, pool.concurrency) // 2)
        self._last_fetch = (time.monotonic(), 0)
        self._fetch_retry = 0.0  # seconds to back off before the next fetch; grows while fetches fail
        self._withdrawing: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- start and stop --------------------------------------------------------

    async def bind(self) -> None:
        """Bind to the pool's consumer, restore the agent state, settle what a
        previous incarnation left unsettled, build the chain, start
        dead-lettering and heartbeats. Returns once ready to fetch."""
        pool = self.pool
        queue = await WorkQueue.bind(self.nc, pool.name)
        journal = await AttemptJournal.open(jetstream(self.nc))
        transaction = None
        if self.stateful:
            transaction = await StateTransaction.open(queue, pool, self.node, self.worker_id, self.outcomes,
                                                      serial=not self.handler.is_async)
        self.assemble(queue, journal, transaction)
        self.dead = DeadLetters(
            self.nc, jetstream(self.nc), pool, self.worker_id, self.outcomes, self.journal,
            find_applied=transaction.find_applied if transaction is not None else None,
        )
        await self.dead.start()
        assert self.inflight is not None and self.step is not None
        self.inflight.start()
        await self.step.start()

    def assemble(self, queue: WorkQueue, journal: AttemptJournal,
                 transaction: StateTransaction | None = None) -> None:
        """Build the chain on these broker-side parts (:meth:`bind` opens the
        real ones; unit tests pass stubs)."""
        pool = self.pool
        self.queue = queue
        self.inflight = InFlight(queue, pool.ack_wait)
        self.journal = journal
        self.suspects = SuspectIsolation(journal, pool, self.worker_id, self.node, lambda: len(self._tasks),
                                         self._quiesce)
        self.transaction = transaction
        if transaction is not None:
            self.state = transaction.agent.state
        self.step = self._make_step(self) if self._make_step else HandlerCall(
            self.handler, self.worker_id, self.state, self.variables)
        queue_dispatch = self._make_step is None  # the market's contractors apply quota and limits themselves
        limited = pool.time_limit or pool.hard_time_limit
        self.settling = Settling(queue, self.outcomes, pool, self.worker_id, self._fatal, self._counted)
        self._chain = chain([
            *self.middleware,
            self.settling,
            DeadLettering(pool, self.worker_id, self.node, self.outcomes, journal),
            self.suspects,
            Gate(self.gate) if self.gate is not None and queue_dispatch else None,
            transaction,
            TimeLimits(pool.time_limit, pool.hard_time_limit, lambda: self.stop_fetching(HARD_TIME_LIMIT))
            if limited and queue_dispatch else None,
        ], self.step)
        self._last_fetch = (time.monotonic(), queue.reconnects)

    async def run(self, stop: asyncio.Event) -> str:
        """Consume until ``stop`` is set or a recycle is due, then finish every
        task in hand.

        Returns:
            ``"stopped"``, or the recycle reason (``max_tasks_per_child``,
            ``max_age_s``, ``hard_time_limit``).

        Raises:
            StateError: this agent's state can no longer be stored (another
                process wrote it, or NATS closed).
        """
        if self.queue is None:
            await self.bind()
        assert self.queue is not None and self.suspects is not None and self.step is not None
        watch = asyncio.create_task(self._on_stop(stop), name=f"stop {self.worker_id}")
        try:
            while not stop.is_set() and self.recycle.due() is None and self.fatal is None and not self.queue.is_closed:
                free = self.recycle.budget(min(self.pool.concurrency - len(self._tasks), self.pool.fetch_batch))
                if self._tasks and (free < self._refill or self.suspects.in_hand):
                    # Full, or isolating a suspect: nothing new until tasks end.
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), self.fetch_timeout)
                    except asyncio.TimeoutError:
                        pass
                    continue
                await self._fetch(free)
            self.step.stopping()
            await self._shutdown()
        finally:
            watch.cancel()
            await self.step.close()
        if self.fatal is not None:
            raise self.fatal
        return self.recycle.reason or STOPPED

    async def _on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        assert self.step is not None and self.queue is not None
        self.step.stopping()

    def stop_fetching(self, recycle: str) -> None:
        """Recycle: fetch nothing more from now on (not even what an open request would bring)."""
        self.recycle.request(recycle)
        if self.queue is not None:
            self._withdrawing = asyncio.ensure_future(self.queue.withdraw())

    async def _fetch(self, n: int) -> None:
        assert self.queue is not None
        started, reconnects = time.monotonic(), self.queue.reconnects
        previous, self._last_fetch = self._last_fetch, (started, reconnects)
        try:
            msgs, carried = await self.queue.fetch(n, self.fetch_timeout)
        except BrokerError as exc:
            if not self.queue.is_connected:
                # NATS is away: keep the process, wait for the reconnect.
                log.warning("%s: fetch failed (%s); waiting for NATS", self.worker_id, exc)
                await self._wait_connected()
                return
            # The consumer has no leader just now (its server died; the
            # cluster is electing another): the same fetch works once it has
            # one. Restarting the worker would not make that sooner.
            self._fetch_retry = min(max(self._fetch_retry * 2, 0.05), ELECTION_POLL)
            log.warning("%s: fetch failed (%s); retrying in %.2fs", self.worker_id, exc, self._fetch_retry)
            await asyncio.sleep(self._fetch_retry)
            return
        self._fetch_retry = 0.0
        # A message left over from an earlier fetch may have been delivered
        # as early as that fetch was sent: its lease starts there.
        self._take(msgs[:carried], previous)
        self._take(msgs[carried:], (started, reconnects))

    def _take(self, msgs: list[Message], lease: tuple[float, int]) -> None:
        """Start a task for each message, with a lease from ``lease`` (fetch time, reconnects)."""
        pool, tracker, tasks = self.pool.name, self.inflight, self._tasks
        assert tracker is not None
        for msg in msgs:
            d = Delivery(msg, pool, lease[0], lease[1], tracker)
            tracker.add(d)
            task = asyncio.create_task(self._process(d))
            tasks[task] = d
            task.add_done_callback(self._forget)
        self.recycle.took(len(msgs))

    async def _quiesce(self, *, withdraw: bool = True) -> None:
        """Let nothing more arrive; take in what arrived and was not taken yet
        (delivered, it counts as an attempt: handing it back would waste one)."""
        assert self.queue is not None
        await self.queue.quiesce(withdraw=withdraw)
        self._take(self.queue.take_leftovers(), self._last_fetch)

    def _forget(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        tasks.pop(task, None)
        assert self.suspects is not None
        if self.suspects.in_hand:
            self.suspects.notify()
            self._room.set()
        elif self.pool.concurrency - len(tasks) >= self._refill or not tasks:
            self._room.set()

    async def _wait_connected(self) -> None:
        # nats-py exposes no per-call "reconnected" event; poll modestly.
        assert self.queue is not None
        while not self.queue.is_connected and not self.queue.is_closed:
            await asyncio.sleep(0.1)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for every task in hand to reach its outcome.

        Tasks still unfinished after ``timeout``, or once NATS has been
        unreachable for a second (nothing could be stored or acked), are
        abandoned: cancelled and handed back for redelivery.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        away_since: float | None = None
        while self._tasks:
            now = time.monotonic()
            away_since = None if self.queue is None or self.queue.is_connected else (away_since or now)
            if (deadline is not None and now >= deadline) or (away_since is not None and now - away_since >= 1.0):
                self._abandon(self._tasks.keys(), "the worker is stopping and cannot finish it")
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=2.0)
                return
            await asyncio.wait(set(self._tasks), timeout=0.1)

    async def _shutdown(self) -> None:
        assert self.queue is not None and self.inflight is not None
        deadline = time.monotonic() + max(0.5, self.pool.shutdown - 1.0)
        if self.fatal is None:
            # The open request runs its course (at most fetch_timeout): what
            # it delivers is ours to finish.
            await self.queue.quiesce(withdraw=False)
        await self.queue.stop_receiving()
        if self.fatal is None:
            self._take(self.queue.take_leftovers(), self._last_fetch)
        await self.drain(timeout=max(0.0, deadline - time.monotonic()))
        await self.queue.hand_back()
        if self.dead is not None:
            await self.dead.stop()
        await self.inflight.stop()
        if self.transaction is not None:
            await self.transaction.close()
        if self.queue.is_connected:
            try:
                await self.queue.flush(timeout=2)
            except BrokerError as exc:  # acks not flushed are redelivered
                log.warning("%s: flush before exit failed: %s", self.worker_id, exc)
        await self.queue.close()

    def _abandon(self, tasks: Iterable[asyncio.Task[None]], why: str) -> None:
        for task in list(tasks):
            d = self._tasks.get(task)
            if d is not None and not d.abandon_reason:
                d.abandon_reason = why
            task.cancel()

    # -- one delivery ----------------------------------------------------------

    async def _process(self, d: Delivery) -> None:
        assert self._chain is not None and self.inflight is not None
        try:
            await self._chain(d)
        except asyncio.CancelledError:
            pass  # handed back by the settling link
        except BrokerError as exc:
            # Storing the outcome failed for good (connection closed): the
            # task stays unacked and will be redelivered.
            log.error("%s: task %s left for redelivery: %s", self.worker_id, d.task_id, exc)
        except Exception:  # raised by a middleware given to the worker
            log.exception("%s: a middleware failed on task %s", self.worker_id, d.task_id)
            if not d.settled:
                await self.settling.settle(d, Outcome("retry", settle=NAK, delay=self.pool.backoff_for(d.attempt)))
        finally:
            self.inflight.remove(d)

    def _fatal(self, error: BaseException) -> None:
        self.fatal = error

    def _counted(self) -> None:
        self.processed += 1
