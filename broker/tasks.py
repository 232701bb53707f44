"""The publisher's side of the task contract: publish tasks, await results.

Used by the CLI, the chaos workload and the tests; any other NATS client can
do the same with a JetStream publish and a subscription (see the README).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck

from broker import retry, subjects
from broker.codec import decode, encode
from broker.retry import RETRY_DEADLINE


async def publish_task(
    js: JetStreamContext,
    pool: str,
    payload: Any,
    *,
    task_id: str | None = None,
    reply_to: str | None = None,
    raw: bytes | None = None,
    deadline: float = RETRY_DEADLINE,
) -> PubAck:
    """Publish one task to ``tasks.<pool>`` and wait for the stream's ack.

    With a ``task_id``, a publish whose outcome is unknown (no ack: a
    timeout, a leader election, a reconnect) is retried with the same
    ``Nats-Msg-Id`` for up to ``deadline`` seconds; the stream keeps one
    copy. Without one, a retry could store the task twice, so there is none.

    Args:
        payload: JSON-able body (ignored when ``raw`` is given).
        task_id: sent as ``Nats-Msg-Id``; without it the id is ``TASKS:<seq>``.
        reply_to: a subject that also receives the result.
        raw: exact body bytes, e.g. to publish something that is not JSON.
        deadline: seconds to keep retrying a task with an id.

    Raises:
        NatsUnavailableError: no ack within ``deadline`` (the task may or may
            not be stored; publishing it again with the same id is safe).
    """
    headers: dict[str, str] = {}
    if reply_to:
        headers[subjects.REPLY_TO] = reply_to
    data = raw if raw is not None else encode(payload)
    if task_id:
        return await retry.publish(js, subjects.tasks(pool), data, msg_id=task_id, headers=headers, deadline=deadline)
    return await js.publish(subjects.tasks(pool), data, headers=headers or None)


def task_id_of(ack: PubAck, task_id: str | None) -> str:
    """The id the task will carry in its result."""
    return task_id or subjects.default_task_id(ack.seq)


class ResultCollector:
    """Collects results of one pool by task id, from the ``RESULTS`` stream.

    Open it (:func:`collect_results`) *before* publishing: it reads only
    results stored after it opened. It uses an ordered consumer, which
    detects and repairs gaps, so no result is missed.
    """

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.arrived: dict[str, float] = {}  # task id -> time.perf_counter() of first arrival
        self.duplicates = 0
        self._changed = asyncio.Event()

    def _on_result(self, msg: Msg) -> None:
        body = decode(msg.data)
        task_id = body.get("task_id")
        if task_id in self.results:
            self.duplicates += 1
        else:
            self.arrived[task_id] = time.perf_counter()
        self.results[task_id] = body
        self._changed.set()

    async def wait_for(self, task_ids: set[str] | int, timeout: float | None = None, progress=None) -> dict[str, dict[str, Any]]:
        """Wait until a result is in for each of ``task_ids`` (or for that many).

        Args:
            task_ids: the ids awaited, or a count of results.
            timeout: seconds; ``None`` waits forever.
            progress: called with the number done each time it changes.

        Raises:
            TimeoutError: not all arrived in time.
        """

        def done() -> int:
            if isinstance(task_ids, int):
                return len(self.results)
            return sum(1 for t in task_ids if t in self.results)

        total = task_ids if isinstance(task_ids, int) else len(task_ids)

        async def _wait() -> None:
            while (n := done()) < total:
                if progress:
                    progress(n)
                self._changed.clear()
                await self._changed.wait()
            if progress:
                progress(total)

        await asyncio.wait_for(_wait(), timeout)
        return self.results


@asynccontextmanager
async def collect_results(js: JetStreamContext, pool: str) -> AsyncIterator[ResultCollector]:
    """Open a :class:`ResultCollector` on ``results.<pool>`` (``">"`` for all pools)."""
    collector = ResultCollector()

    async def _cb(msg: Msg) -> None:
        collector._on_result(msg)

    subject = "results.>" if pool == ">" else subjects.results(pool)
    sub = await js.subscribe(subject, cb=_cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    try:
        yield collector
    finally:
        await sub.unsubscribe()


async def read_stream(
    js: JetStreamContext, stream: str, subject: str | None = None, *, start_seq: int = 1, timeout: float = 5.0
) -> list[Msg]:
    """Every message now in ``stream`` (optionally only ``subject``) from ``start_seq`` on, in order."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq > 1 else DeliverPolicy.ALL,
        opt_start_seq=start_seq if start_seq > 1 else None,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(subject or ">", stream=stream, config=config)
    out: list[Msg] = []
    try:
        # A pull consumer delivers nothing until asked, so its pending count
        # is exactly what there is to read.
        pending = (await sub.consumer_info()).num_pending
        while len(out) < pending:
            out.extend(await sub.fetch(min(pending - len(out), 256), timeout=timeout))
        return out
    finally:
        await sub.unsubscribe()
