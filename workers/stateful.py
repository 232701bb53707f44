"""The stateful path of the consume loop: tasks applied to the agent's state.

A mixin of :class:`workers.consumer.Worker`, kept apart because it is the
delicate part: the order of lookup, handler, record, commit, result and ack
is what makes effects happen once (:mod:`workers.state` states the rules).

For a redelivered task the lookup goes: this agent's applied list, then
every other agent's of the pool, then the stream itself — an agent forgets a
settled task only after its message left the stream, so a task found in no
list whose message is still queued was applied nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors

from broker import CodecError, subjects
from workers.deadletter import delete_task
from workers.inflight import Delivery
from workers.middleware import Outcome
from workers.state import AgentState, Applied, TaskAbandoned
from workers.statestore import TRANSIENT, StateStore, agent_key
from workers.timelimits import HardTimeLimitExceeded

if TYPE_CHECKING:
    from workers.consumer import Worker

    _Base = Worker
else:
    _Base = object

log = logging.getLogger("foundation.worker")


def done_future() -> asyncio.Future[None]:
    """A future that is already resolved."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class StatefulTasks(_Base):
    """Opening the agent state and handling tasks against it."""

    async def _open_state(self) -> None:
        """Restore the agent's state; settle what its previous process left unsettled."""
        self.store = await StateStore.open(self.js)
        self.agent = AgentState(
            self.store, agent_key(self.node, self.worker_id), window=self.pool.state_window,
            is_connected=lambda: self.nc.is_connected,
        )
        self.state = self.agent.state
        unsettled = await self.agent.open()
        for task_id, entry in unsettled.items():
            # Applied (its state stored) but its result or ack may not be.
            if entry.get("result"):
                await self.outcomes.store_result(entry["result"], entry.get("reply_to"))
            await delete_task(self.js, int(entry["seq"]))
            self.agent.settle(task_id)
        if unsettled:
            log.info("%s: settled %d task(s) its previous process had applied", self.worker_id, len(unsettled))

    async def _handle_stateful(self, d: Delivery, payload: Any) -> Outcome:
        agent, task = self.agent, d.task
        assert agent is not None
        reply_to = task.headers.get(subjects.REPLY_TO)
        await agent.lock.acquire()
        release = True
        failure: BaseException | None = None
        try:
            seen = agent.lookup(task.task_id)
            own = seen is not None
            if seen is None and task.attempt > 1:
                seen = await self._peer_applied(task.task_id)
                if seen is None and not await self._still_queued(task.stream_seq):
                    # Settled by an agent that has forgotten it since (its
                    # window moved on): the message left the stream after
                    # its result was stored. Nothing left to do.
                    seen = Applied(task.task_id, None, done_future())
            if seen is not None:
                agent.lock.release()
                release = False
                d.past_lock = True
                return await self._settle_applied(d, seen, own=own)
            t0 = time.perf_counter()
            try:
                result = await self._call(payload, self._context(task, agent.state))
            except HardTimeLimitExceeded as exc:
                release = False  # the handler may still be touching the state: nobody else may
                agent.wedge()
                return await self._hard_limit(d, exc, time.perf_counter() - t0)
            except Exception as exc:
                agent.rollback()
                failure = exc
            except BaseException:  # cancelled mid-handler: its effects must not stay
                agent.rollback()
                raise
            seconds = time.perf_counter() - t0
            if failure is None:
                if not d.lease_valid():
                    agent.rollback()
                    raise TaskAbandoned("its delivery may have moved to another worker while the handler ran")
                body = self._result(task, seconds, result)
                try:
                    stored = agent.record(task.task_id, task.stream_seq, body, d, reply_to)
                except CodecError as exc:
                    agent.rollback()
                    failure = exc
        finally:
            if release:
                agent.lock.release()
                d.past_lock = True
        if failure is not None:
            return await self._failed(d, failure, seconds)
        await stored
        await self.outcomes.store_result(body, reply_to)
        await self._ack_settled(d)
        self.processed += 1
        return Outcome("ok", result=result, handler_seconds=seconds)

    async def _settle_applied(self, d: Delivery, seen: Applied, *, own: bool) -> Outcome:
        """A redelivery of a task already applied: re-publish its result, ack."""
        await seen.stored
        if seen.result is not None:
            await self.outcomes.store_result(seen.result, d.task.headers.get(subjects.REPLY_TO))
        await self._ack_settled(d, settle=own)
        return Outcome("duplicate")

    async def _ack_settled(self, d: Delivery, *, settle: bool = True) -> None:
        """Ack and confirm it; if unconfirmed, delete the message instead. Then settle."""
        try:
            await d.msg.ack_sync(timeout=min(2.0, self.pool.ack_wait))
        except (nats.errors.Error, asyncio.TimeoutError):
            delay = 0.05
            while True:
                try:
                    await delete_task(self.js, d.task.stream_seq)
                    break
                except TRANSIENT:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        if settle and self.agent is not None:
            self.agent.settle(d.task.task_id)

    async def _peer_applied(self, task_id: str) -> Applied | None:
        """Whether another agent of the pool applied this (redelivered) task.

        Read *before* :meth:`_still_queued`: an agent forgets a task only after
        its message left the stream, so a task missing from every applied list
        whose message is still queued has not been applied anywhere.
        """
        assert self.store is not None and self.agent is not None
        for key, stored in (await self.store.peers(self.pool.name)).items():
            if key != self.agent.key and task_id in stored.applied:
                return Applied(task_id, (stored.outbox.get(task_id) or {}).get("result"), done_future())
        return None

    async def _still_queued(self, seq: int) -> bool:
        try:
            await self.js.get_msg(subjects.TASKS_STREAM, seq=seq)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def _find_applied(self, task_id: str) -> Applied | None:
        assert self.agent is not None
        return self.agent.lookup(task_id) or await self._peer_applied(task_id)
