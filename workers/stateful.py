"""The state transaction: the middleware that applies ``ctx.state`` effectively once.

The rules are in :mod:`workers.state`; this is where a delivery meets them.
Around the rest of the chain (time limits and the handler), for a stateful
pool (``persist_state`` and a handler taking ``ctx``):

1. take the agent lock (one task at a time applies its effects);
2. a task this agent applied already, or (for a redelivery) another agent
   of the pool applied, is not run again: its recorded result is
   re-published and it is acked (``duplicate``). A redelivered task found in
   no applied list whose message has left the stream was settled by an agent
   that has forgotten it since: nothing is left to do;
3. run the rest of the chain; an error rolls the state back and travels on
   (a retry, or the DLQ); a hard time limit *wedges* the agent — the stuck
   handler may still touch the state — and hands back every task waiting
   for the lock;
4. record the state and the result, release the lock, and wait until the
   record is committed; only then does the outcome go to the consume loop,
   which stores the result, acks (confirmed, or deletes the message), and
   settles the task in the agent.

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

from broker import CodecError, OutcomeStore, WorkQueue, jetstream
from config.schema import PoolConfig
from workers.delivery import ACK_CONFIRMED, NAK, Delivery, Outcome
from workers.middleware import Next
from workers.state import AgentState, Applied, TaskAbandoned
from workers.statestore import StateStore, agent_key
from workers.timelimits import HardTimeLimitExceeded

log = logging.getLogger("foundation.worker")

WEDGED = "a handler before it is stuck over its hard time limit"


def done_future() -> asyncio.Future[None]:
    """A future that is already resolved."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class StateTransaction:
    """The stateful path of one worker (a middleware); open it with :meth:`open`."""

    def __init__(self, agent: AgentState, store: StateStore, queue: WorkQueue, pool: PoolConfig) -> None:
        self.agent = agent
        self.store = store
        self.queue = queue
        self.pool = pool
        self._waiting: dict[asyncio.Task[object], Delivery] = {}  # tasks waiting for the lock

    @classmethod
    async def open(cls, queue: WorkQueue, pool: PoolConfig, node: str, worker_id: str,
                   outcomes: OutcomeStore) -> StateTransaction:
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
        return cls(agent, store, queue, pool)

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        agent = self.agent
        if agent.wedged:
            return Outcome("abandoned", settle=NAK)  # the lock will never be free again: hand it back
        me = asyncio.current_task()
        assert me is not None
        self._waiting[me] = d
        try:
            await agent.lock.acquire()
        finally:
            self._waiting.pop(me, None)
        release = True
        try:
            seen = agent.lookup(d.task_id)
            own = seen is not None
            if seen is None and d.attempt > 1:
                seen = await self.applied_elsewhere(d)
            if seen is not None:
                agent.lock.release()
                release = False
                d.past_lock = True
                await seen.stored
                return Outcome("duplicate", body=seen.result, settle=ACK_CONFIRMED,
                               then=functools.partial(agent.settle, d.task_id) if own else None)
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
                raise TaskAbandoned("its delivery may have moved to another worker while the handler ran")
            try:
                stored = agent.record(d.task_id, d.stream_seq, outcome.body or {}, d, d.reply_to)
            except CodecError as exc:
                agent.rollback()
                d.failure = exc
                raise
        finally:
            if release:
                agent.lock.release()
                d.past_lock = True
        await stored
        outcome.settle = ACK_CONFIRMED
        outcome.then = functools.partial(agent.settle, d.task_id)
        return outcome

    def _hand_back_waiting(self, stuck: Delivery) -> None:
        for task, d in list(self._waiting.items()):
            if d is not stuck:
                d.abandon_reason = WEDGED
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
        for key, stored in (await self.store.peers(self.pool.name)).items():
            if key != self.agent.key and task_id in stored.applied:
                return Applied(task_id, (stored.outbox.get(task_id) or {}).get("result"), done_future())
        return None

    async def find_applied(self, task_id: str) -> Applied | None:
        """This agent's or another's record of ``task_id`` (for the dead-letterer)."""
        return self.agent.lookup(task_id) or await self.peer_applied(task_id)
