"""The work-queue consumer a worker takes its pool's tasks from.

:class:`WorkQueue` is a pull consumer bound to a pool's durable consumer on
``TASKS``, spoken in the JetStream pull protocol over one plain inbox
subscription (no nats-py private state is touched):

* :meth:`~WorkQueue.fetch` asks for up to ``n`` messages: first those
  delivered earlier and not taken yet (*leftovers*: a pull request that
  waited may receive messages after its fetch returned), then what the
  server has now (``no_wait``), and only when that is nothing, a request
  that waits up to ``timeout`` for the first message;
* settling one message: :meth:`ack`, :meth:`ack_confirmed` (an ack the
  server confirms, or else the message deleted from the stream),
  :meth:`nak` with a delay, :meth:`in_progress` (pushes the ack deadline
  back), :meth:`term`; :meth:`hand_back` naks the leftovers at shutdown.

Every NATS error is raised as a :class:`~config.errors.BrokerError`:
:class:`BrokerUnavailableError` when a retry may succeed once NATS is back,
:class:`BrokerClosedError` when the connection is closed for good.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker import subjects
from broker.connection import BrokerClosedError, BrokerUnavailableError, translated
from broker.outcomes import AckedPublisher
from broker.stored import delete_message, get_message
from config.errors import BrokerError

log = logging.getLogger("foundation.broker.workqueue")

Message = Msg  # a delivered task: .data, .headers, .metadata (sequence, num_delivered)

# No messages / request expired / request refused / nobody answered (no
# leader just now): the request is over.
_END = ("404", "408", "409", "503")


def status_of(msg: Msg) -> str | None:
    """The status code of a JetStream control message (``None`` for a task)."""
    headers = msg.headers
    if headers is None or msg.reply:  # a task carries its $JS.ACK reply subject
        return None
    return headers.get("Status")


class WorkQueue:
    """A pool's pull consumer, as one worker sees it.

    Use :meth:`bind`; ``nc`` stays open after :meth:`close`.
    """

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self.nc = nc
        self.stream = stream
        self.consumer = consumer
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox() + "."  # each pull request answers on its own subject under it
        self._tokens = itertools.count()
        self._open: dict[str, list[float]] = {}  # reply subject -> [messages it may still deliver, expiry]
        self._queue: collections.deque[Msg] = collections.deque()
        self._arrived = asyncio.Event()
        self._sub: Any = None
        self._waiting: tuple[str, Any] | None = None  # the request that waits, and its own subscription
        self._unanswered = False  # a request of this fetch found no consumer to answer it
        self._js = nc.jetstream(timeout=5.0)
        self._confirms = AckedPublisher(nc)

    @classmethod
    async def bind(cls, nc: Client, pool: str) -> WorkQueue:
        """Bind to the consumer of ``pool`` (declared by the node).

        Raises:
            BrokerError: the consumer does not exist, or NATS refused.
        """
        queue = cls(nc, subjects.TASKS_STREAM, subjects.consumer(pool))
        try:
            await queue._js.consumer_info(queue.stream, queue.consumer)
            queue._sub = await nc.subscribe(queue._inbox + "*", cb=queue._on_msg)
        except nats.js.errors.NotFoundError:
            raise BrokerError(f"the consumer of pool {pool!r} is not declared on {queue.stream}") from None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"binding to the consumer of pool {pool!r}") from exc
        return queue

    async def _on_msg(self, msg: Msg) -> None:
        status = status_of(msg)
        if status is None:
            self._queue.append(msg)
            # A task arrives under its own subject, not its request's; only
            # one request is open at a time (the oldest, if one expired here
            # while the server still answered it).
            for request, left in self._open.items():
                left[0] -= 1
                if left[0] <= 0:
                    del self._open[request]
                break
        elif status in _END:
            self._open.pop(msg.subject, None)  # a status comes on its request's reply subject
            if status == "503":
                self._unanswered = True
            if status == "409":
                log.info("pull request on %s refused: %s", self.consumer, (msg.headers or {}).get("Description"))
        self._arrived.set()

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def is_closed(self) -> bool:
        return bool(self.nc.is_closed)

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established (a reconnect ends every lease)."""
        return int(self.nc.stats["reconnects"])

    async def flush(self, timeout: float) -> None:
        """Return once the server has processed everything sent before."""
        try:
            await self.nc.flush(timeout=timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, "flushing") from exc

    @property
    def leftovers(self) -> int:
        """Messages delivered to an earlier fetch and not taken yet."""
        return len(self._queue)

    def promised(self) -> int:
        """Messages our open pull requests may still deliver."""
        now = time.monotonic()
        for request, (_, expiry) in list(self._open.items()):
            if expiry <= now:
                del self._open[request]
        return int(sum(left for left, _ in self._open.values()))

    async def quiesce(self, *, withdraw: bool = True) -> None:
        """Return once no pull request of ours can deliver anything more.

        A request that waits stays open on the server until its batch is full
        or it expires (the fetch ``timeout``); what it delivers counts as a
        delivery of those tasks (an attempt), taken or not. With
        ``withdraw`` it is dropped at once (the server drops a request nobody
        listens to any more); without, it runs its course. Call this, then
        :meth:`take_leftovers` or :meth:`hand_back`, when nothing new must
        arrive (a suspect about to run alone, a worker stopping).
        """
        if withdraw:
            await self.withdraw()
        while self.promised():
            self._arrived.clear()
            wait = min(expiry for _, expiry in self._open.values()) - time.monotonic()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, wait))
            except asyncio.TimeoutError:
                pass

    async def withdraw(self) -> None:
        """Stop listening to the waiting request (if any): the server drops it,
        and a fetch waiting for it returns (with what came)."""
        if self._waiting is None:
            return
        request, sub = self._waiting
        self._waiting = None
        self._open.pop(request, None)
        self._arrived.set()
        await self._unsubscribe(sub)

    async def stop_receiving(self) -> None:
        """Drop every pull request of ours; once this returns nothing more is
        delivered here, and what the server sent before is in the leftovers.

        Our count of what an open request may still deliver is an estimate
        (expiry is the server's clock, and tasks do not name their request),
        so a stopping worker cannot wait for "nothing promised" alone: a task
        arriving after it handed back its leftovers would be handed back in
        turn, from one stopping worker to the next, each time an attempt.
        """
        await self.withdraw()
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._unsubscribe(sub)
        self._open.clear()

    async def _unsubscribe(self, sub: Any) -> None:
        # Drained, not unsubscribed: the server may have sent tasks on this
        # subscription before it saw the UNSUB (or while a request we took
        # for expired was still open on the server). Dropped here, each would
        # be an attempt that never ran, back only after ack_wait; drained,
        # it arrives as a leftover.
        try:
            if self.nc.is_connected:
                await asyncio.wait_for(sub.drain(), 2.0)
            else:
                await sub.unsubscribe()
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.debug("removing interest in pull requests: %s", exc)

    # -- fetching --------------------------------------------------------------

    async def fetch(self, n: int, timeout: float) -> tuple[list[Msg], int]:
        """Up to ``n`` tasks; waits up to ``timeout`` for the first one.

        One pull request is open at a time, so never more than ``n`` tasks
        are delivered to this worker and not taken (a worker that may take
        only so many more, ``max_tasks_per_child``, is never sent more).

        Returns:
            The messages, and how many of them (at the front) are leftovers of
            an earlier fetch: their ack deadline may have started as early as
            that fetch.

        Raises:
            BrokerUnavailableError: NATS is away; fetch again once it is back.
            BrokerClosedError: the connection is closed.
        """
        out: list[Msg] = []
        self._take(out, n)
        carried = len(out)
        deadline = time.monotonic() + timeout
        self._unanswered = False
        try:
            if self.promised():
                # One request at a time: the open one delivers what comes first.
                if not out and self._waiting is not None:
                    await self._collect(out, n, deadline, until_closed=self._waiting[0], first=True)
                return out, carried
            if len(out) < n:
                # What the server has now (it answers at once, 404 if nothing).
                request = await self._request(n - len(out), timeout, wait=False)
                await self._collect(out, n, deadline, until_closed=request)
            if not out:
                # A request that waits for the first task; it stays open after
                # we return, and what it delivers later is taken next time.
                request = await self._request(n, timeout, wait=True)
                await self._collect(out, n, deadline, until_closed=request, first=True)
            if not out and self._unanswered:
                raise BrokerUnavailableError(f"the consumer {self.consumer} did not answer (no leader just now?)")
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            if out:
                return out, carried
            raise translated(exc, "fetching tasks") from exc
        return out, carried

    def take_leftovers(self) -> list[Msg]:
        """Every task delivered and not taken yet (call :meth:`quiesce` first for all of them)."""
        out: list[Msg] = []
        self._take(out, len(self._queue))
        return out

    def _take(self, out: list[Msg], n: int) -> None:
        queue = self._queue
        while queue and len(out) < n:
            out.append(queue.popleft())

    async def _request(self, batch: int, timeout: float, *, wait: bool) -> str:
        request = str(next(self._tokens))
        body: dict[str, Any] = {"batch": batch}
        if wait:
            # Its own subscription, so that it can be withdrawn.
            await self.withdraw()
            request = self.nc.new_inbox()  # outside the shared inbox's wildcard
            sub = await self.nc.subscribe(request, cb=self._on_msg)
            self._waiting = (request, sub)
            body["expires"] = max(1, int(timeout * 1e9) - 100_000)
        else:
            request = self._inbox + request
            body["no_wait"] = True
        # Until it expires on the server, and the last message is on its way.
        self._open[request] = [batch, time.monotonic() + timeout + 0.05]
        await self.nc.publish(self._next, orjson.dumps(body), reply=request)
        return request

    async def _collect(self, out: list[Msg], n: int, deadline: float, *, until_closed: str, first: bool = False) -> None:
        """Take arrivals until ``n``, until the request ``until_closed`` is over,
        or (``first``) as soon as something came; at most until ``deadline``."""
        while True:
            self._take(out, n)
            if len(out) >= n or until_closed not in self._open or (first and out):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    # -- settling --------------------------------------------------------------

    async def ack(self, msg: Msg) -> None:
        """Acknowledge (fire and forget: a lost ack means a redelivery)."""
        try:
            await msg.ack()
        except nats.errors.Error as exc:
            raise translated(exc, "acking a task") from exc

    async def ack_confirmed(self, msg: Msg, timeout: float) -> None:
        """Acknowledge and wait for the server's confirmation (``timeout``); unconfirmed,
        delete the message from the stream instead (retried until NATS answers)."""
        try:
            # Confirmations are awaited together, like PubAcks.
            await self._confirms.publish(msg.reply, b"+ACK", None, timeout)
            return
        except BrokerError:
            pass
        delay = 0.05
        while True:
            try:
                await self.delete(msg.metadata.sequence.stream)
                return
            except BrokerUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def delete(self, seq: int) -> None:
        """Remove the task at ``seq`` from the stream; already gone is fine."""
        await delete_message(self._js, self.stream, seq)

    async def still_queued(self, seq: int) -> bool:
        """Whether the task at ``seq`` is still in the stream."""
        return await get_message(self._js, self.stream, seq) is not None

    async def last_sequence(self) -> int:
        """The stream sequence of the newest task queued so far (0: none yet)."""
        try:
            info = await self._js.stream_info(self.stream)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"reading the state of {self.stream}") from exc
        return int(info.state.last_seq or 0)

    async def nak(self, msg: Msg, delay: float = 0.0) -> None:
        """Hand the task back for redelivery after ``delay`` seconds."""
        try:
            await msg.nak(delay=delay or None)
        except nats.errors.Error as exc:
            raise translated(exc, "naking a task") from exc

    async def in_progress(self, msg: Msg) -> None:
        """Push the task's ack deadline back by a full ``ack_wait``."""
        try:
            await msg.in_progress()
        except nats.errors.Error as exc:
            raise translated(exc, "sending a heartbeat") from exc

    async def term(self, msg: Msg) -> None:
        """Never deliver this task again."""
        try:
            await msg.term()
        except nats.errors.Error as exc:
            raise translated(exc, "terminating a task") from exc

    async def hand_back(self) -> int:
        """Nak the leftovers, so they need not wait out ``ack_wait``; how many."""
        handed = 0
        while self._queue:
            msg = self._queue.popleft()
            if msg.reply and self.nc.is_connected:
                try:
                    await msg.nak()
                    handed += 1
                except nats.errors.Error:
                    return handed
        return handed

    async def close(self) -> None:
        """Stop receiving (the leftovers should be handed back first)."""
        await self.withdraw()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass
            self._sub = None


__all__ = ["BrokerClosedError", "BrokerUnavailableError", "Message", "WorkQueue", "status_of"]
