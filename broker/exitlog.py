"""The exit log: the stream that keeps the supervisor's worker events.

The supervisor publishes every worker exit and quota breach on
``foundation.events.<node>.<kind>``. :class:`ExitLog` finds the stream that
stores those subjects — an existing one, or ``WORKER_EXITS``, declared here
when none does — and replays a node's events from a moment on, for whoever
must explain how a worker died (:mod:`workers.journal`).

Every nats error comes out as a :class:`~config.errors.BrokerError`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from broker import catalog, subjects
from broker.connection import translated

log = logging.getLogger("foundation.broker.exitlog")

_PROBE = "foundation.events.probe.exit"  # a subject the exit log stores
_CREATED_MEANWHILE = 10058  # the stream was declared by someone else since we looked


class ExitLog:
    """The stream of worker events, if there is one. Open it with :meth:`open`.

    Args:
        js: the JetStream context.
        stream: the stream's name; ``None``: no stream keeps the events.
    """

    def __init__(self, js: JetStreamContext, stream: str | None) -> None:
        self._js = js
        self.stream = stream

    @classmethod
    async def open(cls, js: JetStreamContext) -> ExitLog:
        """Find the stream of the events, or declare ``WORKER_EXITS``.

        A stream that cannot be declared is logged and left out: deaths are
        then reported without their exit status.

        Raises:
            BrokerError: NATS did not answer, or refused the lookup.
        """
        try:
            try:
                return cls(js, await js.find_stream_name_by_subject(_PROBE))
            except nats.js.errors.NotFoundError:
                pass
            try:
                await js.add_stream(catalog.exits_stream())
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _CREATED_MEANWHILE:
                    log.warning("exit log stream not declared (%s); deaths will be reported without their exit status",
                                exc.description)
                    return cls(js, None)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, "opening the exit log") from exc
        return cls(js, subjects.EXITS_STREAM)

    async def replay(self, events: str, start: float, timeout: float) -> AsyncIterator[tuple[str, bytes]]:
        """The events on ``events`` (see :func:`~broker.subjects.node_events`) stored
        from ``start`` (epoch seconds) on: ``(subject, body)``, in order.

        Ends after the last one stored, or when none comes within ``timeout``
        seconds. Close it (``contextlib.aclosing``) when leaving it early.

        Raises:
            BrokerError: the log cannot be read.
        """
        if self.stream is None:
            return
        since = datetime.datetime.fromtimestamp(start, tz=datetime.timezone.utc)
        try:
            # Count first: asking the consumer how much is pending races with
            # the messages it pushes at once.
            info = await self._js.stream_info(self.stream, subjects_filter=events)
            if not info.state.subjects:
                return
            sub = await self._js.subscribe(
                events,
                stream=self.stream,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
            )
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"reading the exit log {self.stream}") from exc
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    return
                except nats.errors.Error as exc:
                    raise translated(exc, f"reading the exit log {self.stream}") from exc
                yield msg.subject, msg.data
                if msg.metadata.num_pending == 0:
                    return
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass
