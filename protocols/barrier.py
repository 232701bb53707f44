"""A reusable barrier: N parties arrive; all pass together once the last arrives.

Message sequence (bucket ``barriers``, one key per barrier)::

    party   -> KV  update(key, {generation: g, parties: N, arrived: [.., me]}, last=R)    arrive (CAS)
    last    -> KV  update(key, {generation: g+1, parties: N, arrived: []}, last=R')      release (CAS)
    party   <- KV  watch(key)                                                          passes on generation > g
    party   -> KV  update(key, {generation: g, arrived: [.. without me]}, last=R'')     withdraw on timeout

Invariants (tests/protocols/test_barrier.py):

1. No party passes generation g before all N parties arrived at generation g:
   the release is the single CAS that empties ``arrived`` and bumps the
   generation, written only by the party whose arrival made ``N``.
2. Every party that arrived at g passes g once it is released, even if it
   sees the record only later or after several more generations (it waits
   for ``generation > g``, not for an exact value).
3. A party that times out withdraws its arrival, unless the release won the
   race, in which case it passes; the barrier stays usable.
4. An arrival counts until withdrawn: a party that dies after arriving still
   counts toward that generation.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from broker import (
    NATS_ERRORS,
    JetStream,
    KeyNotFoundError,
    KeyValueBucket,
    NatsTimeoutError,
    WrongRevisionError,
    codec,
    streams,
    subjects,
)
from config.errors import ProtocolError
from protocols.metrics import timed_round

BARRIER_BUCKET = subjects.BARRIER_BUCKET
_VERSION = 1


class BarrierError(ProtocolError):
    """A barrier was used inconsistently or could not be reached."""


class BarrierTimeoutError(BarrierError):
    """Not every party arrived before the timeout; this party withdrew."""


@dataclass(frozen=True)
class Passage:
    """How a party passed: the generation, and its arrival index (0-based).

    The party with ``index == parties - 1`` arrived last and released the rest.
    """

    generation: int
    index: int


@dataclass(frozen=True)
class _State:
    generation: int
    parties: int
    arrived: list[str]
    revision: int


async def open_barrier_bucket(js: JetStream, bucket: str = BARRIER_BUCKET) -> KeyValueBucket:
    """Open (creating if needed) the KV bucket that holds barriers."""
    return await streams.key_value(js, bucket, history=1)


class Barrier:
    """One party's handle on barrier ``name`` of ``parties`` parties.

    Args:
        kv: the barrier bucket (see :func:`open_barrier_bucket`).
        name: the barrier's name (a KV key).
        parties: how many arrivals release a generation; every party must
            agree on it.
        party: this party's id; a fresh one when omitted.
    """

    def __init__(self, kv: KeyValueBucket, name: str, parties: int, *, party: str | None = None) -> None:
        if parties < 1:
            raise BarrierError(f"a barrier needs at least 1 party, got {parties}")
        self.name = name
        self.parties = parties
        self.party = party or uuid.uuid4().hex[:12]
        self._kv = kv

    @timed_round("barrier", "passed")
    async def wait(self, timeout: float | None = None) -> Passage:
        """Arrive and wait until all parties have arrived.

        Returns:
            the generation passed and this party's arrival index.

        Raises:
            BarrierTimeoutError: the others did not all arrive in time.
            BarrierError: the parties count disagrees, this party already
                waits, or NATS failed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            generation, index = await self._arrive()
            if index == self.parties - 1:
                return Passage(generation, index)
            watcher = await self._kv.watch(self.name)
            try:
                while True:
                    wait = None if deadline is None else deadline - loop.time()
                    if wait is not None and wait <= 0:
                        if await self._withdraw(generation):
                            raise BarrierTimeoutError(
                                f"barrier {self.name!r}: not all {self.parties} parties arrived within {timeout}s"
                            )
                        return Passage(generation, index)
                    try:
                        entry = await watcher.updates(wait)
                    except NatsTimeoutError:
                        continue
                    if entry is not None and getattr(entry, "value", None):
                        if self._parse(entry.value, entry.revision or 0).generation > generation:
                            return Passage(generation, index)
            finally:
                try:
                    await watcher.stop()
                except NATS_ERRORS:
                    pass
        except NATS_ERRORS as exc:
            raise BarrierError(f"barrier {self.name!r} failed: {exc!r}; is NATS reachable?") from exc

    async def _read(self) -> _State | None:
        try:
            entry = await self._kv.get(self.name)
        except KeyNotFoundError:
            return None
        return self._parse(entry.value or b"", entry.revision or 0)

    def _parse(self, data: bytes, revision: int) -> _State:
        try:
            body: dict[str, Any] = codec.decode(data)
            state = _State(int(body["generation"]), int(body["parties"]), list(body["arrived"]), revision)
        except (codec.CodecError, KeyError, TypeError, ValueError) as exc:
            raise BarrierError(f"barrier {self.name!r} record is malformed: {exc}") from exc
        if state.parties != self.parties:
            raise BarrierError(
                f"barrier {self.name!r} has {state.parties} parties but this party expects {self.parties}; "
                "every party must use the same count"
            )
        return state

    async def _write(self, state: _State | None, generation: int, arrived: list[str]) -> bool:
        data = codec.encode({"v": _VERSION, "generation": generation, "parties": self.parties, "arrived": arrived})
        try:
            if state is None:
                await self._kv.create(self.name, data)
            else:
                await self._kv.update(self.name, data, last=state.revision)
        except WrongRevisionError:
            return False  # another party wrote first: read again
        return True

    async def _arrive(self) -> tuple[int, int]:
        while True:
            state = await self._read()
            generation, arrived = (0, []) if state is None else (state.generation, state.arrived)
            if self.party in arrived:
                raise BarrierError(f"party {self.party!r} already waits at barrier {self.name!r}")
            index = len(arrived)
            if index + 1 == self.parties:
                if await self._write(state, generation + 1, []):  # the release
                    return generation, index
            elif await self._write(state, generation, [*arrived, self.party]):
                return generation, index

    async def _withdraw(self, generation: int) -> bool:
        """Take back our arrival; ``False`` if the release happened first."""
        while True:
            state = await self._read()
            if state is None or state.generation > generation:
                return state is None
            arrived = [p for p in state.arrived if p != self.party]
            if await self._write(state, generation, arrived):
                return True
