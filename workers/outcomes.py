"""Storing what became of a task: its result, or its dead letter.

A result that cannot be stored (NATS down, no stream response) is retried
until it is, and only then is the task acked: an acked task always has a
stored outcome. Duplicate stores are harmless because the result's
``Nats-Msg-Id`` is the task id, which the stream deduplicates.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from broker import dead_letter_headers, encode, is_transient, reply_allowed, subjects
from broker.retry import ELECTION_POLL

log = logging.getLogger("foundation.worker")



class OutcomeStore:
    """Publishes results and dead letters for one pool, retrying until stored."""

    def __init__(self, nc: Client, js: JetStreamContext, pool: str, *, max_retry_delay: float = ELECTION_POLL) -> None:
        self.nc = nc
        self.js = js
        self.pool = pool
        self.max_retry_delay = max_retry_delay
        self._results = subjects.results(pool)
        self._dlq = subjects.dlq(pool)

    async def _store(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        delay = 0.05
        while True:
            try:
                await self.js.publish(subject, data, headers=headers)
                return
            except Exception as exc:
                # Transient: NATS away, or RESULTS/DLQ electing a leader.
                if not is_transient(exc) or self.nc.is_closed:
                    raise
                log.warning("storing on %s failed (%s); retrying in %.2fs", subject, type(exc).__name__, delay)
            # Back off before the next attempt; NATS is reconnecting meanwhile.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def store_result(self, body: dict[str, Any], reply_to: str | None) -> None:
        """Store a result on ``results.<pool>``; also send it to ``reply_to`` if that is an inbox."""
        data = encode(body)
        await self._store(self._results, data, {subjects.MSG_ID: body["task_id"]})
        if reply_allowed(reply_to, f"task {body['task_id']} ({subjects.REPLY_TO})"):
            assert reply_to is not None
            try:
                await self.nc.publish(reply_to, data)
            except nats.errors.Error as exc:  # the stored result is the record; the reply is a courtesy
                log.warning("reply to %s for task %s failed: %s", reply_to, body["task_id"], exc)

    async def dead_letter(self, original: bytes, *, task_id: str, error: str, attempts: int) -> None:
        """Store the original body on ``dlq.<pool>`` with the reason headers."""
        headers = dead_letter_headers(task_id=task_id, pool=self.pool, error=error, attempts=attempts)
        await self._store(self._dlq, original, headers)
