"""One delivery of a task to this worker, and how it ended.

A :class:`Delivery` is created by the consume loop for each message it
fetches and travels down the middleware chain (:mod:`workers.middleware`);
the chain answers with an :class:`Outcome`, which tells the consume loop how
to settle the message (store the result, then ack; nak with a delay; hand
back; leave it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from broker import subjects

if TYPE_CHECKING:
    from broker import Message
    from workers.inflight import InFlight

OutcomeKind = Literal["ok", "retry", "exhausted", "invalid", "duplicate", "abandoned"]

_NO_HEADERS: dict[str, str] = {}


class Delivery:
    """One delivery of a task to this worker.

    Attributes:
        msg: the message (body in ``msg.data``).
        task_id: its ``Nats-Msg-Id``, or ``TASKS:<stream sequence>``.
        pool: the pool name.
        attempt: 1 for the first delivery, 2 for the first retry, …
        stream_seq: its sequence in ``TASKS``.
        headers: its NATS headers (the message's own dict: do not change it).
        started: ``time.perf_counter()`` at receipt.
        payload: the decoded body (set by the dead-lettering middleware).
        lease_start, reconnects: the lease (see :mod:`workers.inflight`).
        suspect: its last attempt died with its worker (:mod:`workers.suspects`).
        serial: its call on the agent's thread (a sync handler of a stateful pool).
        abandon_reason: why the worker handed it back, if it did.
        failure: the exception the handler raised, if it did (a failure that
            is not this one was raised by a middleware).
        running: the handler call in progress (:class:`~workers.handler.Running`).
        seconds: how long the handler ran, once it has.
    """

    __slots__ = (
        "msg", "task_id", "pool", "attempt", "stream_seq", "headers", "started", "payload",
        "lease_start", "reconnects", "tracker", "last_beat", "suspect", "serial", "abandon_reason",
        "failure", "running", "seconds", "settled",
    )

    def __init__(self, msg: Message, pool: str, lease_start: float, reconnects: int, tracker: InFlight) -> None:
        md = msg.metadata
        headers = msg.headers or _NO_HEADERS
        seq = md.sequence.stream
        self.msg = msg
        self.task_id: str = headers.get(subjects.MSG_ID) or subjects.default_task_id(seq)
        self.pool = pool
        self.attempt: int = md.num_delivered
        self.stream_seq: int = seq
        self.headers: dict[str, str] = headers
        self.started = time.perf_counter()
        self.payload: Any = None
        self.lease_start = lease_start  # time.monotonic() when the fetch (or last confirmed heartbeat) was sent
        self.reconnects = reconnects  # the client's reconnect count when the lease started
        self.tracker = tracker
        self.last_beat = lease_start
        self.suspect = False
        self.serial: Any = None  # its call on the agent's thread (workers.stateful.Applying)
        self.abandon_reason = ""
        self.failure: BaseException | None = None
        self.running: Any = None  # the handler call in progress (workers.handler.Running)
        self.seconds: float | None = None  # how long the handler ran, once it has
        self.settled = False  # the consume loop stored its outcome and settled the message

    @property
    def reply_to(self) -> str | None:
        """Where the task asked for its result to be sent as well."""
        return self.headers.get(subjects.REPLY_TO)

    def lease_remaining(self) -> float:
        """Seconds the delivery is certainly still ours (<= 0: maybe not)."""
        t = self.tracker
        if t.nc.stats["reconnects"] != self.reconnects or not t.nc.is_connected:
            return 0.0
        return self.lease_start + t.ack_wait - t.margin - time.monotonic()

    def lease_valid(self) -> bool:
        return self.lease_remaining() > 0

    def __repr__(self) -> str:
        return f"Delivery({self.task_id!r}, attempt={self.attempt}, seq={self.stream_seq})"


Task = Delivery
"""The name middleware written for earlier versions know a delivery by."""

ACK = "ack"
ACK_CONFIRMED = "ack_confirmed"  # the ack must be confirmed, or the message deleted (stateful tasks)
NAK = "nak"  # redeliver after `delay`
LEAVE = "leave"  # neither ack nor nak: the delivery may belong to another worker now


@dataclass(slots=True)
class Outcome:
    """How a delivery ended.

    ``ok``: result stored, task acked. ``retry``: nak'ed for redelivery.
    ``exhausted``: dead-lettered after ``max_deliver`` attempts. ``invalid``:
    dead-lettered at once (bad JSON, oversize body). ``duplicate``: the agent
    had already applied it; its result re-published, acked. ``abandoned``:
    left for redelivery without running to an outcome (the worker stopped,
    or its delivery may have moved to another worker).

    Attributes:
        body: the result body the consume loop stores before it settles.
        settle: ``ack``, ``ack_confirmed``, ``nak`` (after ``delay``) or ``leave``.
        then: called once the message is settled (a stateful agent drops the
            task from its outbox).
    """

    kind: OutcomeKind
    result: Any = None
    error: BaseException | None = None
    handler_seconds: float | None = None
    body: dict[str, Any] | None = None
    settle: str = ACK
    delay: float = 0.0
    then: Callable[[], None] | None = None
