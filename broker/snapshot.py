"""What a KV bucket holds now: a snapshot read through a watcher.

A watcher delivers the last value of every key, then a ``None`` marker
("caught up"). nats-py decides whether to put that marker first by asking the
consumer how many messages are still pending, and when the server has already
sent every value by the time it answers, it says none are and the marker comes
*before* the values. Read as a snapshot, that is an empty bucket. So the
snapshot reads deletes too (then the last entry, the one with nothing pending
after it, always arrives) and believes an early marker only when the stream
holds no subject under the key pattern at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from broker.connection import translated


async def current_values(js: JetStreamContext, kv: KeyValue, bucket: str, keys: str = ">",
                         timeout: float = 5.0) -> dict[str, tuple[bytes, int]]:
    """Every value stored now under ``keys`` (``*`` and ``>`` wildcards), by key, with its revision.

    Raises:
        BrokerError: NATS did not answer within ``timeout`` or refused.
    """
    out: dict[str, tuple[bytes, int]] = {}
    try:
        watcher: Any = await kv.watch(keys)
        try:
            seen = False
            while True:
                entry = await watcher.updates(timeout=timeout)
                if entry is None:
                    if seen or not await _holds_any(js, bucket, keys):
                        return out
                    continue  # an early marker: the values are on their way
                seen = True
                if entry.operation is None:  # a put (deletes and purges carry their operation)
                    out[entry.key] = (entry.value or b"", entry.revision or 0)
                else:
                    out.pop(entry.key, None)
                if entry.delta == 0:
                    return out
        finally:
            await watcher.stop()
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"reading {keys} in bucket {bucket}") from exc


async def _holds_any(js: JetStreamContext, bucket: str, keys: str) -> bool:
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.{keys}")
    return bool(info.state.subjects)
