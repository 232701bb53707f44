"""Listening to a subject: plain NATS messages handed to a callback.

For messages published without JetStream, by the server or by any client
(the max-deliveries advisories :mod:`workers.deadletter` listens to). In a
queue group, each message goes to one member of the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import nats.errors

from broker.connection import Connection, translated


class Received(Protocol):
    """A message as a listener's callback gets it."""

    subject: str
    data: bytes


OnMessage = Callable[[Received], Awaitable[None]]


class Listener:
    """One subscription with a callback. Start it with :meth:`start`."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    @classmethod
    async def start(cls, nc: Connection, subject: str, on_message: OnMessage, *, queue: str = "") -> Listener:
        """Hand every message on ``subject`` to ``on_message`` (in ``queue``'s group, if given).

        Raises:
            BrokerError: NATS refused the subscription, or the connection is closed.
        """
        try:
            return cls(await nc.subscribe(subject, queue=queue, cb=on_message))
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"subscribing to {subject}") from exc

    async def stop(self) -> None:
        """Stop listening. Never raises (a closed connection listens to nothing anyway)."""
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error:
            pass
