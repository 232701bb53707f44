"""The messages a stream holds, by sequence, outside any consumer.

A work queue's message leaves ``TASKS`` when it is acked. One whose
deliveries ran out stays until someone deletes it (:mod:`workers.deadletter`
reads it, dead-letters it, deletes it), and so does one whose ack was never
confirmed (:meth:`broker.WorkQueue.ack_confirmed` deletes it instead). Here:
reading one message or the next one on a subject, deleting one (already
gone is fine), and how far a consumer has got through the stream.

Every nats error comes out as a :class:`~config.errors.BrokerError`
(:class:`~broker.BrokerUnavailableError` when a retry may succeed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from broker.connection import translated
from config.errors import BrokerError

_GONE = (10037, 10043, 10057)  # no message found / sequence not found / no message with that sequence


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as the stream stores it."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class ConsumerProgress:
    """How far a consumer has got, in stream sequences."""

    delivered: int  # the last message delivered
    ack_floor: int  # every message up to it is acknowledged (or ran out of deliveries)
    ack_pending: int  # messages delivered and not acknowledged


async def get_message(js: JetStreamContext, stream: str, seq: int, *, subject: str | None = None,
                      next: bool = False) -> StoredMessage | None:
    """The message at ``seq`` in ``stream``; with ``next``, the first at or after it
    (on ``subject``, if given). ``None``: there is none."""
    try:
        msg = await js.get_msg(stream, seq=seq, subject=subject, next=next)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"reading message {seq} of {stream}") from exc
    if msg.seq is None:
        return None
    return StoredMessage(msg.seq, msg.subject or "", dict(msg.headers or {}), msg.data or b"")


async def delete_message(js: JetStreamContext, stream: str, seq: int) -> None:
    """Remove the message at ``seq`` from ``stream``; already gone is fine."""
    try:
        await js.delete_msg(stream, seq)
    except nats.js.errors.NotFoundError:
        pass
    except nats.js.errors.APIError as exc:
        if exc.err_code not in _GONE:
            raise BrokerError(f"deleting message {seq} from {stream}: {exc.description}") from exc
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"deleting message {seq} from {stream}") from exc


async def consumer_progress(js: JetStreamContext, stream: str, consumer: str) -> ConsumerProgress:
    """Where ``consumer`` of ``stream`` stands."""
    try:
        info = await js.consumer_info(stream, consumer)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"reading consumer {consumer} of {stream}") from exc
    return ConsumerProgress(
        delivered=info.delivered.stream_seq if info.delivered else 0,
        ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0,
        ack_pending=info.num_ack_pending or 0,
    )
