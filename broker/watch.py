"""Watching a KV bucket: its updates one by one, and knowing when a watch went stale.

A watcher delivers the last value of every key, a ``None`` marker ("caught
up"), then every change as it happens. The layers above read it through
:func:`watch_update`, which notices a reconnect of the connection underneath
(:class:`StaleWatchError`: the watch must be opened again).
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from nats.js.kv import KeyValue

from broker.streams import KeyValueBucket
from config.errors import BrokerError

KeyWatcher = KeyValue.KeyWatcher
"""A KV bucket's watcher, as ``KeyValueBucket.watch`` returns it (read it with :func:`watch_update`)."""


class StaleWatchError(BrokerError):
    """The connection reconnected since a KV watch was opened; open a new watch.

    A KV watch is an ordered consumer on the server: when the server restarts
    (or the client lands on another one) it may be gone without the client
    noticing, and the watch would then wait forever.
    """


def reconnects(nc: Any) -> int:
    """How many times the connection ``nc`` has reconnected so far."""
    return int(nc.stats.get("reconnects", 0))


def bucket_connection(kv: KeyValueBucket) -> Any:
    """The connection ``kv`` was opened on: its watches go stale when that one reconnects."""
    return kv._js._nc  # nats-py keeps it only there


async def watch_update(watcher: Any, nc: Any, epoch: int, *, poll: float = 1.0) -> Any:
    """The next item of a KV watcher: an entry, or None for "caught up".

    Args:
        watcher: a ``KeyValue.KeyWatcher``.
        nc: the connection the watcher lives on.
        epoch: :func:`reconnects` of ``nc`` when the watcher was opened.
        poll: how often to look for a reconnect while no update arrives.

    Raises:
        StaleWatchError: the connection reconnected since ``epoch``.
        StopAsyncIteration: the watcher was stopped.
    """
    while True:
        try:
            item = await watcher.updates(timeout=poll)
        except nats.errors.TimeoutError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # Python 3.11's wait_for (inside updates) can turn a cancel
                # that races with its timeout into a timeout; honour it here.
                raise asyncio.CancelledError from None
            if reconnects(nc) != epoch:
                raise StaleWatchError("the NATS connection was re-established; the watch must be reopened") from None
            continue
        if item is not None and not hasattr(item, "key"):
            raise StopAsyncIteration  # the watcher's stop sentinel
        return item
