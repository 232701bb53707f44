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

import nats.errors
import nats.js.errors

from broker.bucket import Bucket
from broker.connection import translated
from config.errors import BrokerError


class CasConflictError(BrokerError):
    """The key is not at the revision the write expected (or exists, for a create)."""


class CasBucket(Bucket):
    """One KV bucket with compare-and-set writes. Open it with :meth:`open`.

    Its :meth:`put` ignores the revision: not for agent states, for tests and tools.
    """

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
