"""A KV bucket read and written by key: a missing key reads as ``None``.

:class:`Bucket` is what records that are simply overwritten live in (the
attempt journal of :mod:`workers.journal`); :class:`~broker.CasBucket` adds
compare-and-set writes to it. Every nats error comes out as a
:class:`~config.errors.BrokerError`: :class:`~broker.BrokerUnavailableError`
when the call may succeed if made again.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from broker.connection import translated
from broker.snapshot import current_values
from broker.streams import key_value

_B = TypeVar("_B", bound="Bucket")


class Bucket:
    """One KV bucket. Open it with :meth:`open`."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket

    @classmethod
    async def open(cls: type[_B], js: JetStreamContext, bucket: str, *, ttl: float | None = None) -> _B:
        """Open (creating if needed) ``bucket``; ``ttl``: max age of a value, seconds,
        for a bucket the catalog does not declare."""
        try:
            return cls(js, await key_value(js, bucket, ttl=ttl), bucket)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"opening bucket {bucket}") from exc

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value of ``key`` and its revision; ``None`` if it has none."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"reading {key}") from exc
        return entry.value or b"", entry.revision or 0

    async def put(self, key: str, data: bytes) -> int:
        """Store ``data`` whatever the revision; the new revision."""
        try:
            return await self._kv.put(key, data)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"writing {key}") from exc

    async def values(self, keys: str, timeout: float = 5.0) -> dict[str, tuple[bytes, int]]:
        """Every value stored now under the key pattern ``keys`` (``*`` and ``>`` wildcards)."""
        return await current_values(self._js, self._kv, self._bucket, keys, timeout)
