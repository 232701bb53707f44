"""The consume loop of one worker: fetch, handle, store the outcome, ack.

Order per task (the delivery guarantee rests on it):

1. decode the body; a body that is not JSON or is too large is dead-lettered
   at once (retrying cannot fix it);
2. a redelivered task is journaled first (:mod:`workers.journal`), so that
   if it kills the worker its dead letter can say how;
3. run the handler, under the pool's time limits (:mod:`workers.timelimits`),
   with heartbeats keeping the delivery alive (:mod:`workers.inflight`);
4. on success, for a stateful agent, record and commit the state
   (:mod:`workers.state`); then store the result (``Nats-Msg-Id`` = task id)
   and wait for its PubAck, *then* ack the task — a crash anywhere before the
   ack means a redelivery, never a loss;
5. on an exception nak with the pool's backoff, or, on the last allowed
   attempt, dead-letter the original body with the reason, store an
   ``ok: false`` result, then ack.

Tasks whose worker dies on every attempt are dead-lettered through the
server's advisory (:mod:`workers.deadletter`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker import CodecError, decode, error_line, is_transient, jetstream, result_body, subjects
from broker.retry import ELECTION_POLL
from config.schema import PoolConfig
from workers.context import TaskContext
from workers.deadletter import DeadLetters
from workers.handler import Handler
from workers.inflight import Delivery, InFlight
from workers.journal import AttemptJournal
from workers.middleware import Middleware, MiddlewareStack, Outcome, Task
from workers.outcomes import OutcomeStore
from workers.recycle import HARD_TIME_LIMIT, RecyclePolicy
from workers.state import AgentState, TaskAbandoned
from workers.stateful import StatefulTasks
from workers.statestore import StateError, StateStore
from workers.suspects import Suspects
from workers.timelimits import HardTimeLimitExceeded, run_limited

log = logging.getLogger("foundation.worker")

STOPPED = "stopped"


class Worker(StatefulTasks):
    """Consumes one pool's tasks in this process.

    Args:
        pool: the pool's config.
        worker_id: the slot id, ``<pool>.<n>``.
        nc: a connected NATS client (the worker does not close it).
        handler: the pool's handler.
        node: the node name; with the slot it names the agent's state key.
        middleware: lifecycle hooks (metrics, …).
        state: the volatile ``ctx.state`` of a stateless pool.
        gate: entered around each handler call (cluster-wide quotas, see
            :mod:`workers.agent`); it may wait, and a wait is not an attempt.
        variables: the live shared variables handlers see as ``ctx.variables``.
        fetch_timeout: seconds a fetch waits for work; bounds how long a stop
            request waits for the fetch in progress.
    """

    def __init__(
        self,
        pool: PoolConfig,
        worker_id: str,
        nc: Client,
        handler: Handler,
        *,
        node: str = "local",
        middleware: list[Middleware] | None = None,
        state: dict[str, Any] | None = None,
        fetch_timeout: float = 1.0,
        gate: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.node = node
        self.nc = nc
        self.js = jetstream(nc)
        self.handler = handler
        self.hooks = MiddlewareStack(middleware or [])
        self.stateful = pool.persist_state and handler.wants_ctx
        self.state: dict[str, Any] = state if state is not None else {}
        self.fetch_timeout = fetch_timeout
        self.gate = gate or nullcontext
        self.variables: Mapping[str, Any] = variables if variables is not None else {}
        self.outcomes = OutcomeStore(nc, self.js, pool.name)
        self.log = logging.getLogger(f"foundation.worker.{worker_id}")
        self.processed = 0
        self.inflight = InFlight(nc, pool.ack_wait)
        self.recycle = RecyclePolicy(pool)
        self.agent: AgentState | None = None
        self.store: StateStore | None = None
        self.journal: AttemptJournal | None = None
        self.dead: DeadLetters | None = None
        self.suspects: Suspects | None = None
        self.fatal: BaseException | None = None
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._sub: Any = None
        self._last_fetch = (time.monotonic(), 0)
        self._fetch_retry = 0.0  # seconds to back off before the next fetch; grows while fetches fail

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- start and stop --------------------------------------------------------

    async def bind(self) -> None:
        """Bind to the pool's consumer, restore the agent state, settle what a
        previous incarnation left unsettled, start dead-lettering and
        heartbeats. Returns once ready to fetch."""
        self._sub = await self.js.pull_subscribe_bind(durable=subjects.consumer(self.pool.name), stream=subjects.TASKS_STREAM)
        self.journal = await AttemptJournal.open(self.js)
        self.suspects = Suspects(self.journal, self.pool, self.worker_id, self.node)
        if self.stateful:
            await self._open_state()
        self.dead = DeadLetters(
            self.nc, self.js, self.pool, self.worker_id, self.outcomes, self.journal,
            find_applied=self._find_applied if self.stateful else None,
        )
        await self.dead.start()
        self.inflight.start()
        self._last_fetch = (time.monotonic(), self.nc.stats["reconnects"])

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
        if self._sub is None:
            await self.bind()
        while not stop.is_set() and self.recycle.due() is None and self.fatal is None and not self.nc.is_closed:
            free = self.recycle.budget(min(self.pool.concurrency - len(self._tasks), self.pool.fetch_batch))
            if self._tasks and (free <= 0 or (self.suspects is not None and self.suspects.in_hand)):
                # Full, or isolating a suspect: nothing new until it is done.
                await asyncio.wait(set(self._tasks), timeout=self.fetch_timeout, return_when=asyncio.FIRST_COMPLETED)
                continue
            await self._fetch(free)
        await self._shutdown()
        if self.fatal is not None:
            raise self.fatal
        return self.recycle.reason or STOPPED

    async def _fetch(self, n: int) -> None:
        leftovers = self._sub._sub._pending_queue.qsize()  # delivered to an earlier fetch, not taken yet
        started, reconnects = time.monotonic(), self.nc.stats["reconnects"]
        previous, self._last_fetch = self._last_fetch, (started, reconnects)
        try:
            msgs = await self._sub.fetch(batch=n, timeout=self.fetch_timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            # NATS is away: keep the process, wait for the reconnect.
            log.warning("%s: fetch failed (%s); waiting for NATS", self.worker_id, type(exc).__name__)
            await self._wait_connected()
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The consumer has no leader just now (its server died; the
            # cluster is electing another): the same fetch works once it has
            # one. Restarting the worker would not make that sooner.
            self._fetch_retry = min(max(self._fetch_retry * 2, 0.05), ELECTION_POLL)
            log.warning("%s: fetch failed (%s); retrying in %.2fs", self.worker_id, type(exc).__name__, self._fetch_retry)
            await asyncio.sleep(self._fetch_retry)
            return
        self._fetch_retry = 0.0
        for i, msg in enumerate(msgs):
            # A message left over from an earlier fetch may have been
            # delivered as early as that fetch was sent: its lease starts there.
            lease_start, lease_reconnects = previous if i < leftovers else (started, reconnects)
            self.recycle.took(1)
            d = self.inflight.add(msg, self._task_of(msg), lease_start, lease_reconnects)
            task = asyncio.create_task(self._process(d))
            self._tasks[task] = d
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if self.suspects is not None:
            self.suspects.notify()

    def _others_in_hand(self) -> int:
        """Tasks held besides the suspects (which wait for these to finish)."""
        return len(self._tasks) - (self.suspects.in_hand if self.suspects is not None else 0)

    async def _wait_connected(self) -> None:
        # nats-py exposes no per-call "reconnected" event; poll modestly.
        while not self.nc.is_connected and not self.nc.is_closed:
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
            away_since = None if self.nc.is_connected else (away_since or now)
            if (deadline is not None and now >= deadline) or (away_since is not None and now - away_since >= 1.0):
                self._abandon(list(self._tasks), "the worker is stopping and cannot finish it")
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=2.0)
                return
            await asyncio.wait(set(self._tasks), timeout=0.1)

    async def _shutdown(self) -> None:
        await self.drain(timeout=max(0.5, self.pool.shutdown - 1.0))
        await self._hand_back_leftovers()
        if self.dead is not None:
            await self.dead.stop()
        await self.inflight.stop()
        if self.agent is not None:
            await self.agent.close()
        if self.nc.is_connected:
            try:
                await self.nc.flush(timeout=2)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:  # acks not flushed are redelivered
                log.warning("%s: flush before exit failed: %s", self.worker_id, exc)

    async def _hand_back_leftovers(self) -> None:
        """Nak messages delivered to a fetch but never taken, so they need not wait out ack_wait."""
        queue = self._sub._sub._pending_queue
        while not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and msg.reply.startswith("$JS.ACK") and self.nc.is_connected:
                try:
                    await msg.nak()
                except nats.errors.Error:
                    return

    def _abandon(self, tasks: list[asyncio.Task[None]], why: str) -> None:
        for task in tasks:
            d = self._tasks.get(task)
            if d is not None and not d.abandon_reason:
                d.abandon_reason = why
            task.cancel()

    # -- one task ------------------------------------------------------------

    def _task_of(self, msg: Msg) -> Task:
        md = msg.metadata
        headers = dict(msg.headers or {})
        return Task(
            task_id=headers.get(subjects.MSG_ID) or subjects.default_task_id(md.sequence.stream),
            pool=self.pool.name,
            attempt=md.num_delivered,
            stream_seq=md.sequence.stream,
            headers=headers,
            started=time.perf_counter(),
        )

    async def _process(self, d: Delivery) -> None:
        task = d.task
        self.hooks.before_task(task)
        outcome: Outcome | None = None
        try:
            outcome = await self._handle(d)
        except asyncio.CancelledError:
            outcome = Outcome("abandoned")
            if self.nc.is_connected:
                try:
                    await d.msg.nak()
                except nats.errors.Error:
                    pass
            log.warning("%s: task %s handed back: %s", self.worker_id, task.task_id, d.abandon_reason or "cancelled")
        except TaskAbandoned as exc:
            # Its delivery may belong to another worker now: neither ack nor nak.
            outcome = Outcome("abandoned", error=exc)
            log.warning("%s: task %s abandoned: %s", self.worker_id, task.task_id, exc)
        except StateError as exc:
            self.fatal = exc
            outcome = Outcome("abandoned", error=exc)
        except Exception as exc:
            # Storing the outcome failed for good (connection closed): the
            # task stays unacked and will be redelivered.
            log.error("%s: task %s left for redelivery: %s", self.worker_id, task.task_id, error_line(exc))
            outcome = Outcome("retry", error=exc)
        finally:
            self.inflight.remove(d)
            if d.suspect and self.suspects is not None:
                self.suspects.release()
            self.hooks.after_task(task, outcome or Outcome("retry"))

    def _context(self, task: Task, state: dict[str, Any]) -> TaskContext:
        return TaskContext(
            task_id=task.task_id, attempt=task.attempt, pool=task.pool, worker=self.worker_id,
            state=state, log=self.log, headers=task.headers, variables=self.variables,
        )

    async def _call(self, payload: Any, ctx: TaskContext) -> Any:
        async with self.gate():  # outside the time limits: waiting for the quota is not running
            running = self.handler.start(payload, ctx)
            return await run_limited(running, self.pool.time_limit, self.pool.hard_time_limit)

    def _result(self, task: Task, seconds: float, result: Any) -> dict[str, Any]:
        return result_body(
            task_id=task.task_id, pool=task.pool, worker=self.worker_id, attempt=task.attempt,
            duration_ms=seconds * 1000, result=result,
        )

    async def _handle(self, d: Delivery) -> Outcome:
        msg, task = d.msg, d.task
        try:
            payload = decode(msg.data, self.pool.max_body_bytes)
        except CodecError as exc:
            await self._dead_letter(d, exc)
            return Outcome("invalid", error=exc)
        if task.attempt > 1 and self.suspects is not None:
            await self.suspects.classify(d)
        if d.suspect and self.suspects is not None:
            async with self.suspects.isolated(d, self._others_in_hand):
                return await self._handle_payload(d, payload)
        return await self._handle_payload(d, payload)

    async def _handle_payload(self, d: Delivery, payload: Any) -> Outcome:
        msg, task = d.msg, d.task
        if self.agent is not None:
            return await self._handle_stateful(d, payload)
        t0 = time.perf_counter()
        try:
            result = await self._call(payload, self._context(task, self.state))
        except HardTimeLimitExceeded as exc:
            return await self._hard_limit(d, exc, time.perf_counter() - t0)
        except Exception as exc:
            return await self._failed(d, exc, time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        await self.outcomes.store_result(self._result(task, seconds, result), task.headers.get(subjects.REPLY_TO))
        await msg.ack()
        self.processed += 1
        return Outcome("ok", result=result, handler_seconds=seconds)

    async def _failed(self, d: Delivery, exc: BaseException, seconds: float) -> Outcome:
        if d.task.attempt >= self.pool.max_deliver:
            await self._dead_letter(d, exc)
            return Outcome("exhausted", error=exc, handler_seconds=seconds)
        if self.journal is not None:
            # So the next attempt knows this one ended in an error, not a death.
            task = d.task
            await self.journal.failed(self.pool.name, task.stream_seq, error_line(exc), task_id=task.task_id,
                                      attempt=task.attempt, worker=self.worker_id, node=self.node, pid=os.getpid())
        await d.msg.nak(delay=self.pool.backoff_for(d.task.attempt))
        return Outcome("retry", error=exc, handler_seconds=seconds)

    async def _hard_limit(self, d: Delivery, exc: HardTimeLimitExceeded, seconds: float) -> Outcome:
        """Give the task back (or dead-letter it on its last attempt) and recycle."""
        task = d.task
        self.recycle.request(HARD_TIME_LIMIT)
        log.error("%s: task %s: %s", self.worker_id, task.task_id, exc)
        if self.agent is not None:
            # Tasks queued behind the stuck handler would wait forever.
            self._abandon([t for t, other in self._tasks.items() if other is not d and not other.past_lock],
                          "a handler before it is stuck")
        return await self._failed(d, exc, seconds)

    async def _dead_letter(self, d: Delivery, exc: BaseException) -> None:
        task = d.task
        error = error_line(exc)
        await self.outcomes.dead_letter(d.msg.data, task_id=task.task_id, error=error, attempts=task.attempt)
        body = result_body(
            task_id=task.task_id, pool=task.pool, worker=self.worker_id, attempt=task.attempt,
            duration_ms=(time.perf_counter() - task.started) * 1000, error=error,
        )
        await self.outcomes.store_result(body, task.headers.get(subjects.REPLY_TO))
        await d.msg.ack()
        self.log.warning("task %s dead-lettered after %d attempt(s): %s", task.task_id, task.attempt, error)
