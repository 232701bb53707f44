"""A compare-and-set bucket: a KV bucket whose writes name the revision they replace.

:class:`CasBucket` is what a worker's agent state is kept in
(:mod:`workers.statestore`): ``create`` succeeds only for a key that has no
value, ``update`` only while the key is still at the revision given, and
both return the new revision. Every nats error comes out as a
:class:`~config.errors.BrokerError`: :class:`CasConflictError` when the
revision was not the expected one, :class:`~broker.BrokerUnavailableError`
when the call may succeed if made again (a write that timed out may or may
not have been stored: the caller must find out).
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from broker.connection import translated
from broker.snapshot import current_values
from broker.streams import key_value
from config.errors import BrokerError


class CasConflictError(BrokerError):
    """The key is not at the revision the write expected (or exists, for a create)."""


class CasBucket:
    """One KV bucket with compare-and-set writes. Open it with :meth:`open`."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> CasBucket:
        """Open (creating if needed) ``bucket``."""
        try:
            return cls(js, await key_value(js, bucket), bucket)
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

    async def create(self, key: str, data: bytes) -> int:
        """Store the first value of ``key``; its revision."""
        return await self.update(key, data, 0)

    async def update(self, key: str, data: bytes, revision: int) -> int:
        """Store ``data`` if ``key`` is still at ``revision`` (0: has no value); the new revision.

        Raises:
            CasConflictError: it is not.
        """
        try:
            if revision == 0:
                return await self._kv.create(key, data)
            return await self._kv.update(key, data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise CasConflictError(f"{key} is no longer at revision {revision}") from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"writing {key}") from exc

    async def put(self, key: str, data: bytes) -> int:
        """Store ``data`` whatever the revision (not for agent states: for tests and tools)."""
        try:
            return await self._kv.put(key, data)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translated(exc, f"writing {key}") from exc

    async def values(self, keys: str, timeout: float = 5.0) -> dict[str, tuple[bytes, int]]:
        """Every value stored now under the key pattern ``keys`` (``*`` and ``>`` wildcards)."""
        return await current_values(self._js, self._kv, self._bucket, keys, timeout)
