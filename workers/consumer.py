"""The consume loop of one worker: fetch, handle, store the outcome, ack.

Order per task (the delivery guarantee rests on it):

1. decode the body; a body that is not JSON or is too large is dead-lettered
   at once (retrying cannot fix it);
2. run the handler;
3. on success store the result (``Nats-Msg-Id`` = task id) and wait for its
   PubAck, *then* ack the task — a crash anywhere before the ack means a
   redelivery, never a loss;
4. on an exception nak with the pool's backoff, or, on the last allowed
   attempt, dead-letter the original body with the reason, store an
   ``ok: false`` result, then ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker import CodecError, decode, error_line, jetstream, result_body, subjects
from config.schema import PoolConfig
from workers.context import TaskContext
from workers.handler import Handler
from workers.middleware import Middleware, MiddlewareStack, Outcome, Task
from workers.outcomes import OutcomeStore

log = logging.getLogger("foundation.worker")


class Worker:
    """Consumes one pool's tasks in this process.

    Args:
        pool: the pool's config.
        worker_id: the slot id, ``<pool>.<n>``.
        nc: a connected NATS client (the worker does not close it).
        handler: the pool's handler.
        middleware: lifecycle hooks (metrics, …).
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
        middleware: list[Middleware] | None = None,
        state: dict[str, Any] | None = None,
        fetch_timeout: float = 1.0,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.nc = nc
        self.js = jetstream(nc)
        self.handler = handler
        self.hooks = MiddlewareStack(middleware or [])
        self.state: dict[str, Any] = state if state is not None else {}
        self.fetch_timeout = fetch_timeout
        self.outcomes = OutcomeStore(nc, self.js, pool.name)
        self.log = logging.getLogger(f"foundation.worker.{worker_id}")
        self.processed = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sub: Any = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def bind(self) -> None:
        """Bind to the pool's durable consumer. Returns once ready to fetch."""
        self._sub = await self.js.pull_subscribe_bind(
            durable=subjects.consumer(self.pool.name), stream=subjects.TASKS_STREAM
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish every task in hand.

        The fetch in progress when ``stop`` is set is awaited rather than
        cancelled: messages it already pulled are processed, so stopping never
        leaves a delivered task to wait out its ack deadline.
        """
        if self._sub is None:
            await self.bind()
        limit = self.pool.concurrency
        # Refill when half the slots are free, not at every free slot: a
        # fetch is a round trip, and topping up one task at a time would pay
        # it per task.
        refill_at = max(1, limit // 2)
        while not stop.is_set():
            free = limit - len(self._in_flight)
            if free < refill_at:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await self._sub.fetch(batch=min(free, self.pool.fetch_batch), timeout=self.fetch_timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
                # NATS is away: keep the process, wait for the reconnect.
                log.warning("%s: fetch failed (%s); waiting for NATS", self.worker_id, type(exc).__name__)
                await self._wait_connected(stop)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._process(msg))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
        await self.drain()

    async def drain(self) -> None:
        """Wait for every in-flight task to reach its outcome."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _wait_connected(self, stop: asyncio.Event) -> None:
        # No event for "reconnected" is exposed per call site; poll the
        # client's state at a modest rate until it is back or we must stop.
        while not stop.is_set() and not self.nc.is_connected and not self.nc.is_closed:
            await asyncio.sleep(0.1)

    async def _process(self, msg: Msg) -> None:
        md = msg.metadata
        headers = dict(msg.headers or {})
        task = Task(
            task_id=headers.get(subjects.MSG_ID) or subjects.default_task_id(md.sequence.stream),
            pool=self.pool.name,
            attempt=md.num_delivered,
            stream_seq=md.sequence.stream,
            headers=headers,
            started=time.perf_counter(),
        )
        self.hooks.before_task(task)
        outcome: Outcome | None = None
        try:
            outcome = await self._handle(msg, task)
        except Exception as exc:
            # Storing the outcome failed for good (connection closed): the
            # task stays unacked and will be redelivered.
            log.error("%s: task %s left for redelivery: %s", self.worker_id, task.task_id, error_line(exc))
            outcome = Outcome("retry", error=exc)
        finally:
            self.hooks.after_task(task, outcome or Outcome("retry"))

    async def _handle(self, msg: Msg, task: Task) -> Outcome:
        try:
            payload = decode(msg.data, self.pool.max_body_bytes)
        except CodecError as exc:
            await self._dead_letter(msg, task, exc)
            return Outcome("invalid", error=exc)
        ctx = TaskContext(
            task_id=task.task_id,
            attempt=task.attempt,
            pool=task.pool,
            worker=self.worker_id,
            state=self.state,
            log=self.log,
            headers=task.headers,
        )
        t0 = time.perf_counter()
        try:
            result = await self.handler(payload, ctx)
        except Exception as exc:
            seconds = time.perf_counter() - t0
            if task.attempt >= self.pool.max_deliver:
                await self._dead_letter(msg, task, exc)
                return Outcome("exhausted", error=exc, handler_seconds=seconds)
            await msg.nak(delay=self.pool.backoff_for(task.attempt))
            return Outcome("retry", error=exc, handler_seconds=seconds)
        seconds = time.perf_counter() - t0
        body = result_body(
            task_id=task.task_id,
            pool=task.pool,
            worker=self.worker_id,
            attempt=task.attempt,
            duration_ms=seconds * 1000,
            result=result,
        )
        await self.outcomes.store_result(body, task.headers.get(subjects.REPLY_TO))
        await msg.ack()
        self.processed += 1
        return Outcome("ok", result=result, handler_seconds=seconds)

    async def _dead_letter(self, msg: Msg, task: Task, exc: BaseException) -> None:
        error = error_line(exc)
        await self.outcomes.dead_letter(msg.data, task_id=task.task_id, error=error, attempts=task.attempt)
        body = result_body(
            task_id=task.task_id,
            pool=task.pool,
            worker=self.worker_id,
            attempt=task.attempt,
            duration_ms=(time.perf_counter() - task.started) * 1000,
            error=error,
        )
        await self.outcomes.store_result(body, task.headers.get(subjects.REPLY_TO))
        await msg.ack()
        self.log.warning("task %s dead-lettered after %d attempt(s): %s", task.task_id, task.attempt, error)
