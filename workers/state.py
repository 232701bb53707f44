"""Persistent agent state with effectively-once application of tasks.

An agent (a worker slot) owns a JSON-able dict, ``ctx.state``, kept in the
``agent_state`` bucket (:mod:`workers.statestore`). The rules:

* **One task at a time.** Handlers of a stateful pool apply their effects
  one after the other, like an actor processing its mailbox: an async
  handler under :attr:`AgentState.lock`, a sync one on the agent's one
  thread (:mod:`workers.stateful`), which runs them in the order they were
  claimed. Two handlers interleaving on one dict would let a task that later
  fails leave half its effects behind, or a commit capture half of another
  task's.
* **Record, then commit, then publish, then ack.** After the handler returns,
  the state is snapshotted (:meth:`AgentState.snapshot`, on the thread that
  ran it) and :meth:`AgentState.record` adds the task id to the *applied*
  list and its result to the *outbox*, in the order the tasks ran. A single
  committer writes the newest recorded snapshot with compare-and-set, so the
  tasks recorded meanwhile are committed together (group commit). Only once
  a task's record is stored does the worker publish its result and ack it.
* **Rollback.** A handler that raises (or runs over its soft time limit) has
  its partial effects discarded: the state goes back to the snapshot taken
  after the task before it.
* **Applied means applied.** Before running a task, the worker looks its id
  up in the applied list (and, for a redelivery, in the other agents' lists
  of the pool): a task found there is not run again; its recorded result is
  re-published (the ``Nats-Msg-Id`` deduplicates it) and it is acked.
* **Settling.** A task is *settled* when its result is stored and its ack (or
  the deletion of its message) is confirmed; only then does it leave the
  outbox. Unsettled tasks never leave the applied list; settled ones stay
  for ``state_window`` more tasks, then are forgotten.
* **Leases.** A commit carrying a task is only sent while that task's
  delivery is certainly still this worker's (its ack deadline, renewed by
  heartbeats, is not near, and the connection has not dropped since). If a
  delivery may have moved to another worker before its record was stored,
  everything recorded since the last commit is abandoned: the key is re-read,
  fenced by rewriting it (so a delayed earlier write cannot land later), the
  state reset to it, and those tasks left to be redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from broker import decode, encode
from config.errors import WorkerError
from workers.statestore import TRANSIENT, StateConflictError, StateError, StateStore, StoredState

log = logging.getLogger("foundation.worker.state")

SETTLE_DELAY = 0.2  # seconds a commit that only settles tasks waits to be grouped
RETRY_DELAY_MAX = 1.0


class TaskAbandoned(WorkerError):
    """The task's effects were discarded before they were stored; it will be redelivered."""


class Lease(Protocol):
    """A delivery's claim to be the only one working on its task."""

    def lease_valid(self) -> bool: ...


@dataclass
class Applied:
    """A task the agent has already applied.

    Attributes:
        result: the result body to (re)publish; ``None`` once it is stored.
        stored: resolves when the record is committed; raises
            :class:`TaskAbandoned` if it never will be.
    """

    task_id: str
    result: dict[str, Any] | None
    stored: asyncio.Future[None]


@dataclass
class _Record:
    number: int
    task_id: str
    lease: Lease
    future: asyncio.Future[None]


