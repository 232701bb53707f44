"""Retrying NATS calls through outages and leader elections.

On a cluster a JetStream call can fail for a few seconds while a stream or
the meta group elects a new leader (its server died, or left), or while the
client moves to another server. Those failures say nothing about the call:
made again once a leader is back, it succeeds. :func:`is_transient` tells
them apart from real refusals; :func:`retrying` makes a call until it works
or a deadline passes.

Retrying a JetStream *publish* whose ack was lost may store it twice unless
the publish carries a ``Nats-Msg-Id``: the stream drops a repeat of an id it
saw within its duplicate window. :func:`publish` therefore insists on one
and sends the same id on every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from broker import subjects
from broker.connection import TRANSIENT_ERRORS, NatsUnavailableError

log = logging.getLogger("foundation.broker")

T = TypeVar("T")

# JetStream API error codes that mean "no leader just now" (nats-server's
# errors.json): temporarily unavailable, not the leader, stream/consumer offline.
LEADERLESS_CODES = frozenset({10008, 10009, 10118, 10119})

NO_PEERS = 10005  # no suitable peers for placement: too few servers, or one offline just now

RETRY_DEADLINE = 60.0  # seconds; a leader election takes a few, a server restart tens
# Longest pause between attempts on the task path (publishes, fetches, result
# stores): a new leader is usually elected 4-6 s after a kill -9, and a client
# asking every quarter second notices within that much of it.
ELECTION_POLL = 0.25


def is_transient(exc: BaseException) -> bool:
    """True for failures after which the same call may succeed: NATS away,
    a timeout, a stream or the meta group without a leader."""
    if isinstance(exc, TRANSIENT_ERRORS) or isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        if exc.err_code in LEADERLESS_CODES or exc.code == 503:
            return True
        description = str(exc.description or "").lower()
        if exc.err_code == NO_PEERS and "offline" in description:
            return True  # a replica's server is away for now (restarting, or not yet seen current)
        return "leadership" in description
    return False


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    deadline: float = RETRY_DEADLINE,
    max_delay: float = 1.0,
) -> T:
    """Await ``call()`` until it does not fail transiently.

    Args:
        call: makes the call afresh on every attempt.
        what: names the call in logs and the error ("declare stream TASKS").
        deadline: seconds to keep trying; ``0`` tries forever.
        max_delay: longest pause between attempts (they start at 50 ms).

    Raises:
        NatsUnavailableError: still failing transiently at the deadline.
        Exception: any failure that is not transient, at once.
    """
    give_up = time.monotonic() + deadline if deadline else None
    delay = 0.05
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if give_up is not None and time.monotonic() + delay > give_up:
                raise NatsUnavailableError(f"cannot {what}: NATS kept failing for {deadline:g}s ({type(exc).__name__}: {exc})") from exc
            log.warning("%s failed (%s); retrying in %.2fs", what, type(exc).__name__, delay)
        # Backing off while NATS reconnects or elects a leader: no event tells us when it is back.
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: dict[str, str] | None = None,
    deadline: float = RETRY_DEADLINE,
) -> PubAck:
    """A JetStream publish retried with the same ``Nats-Msg-Id`` until acked.

    An attempt whose ack was lost (timeout, leader change, reconnect) may
    have been stored: the repeat carries the same id, so the stream keeps
    one copy (``PubAck.duplicate`` is then True).

    Raises:
        NatsUnavailableError: no ack within ``deadline`` seconds.
    """
    if not msg_id:
        raise ValueError("a retried publish needs a Nats-Msg-Id, or a lost ack could store it twice")
    hdrs = {**(headers or {}), subjects.MSG_ID: msg_id}
    return await retrying(lambda: js.publish(subject, payload, headers=hdrs), what=f"publish to {subject}",
                          deadline=deadline, max_delay=ELECTION_POLL)



