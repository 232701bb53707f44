"""The state transaction: the middleware that applies ``ctx.state`` effectively once.

The rules are in :mod:`workers.state`; this is where a delivery meets them.
Around the rest of the chain (time limits and the handler), for a stateful
pool (``persist_state`` and a handler taking ``ctx``):

1. *claim* the task under the agent lock: a task this agent applied
   already, or (for a redelivery) another agent of the pool applied, is not
   run again: its recorded result is re-published and it is acked
   (``duplicate``). A redelivered task found in no applied list whose
   message has left the stream was settled by an agent that has forgotten
   it since: nothing is left to do. Another delivery of a task being
   applied waits for it first. After a reconnect, a first delivery of a
   task that was queued by then is treated as a possible redelivery (see
   :meth:`StateTransaction.after_reconnect`);
2. run the rest of the chain, one task at a time. A sync handler runs on
   the agent's one thread (:class:`Applying`): the thread runs the calls in
   the order they were claimed, snapshots the state after each (or rolls
   it back after a failure), and the loop records each, in that order, as
   it collects them — so the next call starts without waiting for the loop.
   An async handler runs holding the lock, and is recorded before it lets
   go;
3. an error rolls the state back and travels on (a retry, or the DLQ); a
   hard time limit *wedges* the agent — the stuck handler may still touch
   the state — and hands back every task waiting for its turn;
4. wait until the record is committed; only then does the outcome go on to
   settling, which stores the result, acks (confirmed, or deletes the
   message), and settles the task in the agent.

A delivery whose lease ran out before its record was stored is abandoned
(:class:`~workers.state.TaskAbandoned`): left to be redelivered, never
acked. The order of reads in :meth:`StateTransaction.applied_elsewhere` —
the other agents' lists *before* the stream — matters: an agent forgets a
settled task only after its message left the stream, so a task found in no
list whose message is still queued was applied nowhere.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from broker import CodecError, OutcomeStore, WorkQueue, jetstream, result_body
from config.schema import PoolConfig
from workers.delivery import ACK_CONFIRMED, NAK, Delivery, Outcome
from workers.handler import HandlerThreads
from workers.middleware import Next
from workers.state import AgentState, Applied, TaskAbandoned
from workers.statestore import StateStore, agent_key
from workers.timelimits import HardTimeLimitExceeded

log = logging.getLogger("foundation.worker")

WEDGED = "a handler before it is stuck over its hard time limit"
LEASE_LOST = "its delivery may have moved to another worker while the handler ran"


def done_future() -> asyncio.Future[None]:
    """A future that is already resolved."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class StateTransaction:
    """The stateful path of one worker (a middleware); open it with :meth:`open`.

    Args:
        serial: the handler is sync: run its calls on the agent's thread.
        worker_id: the slot id (the result bodies' ``worker``).
    """

    def __init__(self, agent: AgentState, store: StateStore, queue: WorkQueue, pool: PoolConfig, *,
                 serial: bool = False, worker_id: str = "") -> None:
        self.agent = agent
        self.store = store
        self.queue = queue
        self.pool = pool
        self.worker_id = worker_id
        self.threads = HandlerThreads(1) if serial else None
        self._waiting: dict[asyncio.Task[object], Delivery] = {}  # tasks waiting for their turn
        self._reconnects = queue.reconnects
        self._doubtful_upto = 0  # tasks up to this stream sequence may be redelivered as first deliveries
        self._applied_then: dict[str, dict[str, Any] | None] = {}  # what the pool's other agents had applied then

    @classmethod
    async def open(cls, queue: WorkQueue, pool: PoolConfig, node: str, worker_id: str,
                   outcomes: OutcomeStore, *, serial: bool = False) -> StateTransaction:
        """Restore the agent's state; settle what its previous process left unsettled."""
        nc = queue.nc
        store = await StateStore.open(jetstream(nc))
        agent = AgentState(store, agent_key(node, worker_id), window=pool.state_window,
                           is_connected=lambda: nc.is_connected)
        unsettled = await agent.open()
        for task_id, entry in unsettled.items():
            # Applied (its state stored) but its result or ack may not be.
            if entry.get("result"):
                await outcomes.store_result(entry["result"], entry.get("reply_to"))
            await queue.delete(int(entry["seq"]))
            agent.settle(task_id)
        if unsettled:
            log.info("%s: settled %d task(s) its previous process had applied", worker_id, len(unsettled))
        return cls(agent, store, queue, pool, serial=serial, worker_id=worker_id)

    async def close(self) -> None:
        """Commit what is recorded and settled; release the agent's thread."""
        await self.agent.close()
        if self.threads is not None:
            self.threads.close()

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        agent = self.agent
        if agent.wedged:
            return Outcome("abandoned", settle=NAK)  # no turn will ever come again: hand it back
        me = asyncio.current_task()
        assert me is not None
        self._waiting[me] = d
        try:
            if self.threads is not None:
                return await self._serial(d, call_next)
            return await self._locked(d, call_next)
        finally:
            self._waiting.pop(me, None)

    async def _serial(self, d: Delivery, call_next: Next) -> Outcome:
        """A sync handler: claim the task, then let the agent's thread apply it."""
        agent = self.agent
        while True:
            other = agent.claimed(d.task_id)
            if other is not None:  # another delivery of this task is being applied
                await asyncio.wait({other})
                continue
            async with agent.lock:
                if agent.claimed(d.task_id) is not None:
                    continue
                seen, own = await self._seen(d)
                if seen is None:
                    agent.claim(d.task_id)
            break
        if seen is not None:
            return await self._duplicate(d, seen, own)
        d.serial = applying = Applying(self, d)
        try:
            outcome = await call_next(d)
        except HardTimeLimitExceeded:
            agent.wedge()
            self._hand_back_waiting(d)
            raise
        finally:
            if d.running is None:  # it never reached the thread
                agent.release(d.task_id)
        if applying.stored is None:  # no call of ours returned this (cannot happen)
            raise TaskAbandoned("the task's state was not recorded")
        await applying.stored
        outcome.settle = ACK_CONFIRMED
        outcome.then = functools.partial(agent.settle, d.task_id)
        return outcome

    async def _locked(self, d: Delivery, call_next: Next) -> Outcome:
        """An async handler: it runs, and is recorded, holding the agent lock."""
        agent = self.agent
        await agent.lock.acquire()
        release = True
        try:
            seen, own = await self._seen(d)
            if seen is not None:
                agent.lock.release()
                release = False
                return await self._duplicate(d, seen, own)
            try:
                outcome = await call_next(d)
            except HardTimeLimitExceeded:
                release = False  # the handler may still be touching the state: nobody else may
                agent.wedge()
                self._hand_back_waiting(d)
                raise
            except BaseException:  # an error, or cancelled mid-handler: its effects must not stay
                agent.rollback()
                raise
            if not d.lease_valid():
                agent.rollback()
                raise TaskAbandoned(LEASE_LOST)
            try:
                stored = agent.record(d.task_id, d.stream_seq, outcome.body or {}, d, d.reply_to)
            except CodecError as exc:
                agent.rollback()
                d.failure = exc
                raise
        finally:
            if release:
                agent.lock.release()
        await stored
        outcome.settle = ACK_CONFIRMED
        outcome.then = functools.partial(agent.settle, d.task_id)
        return outcome

    async def _seen(self, d: Delivery) -> tuple[Applied | None, bool]:
        """Whether the task was applied already (hold the lock), and whether by this agent."""
        seen = self.agent.lookup(d.task_id)
        if seen is not None:
            return seen, True
        if d.attempt > 1:
            return await self.applied_elsewhere(d), False
        if self.queue.reconnects != self._reconnects:
            await self.after_reconnect()
        if d.stream_seq <= self._doubtful_upto and d.task_id in self._applied_then:
            return Applied(d.task_id, self._applied_then[d.task_id], done_future()), False
        return None, False

    async def after_reconnect(self) -> None:
        """The connection came back: the server may have restarted.

        A server that restarts may have lost the delivery counts it kept
        last (not the tasks, nor their acks): a task delivered before may
        come again as a first delivery. So every task already queued when
        the connection came back is looked up in what the pool's other
        agents had applied by then (an agent's later records cannot hold
        it: its leases ended with the same outage).
        """
        reconnects = self.queue.reconnects
        upto = await self.queue.last_sequence()
        applied = await self.others_applied()
        self._reconnects, self._doubtful_upto, self._applied_then = reconnects, upto, applied
        log.info("%s: reconnected; tasks up to sequence %d are checked against %d task(s) other agents applied",
                 self.worker_id, upto, len(applied))

    async def _duplicate(self, d: Delivery, seen: Applied, own: bool) -> Outcome:
        await seen.stored
        return Outcome("duplicate", body=seen.result, settle=ACK_CONFIRMED,
                       then=functools.partial(self.agent.settle, d.task_id) if own else None)

    def _hand_back_waiting(self, stuck: Delivery) -> None:
        for task, d in list(self._waiting.items()):
            if d is not stuck:
                d.abandon_reason = WEDGED
                running = d.running
                if running is not None and running.started is None:
                    running.future.cancel()  # still queued for the thread: it must never start
                task.cancel()

    async def applied_elsewhere(self, d: Delivery) -> Applied | None:
        """A redelivery: applied by another agent of the pool, or settled and forgotten?"""
        seen = await self.peer_applied(d.task_id)
        if seen is None and not await self.queue.still_queued(d.stream_seq):
            # Settled by an agent that has forgotten it since (its window moved
            # on): the message left the stream after its result was stored.
            seen = Applied(d.task_id, None, done_future())
        return seen

    async def peer_applied(self, task_id: str) -> Applied | None:
        """Whether another agent of the pool applied this (redelivered) task.

        Read *before* the stream: an agent forgets a task only after its
        message left the stream, so a task missing from every applied list
        whose message is still queued has not been applied anywhere.
        """
        applied = await self.others_applied()
        return Applied(task_id, applied[task_id], done_future()) if task_id in applied else None

    async def others_applied(self) -> dict[str, dict[str, Any] | None]:
        """The tasks the pool's other agents keep as applied, with their result bodies if unsettled."""
        out: dict[str, dict[str, Any] | None] = {}
        for key, stored in (await self.store.peers(self.pool.name)).items():
            if key != self.agent.key:
                for task_id in stored.applied:
                    out[task_id] = (stored.outbox.get(task_id) or {}).get("result")
        return out

    async def find_applied(self, task_id: str) -> Applied | None:
        """This agent's or another's record of ``task_id`` (for the dead-letterer)."""
        return self.agent.lookup(task_id) or await self.peer_applied(task_id)