class AgentState:
    """The state of one agent, its applied window and its committer.

    Args:
        store: the bucket.
        key: this agent's key (:func:`workers.statestore.agent_key`).
        window: settled task ids remembered besides the unsettled ones.
        is_connected: whether NATS is reachable now.
    """

    def __init__(self, store: StateStore, key: str, *, window: int, is_connected: Callable[[], bool]) -> None:
        self.store = store
        self.key = key
        self.window = window
        self.is_connected = is_connected
        self.state: dict[str, Any] = {}
        self.lock = asyncio.Lock()
        self.failed: BaseException | None = None
        self._state_bytes = b"{}"  # the state after the last recorded task: what is committed
        self._applied_bytes = b"{}"  # the state after the last applied task: the rollback point
        self._claims: dict[str, asyncio.Future[None]] = {}  # tasks claimed for the agent's thread, not collected
        self._applied: dict[str, None] = {}  # ordered set, oldest first
        self._outbox: dict[str, dict[str, Any]] = {}
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._records: list[_Record] = []  # recorded, not yet committed
        self._number = 0
        self._revision = 0
        self._settled_since_write: set[str] = set()
        self._ambiguous: list[tuple[bytes, int]] = []  # writes that timed out: (data, last record number)
        self._wake = asyncio.Event()
        self._recorded = asyncio.Event()
        self._closing = False
        self._wedged = False
        self._committer: asyncio.Task[None] | None = None

    # -- life cycle ----------------------------------------------------------

    async def open(self) -> dict[str, dict[str, Any]]:
        """Load the stored state and start the committer.

        Returns:
            The unsettled tasks of a previous incarnation, ``{task_id:
            {"seq": stream sequence, "result": body}}``: their effects are
            stored, their results and acks may not be. The caller settles
            each, then calls :meth:`settle`.
        """
        stored = await self.store.load(self.key)
        self._reset(stored)
        self._committer = asyncio.create_task(self._run(), name=f"state committer {self.key}")
        return {k: dict(v) for k, v in self._outbox.items()}

    async def close(self, timeout: float = 5.0) -> None:
        """Commit what is recorded and settled, then stop the committer."""
        self._closing = True
        self._wake.set()
        if self._committer is not None:
            done, _ = await asyncio.wait({self._committer}, timeout=timeout)
            if not done:
                self._committer.cancel()
                log.warning("%s: state committer still busy after %.0fs; unsettled tasks stay in the outbox", self.key, timeout)

    @property
    def wedged(self) -> bool:
        """A handler got stuck holding the lock (see :meth:`wedge`)."""
        return self._wedged

    def wedge(self) -> None:
        """A handler is stuck holding the lock: never hand the dict out again.

        Called when a hard time limit fires. The stuck handler may still touch
        ``state``; commits use only snapshots taken before it started.
        """
        self._wedged = True

    # -- the task path -------------------------------------------------------

    def lookup(self, task_id: str) -> Applied | None:
        """The task if this agent applied it (committed or not yet)."""
        if task_id not in self._applied:
            return None
        future = self._futures.get(task_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
        entry = self._outbox.get(task_id)
        return Applied(task_id, entry["result"] if entry else None, future)

    def rollback(self) -> None:
        """Discard the effects of the handler that ran since the last task applied.

        Called on the thread that ran the handler (the loop's, for an async one).
        """
        self.state.clear()
        self.state.update(decode(self._applied_bytes))

    def snapshot(self) -> bytes:
        """The state after a handler returned, now the rollback point (on the thread that ran it).

        Raises:
            CodecError: the state is not JSON-serializable (call :meth:`rollback`).
        """
        self._applied_bytes = data = encode(self.state)
        return data

    def claim(self, task_id: str) -> None:
        """``task_id`` goes to the agent's thread: another delivery of it waits (:meth:`claimed`)."""
        self._claims[task_id] = asyncio.get_running_loop().create_future()

    def claimed(self, task_id: str) -> asyncio.Future[None] | None:
        """Resolved once the claimed call of ``task_id`` is collected (``None``: not claimed)."""
        return self._claims.get(task_id)

    def release(self, task_id: str) -> None:
        """The claimed call of ``task_id`` is collected (recorded, failed or never run)."""
        future = self._claims.pop(task_id, None)
        if future is not None:
            future.set_result(None)

    async def _quiet(self) -> None:
        """Wait until no claimed call is left on the agent's thread (hold the lock: none is claimed anew)."""
        while self._claims:
            await asyncio.wait(set(self._claims.values()))

    def record(
        self, task_id: str, seq: int, result: dict[str, Any], lease: Lease, reply_to: str | None = None,
        snapshot: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Record that ``task_id`` was applied, with its result and the state it left.

        Tasks are recorded in the order they ran: under the lock, or as the
        agent's thread's calls are collected (given their ``snapshot``).

        Returns:
            A future resolved once the record is stored (raising
            :class:`TaskAbandoned` if it will not be).

        Raises:
            CodecError: the state is not JSON-serializable (call :meth:`rollback`).
            StateError: the committer stopped (a conflict, or NATS closed).
        """
        if self.failed is not None:
            raise self.failed
        self._state_bytes = self.snapshot() if snapshot is None else snapshot
        self._applied.pop(task_id, None)
        self._applied[task_id] = None
        self._outbox[task_id] = {"seq": seq, "result": result, **({"reply_to": reply_to} if reply_to else {})}
        self._number += 1
        future = asyncio.get_running_loop().create_future()
        self._records.append(_Record(self._number, task_id, lease, future))
        self._futures[task_id] = future
        self._wake.set()
        self._recorded.set()
        return future

    def settle(self, task_id: str) -> None:
        """The task's result is stored and its message gone: drop it from the outbox."""
        if self._outbox.pop(task_id, None) is not None:
            self._settled_since_write.add(task_id)
            self._wake.set()

    # -- committing ----------------------------------------------------------

    def _encode(self) -> bytes:
        settled = [t for t in self._applied if t not in self._outbox]
        for task_id in settled[: max(0, len(settled) - self.window)]:
            del self._applied[task_id]
        return orjson.dumps(
            {
                "v": 1,
                "state": orjson.Fragment(self._state_bytes),
                "applied": list(self._applied),
                "outbox": self._outbox,
            }
        )

    def _reset(self, stored: StoredState) -> None:
        self.state.clear()
        self.state.update(stored.state)
        self._state_bytes = self._applied_bytes = encode(self.state)
        self._applied = dict.fromkeys(stored.applied)
        self._outbox = dict(stored.outbox)
        self._revision = stored.revision

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._records and self._settled_since_write and not self._closing:
                    # Only settlements: let more gather into one write, unless
                    # a record (which must not wait) arrives first.
                    self._recorded.clear()
                    try:
                        await asyncio.wait_for(self._recorded.wait(), SETTLE_DELAY)
                    except asyncio.TimeoutError:
                        pass
                    self._wake.clear()
                await self._commit()
                if self._closing and not self._records and not self._settled_since_write:
                    return
        except asyncio.CancelledError:
            self._fail_records(TaskAbandoned("the worker stopped before the state was stored"))
            raise
        except Exception as exc:  # a conflict, or NATS closed for good: nothing more can be stored
            log.error("%s: the state committer stopped: %s", self.key, exc)
            self.failed = exc if isinstance(exc, StateError) else StateError(
                f"agent state {self.key} can no longer be stored: {type(exc).__name__}: {exc}"
            )
            self._fail_records(self.failed)

    async def _commit(self) -> None:
        delay = 0.05
        while self._records or self._settled_since_write:
            if any(not r.lease.lease_valid() for r in self._records):
                await self._abandon()
                return
            if not self.is_connected():
                # A write buffered now could land after the leases ran out.
                await asyncio.sleep(0.05)
                continue
            last = self._number
            settled = set(self._settled_since_write)
            data = self._encode()
            try:
                self._revision = await self.store.write(self.key, data, self._revision)
            except StateConflictError:
                if not await self._resolve_ambiguous():
                    raise
                continue
            except TRANSIENT as exc:
                log.warning("%s: storing state failed (%s); retrying", self.key, type(exc).__name__)
                self._ambiguous.append((data, last))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)
                continue
            self._ambiguous.clear()
            self._settled_since_write -= settled
            self._committed(last)

    def _committed(self, last: int) -> None:
        keep = []
        for r in self._records:
            if r.number <= last:
                self._futures.pop(r.task_id, None)
                if not r.future.done():
                    r.future.set_result(None)
            else:
                keep.append(r)
        self._records = keep

    async def _load(self) -> StoredState:
        delay = 0.05
        while True:
            try:
                return await self.store.load(self.key)
            except TRANSIENT:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)

    async def _resolve_ambiguous(self) -> bool:
        """After a conflict: was it one of our own timed-out writes that landed?"""
        stored = await self._load()
        for data, last in self._ambiguous:
            if stored.raw == data:
                self._revision = stored.revision
                self._ambiguous.clear()
                self._committed(last)
                return True
        return False

    async def _abandon(self) -> None:
        lost = [r.task_id for r in self._records if not r.lease.lease_valid()]
        log.warning("%s: delivery of %s may have moved to another worker before its state was stored; "
                    "abandoning %d uncommitted task(s)", self.key, ", ".join(lost[:3]), len(self._records))
        while True:
            stored = await self._load()
            landed = next((last for data, last in self._ambiguous if stored.raw == data), None)
            if landed is not None:
                # A timed-out write did land: those tasks are applied for good.
                self._revision = stored.revision
                self._committed(landed)
            elif stored.revision != self._revision:
                raise StateConflictError(f"agent state {self.key} moved to revision {stored.revision} behind our back")
            self._ambiguous.clear()
            try:
                # Fence: any earlier write still in flight expects the old revision and now fails.
                self._revision = await self.store.write(self.key, stored.raw, stored.revision)
                break
            except (StateConflictError, *TRANSIENT):
                continue  # re-read: the fence or an earlier write may have landed
        if self._wedged:
            self._reset_keeping_settled(stored)
        else:
            async with self.lock:
                await self._quiet()
                self._reset_keeping_settled(stored)
        self._fail_records(TaskAbandoned("its delivery may have moved to another worker before its state was stored"))

    def _reset_keeping_settled(self, stored: StoredState) -> None:
        settled, fenced = self._settled_since_write, self._revision
        self._reset(stored)
        self._revision = fenced
        for task_id in settled:
            self._outbox.pop(task_id, None)

    def _fail_records(self, exc: BaseException) -> None:
        for r in self._records:
            self._futures.pop(r.task_id, None)
            if not r.future.done():
                r.future.set_exception(exc)
                r.future.exception()  # retrieved: a task that never awaits it is not an error
        self._records = []
