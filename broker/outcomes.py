"""Storing what became of a task: its result, or its dead letter.

A result that cannot be stored (NATS down, no stream response) is retried
until it is, and only then is the task acked: an acked task always has a
stored outcome. Duplicate stores are harmless because the result's
``Nats-Msg-Id`` is the task id, which the stream deduplicates.

Publishes are pipelined (:class:`AckedPublisher`): each goes out at once with
its own reply subject under one inbox subscription, and its PubAck resolves
its future, so the results of every task in flight share the socket writes
and wait for their PubAcks together, instead of one request each.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker import subjects
from broker.codec import encode
from broker.connection import BrokerError, BrokerUnavailableError, translated
from broker.envelope import dead_letter_headers
from broker.replies import reply_allowed
from broker.retry import ELECTION_POLL, is_transient

log = logging.getLogger("foundation.broker.outcomes")

PUBACK_TIMEOUT = 5.0  # seconds a stored publish waits for its PubAck before it counts as failed
EXPIRY_CHECK = 0.25  # seconds between looks for answers that did not come in time


class AckedPublisher:
    """JetStream publishes awaited through one reply subscription.

    Args:
        nc: the connection.
        timeout: seconds to wait for a PubAck.
    """

    def __init__(self, nc: Client, timeout: float = PUBACK_TIMEOUT) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Any = None
        self._starting: asyncio.Future[None] | None = None
        self._waiting: dict[str, tuple[asyncio.Future[None], float]] = {}  # token -> (future, deadline)
        self._tokens = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_future()
            prefix = self.nc.new_inbox() + "."
            try:
                self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_ack)
            except BaseException as exc:
                self._starting.set_exception(exc)
                self._starting.exception()
                self._starting = None
                raise
            self._prefix = prefix
            self._starting.set_result(None)
        await self._starting

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None,
                      timeout: float | None = None) -> None:
        """Publish and wait for the stream's PubAck (or, for an ack, its confirmation).

        Raises:
            BrokerUnavailableError: no PubAck in time, or no stream answered.
            BrokerClosedError: the connection is closed.
            BrokerError: the stream refused the message.
        """
        if not self._prefix:
            await self._start()
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        future = loop.create_future()
        self._waiting[token] = (future, loop.time() + (timeout or self.timeout))
        try:
            await self.nc.publish(subject, data, reply=self._prefix + token, headers=headers)
            if self._timer is None:
                self._timer = loop.call_later(EXPIRY_CHECK, self._expire)
            await future
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"storing on {subject}") from exc
        finally:
            self._waiting.pop(token, None)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix):], None)
        if entry is None or entry[0].done():
            return
        future = entry[0]
        data = msg.data
        if not data:
            status = msg.headers.get("Status") if msg.headers else None
            if status is None:
                future.set_result(None)  # an empty answer: the confirmation of an ack
            else:  # 503: no stream stores this subject (or it has no leader just now)
                future.set_exception(BrokerUnavailableError(f"no stream answered the publish (status {status})"))
        elif b'"error"' in data:
            error = orjson.loads(data).get("error") or {}
            refusal = nats.js.errors.APIError.from_error(error)
            # A stream without a leader just now (a cluster electing one) is worth retrying.
            kind = BrokerUnavailableError if is_transient(refusal) else BrokerError
            future.set_exception(kind(f"the stream refused the publish: {error.get('description', error)}"))
        else:
            future.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for token, (future, deadline) in list(self._waiting.items()):
            if deadline > now:
                continue
            del self._waiting[token]
            if not future.done():
                future.set_exception(BrokerUnavailableError("no answer in time"))
        if self._waiting:
            self._timer = loop.call_later(EXPIRY_CHECK, self._expire)


class OutcomeStore:
    """Publishes results and dead letters for one pool, retrying until stored.

    Args:
        nc: the connection.
        js: unused (kept for callers that pass their JetStream context).
        pool: the pool name.
        max_retry_delay: the longest pause between two attempts, seconds.
    """

    def __init__(self, nc: Client, js: Any, pool: str, *, max_retry_delay: float = ELECTION_POLL) -> None:
        self.nc = nc
        self.pool = pool
        self.max_retry_delay = max_retry_delay
        self.publisher = AckedPublisher(nc)
        self._results = subjects.results(pool)
        self._dlq = subjects.dlq(pool)

    async def _store(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        delay = 0.05
        while True:
            try:
                await self.publisher.publish(subject, data, headers)
                return
            except BrokerError as exc:
                # Transient: NATS away, or RESULTS/DLQ electing a leader.
                if not isinstance(exc, BrokerUnavailableError) or self.nc.is_closed:
                    raise
                log.warning("storing on %s failed (%s); retrying in %.2fs", subject, exc, delay)
            # Back off before the next attempt; NATS is reconnecting meanwhile.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def store_result(self, body: dict[str, Any], reply_to: str | None) -> None:
        """Store a result on ``results.<pool>``; also send it to ``reply_to`` if that is an inbox.

        Raises:
            BrokerClosedError: the connection closed before it was stored.
            BrokerError: the stream refused it.
        """
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