class Applying:
    """One delivery's call on the agent's thread (a :class:`~workers.handler.Serial`).

    On the thread, around the handler: run nothing for a delivery that may
    be another worker's now; after the handler, roll the state back if it
    failed or its lease ran out, else snapshot it. On the loop, in the order
    the calls ran: record the task with its snapshot and result body.
    """

    __slots__ = ("tx", "d", "threads", "seconds", "body", "snapshot", "stored")

    def __init__(self, tx: StateTransaction, d: Delivery) -> None:
        assert tx.threads is not None
        self.tx = tx
        self.threads: HandlerThreads = tx.threads
        self.d = d
        self.seconds: float | None = None
        self.body: dict[str, Any] | None = None
        self.snapshot = b""
        self.stored: asyncio.Future[None] | None = None

    def run(self, call: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        agent, d = self.tx.agent, self.d
        if not d.lease_valid():
            raise TaskAbandoned("its delivery may have moved to another worker before the handler ran")
        t0 = time.perf_counter()
        try:
            result = call.run(fn, args)
        except BaseException:
            self.seconds = time.perf_counter() - t0
            agent.rollback()
            raise
        self.seconds = time.perf_counter() - t0
        if not d.lease_valid():
            agent.rollback()
            raise TaskAbandoned(LEASE_LOST)
        try:
            self.snapshot = agent.snapshot()
        except CodecError:
            agent.rollback()
            raise
        return result

    def collected(self, ran: bool, ok: bool, value: Any) -> tuple[bool, Any]:
        tx, d = self.tx, self.d
        agent = tx.agent
        agent.release(d.task_id)
        if not (ran and ok):
            return ok, value
        if agent.wedged:  # a call that outlived its hard time limit: it counts for nothing
            return False, TaskAbandoned(WEDGED)
        self.body = result_body(task_id=d.task_id, pool=d.pool, worker=tx.worker_id, attempt=d.attempt,
                                duration_ms=(self.seconds or 0.0) * 1000, result=value)
        try:
            self.stored = agent.record(d.task_id, d.stream_seq, self.body, d, d.reply_to, self.snapshot)
        except Exception as exc:  # the committer stopped, or a result body that cannot be stored
            return False, exc
        return True, value
