"""The contractor side of a market pool: bid for tasks, run the ones awarded.

Every worker process of a pool with ``dispatch = "market"`` runs one
:class:`Contractor`: a Contract Net participant (:mod:`protocols.market`) of
the group named after the pool, answering under the worker's registry id.
The dispatching side is :mod:`workers.market`.

The offer — what a market pool's cfp carries as its ``task``::

    {"v": 1, "payload": <the task's decoded body>, "attempt": <delivery number>,
     "headers": {<the task's NATS headers>}}

Bidding (a plain function: it answers inline, in microseconds):

* ``committed`` = awarded tasks in progress + proposals still awaiting their
  answer; at ``concurrency`` the agent refuses (``full``), so a burst of cfps
  is not promised to one agent beyond what it can run;
* price = :func:`~protocols.market.load_price` ``(cost, committed, concurrency)``
  — the agent's cost, raised steeply as its slots fill up — times
  ``1 + spread``, where ``spread`` in ``[0, 0.001)`` is a hash of (agent,
  task id): among equally loaded agents each task still goes to one
  deterministic agent, but different tasks to different agents, instead of
  every tie falling to the smallest id;
* ``cost`` is the handler's ``cost`` attribute — a number, or a function of
  the payload (e.g. its size) — or 1.0;
* a stopping agent refuses (``stopping``) every cfp but those of its own
  dispatcher, whose tasks in hand it finishes, as a stopping queue worker
  does; a malformed offer is refused (``malformed offer``).

Performing: the handler runs with the ``ctx`` the consume loop would give it
(task id, delivery attempt, pool, the slot id as ``worker``, the worker's
volatile ``state``, the task's headers plus ``Foundation-Market-Initiator``,
``-Round`` and ``-Conversation``, the live variables), inside the pool's
quota gate and time limits. A hard time limit reports failure and asks the
worker to recycle. The inform-result body is
``{"result": <handler's return value>, "worker": <slot>, "duration_ms"}``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from broker import Connection
from config.errors import WorkerError
from config.schema import PoolConfig
from protocols.market import CallForProposals, ContractNetParticipant, load_price
from workers.context import TaskContext
from workers.handler import Handler
from workers.timelimits import HardTimeLimitExceeded, run_limited

log = logging.getLogger("foundation.worker.market")

OFFER_VERSION = 1
H_INITIATOR = "Foundation-Market-Initiator"
H_ROUND = "Foundation-Market-Round"
H_CONVERSATION = "Foundation-Market-Conversation"

FULL = "full"
STOPPING = "stopping"
MALFORMED = "malformed offer"

_SPREAD = 1e-3  # well below one load step of load_price, so load always decides first
_RECORDS_KEPT = 256  # the participant's message log: only for debugging a live agent


class MalformedOfferError(WorkerError):
    """A cfp's task is not a market offer (``{"v", "payload", "attempt", "headers"}``)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """A task as a market pool offers it to its agents."""

    payload: Any
    attempt: int = 1
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The cfp ``task`` carrying this offer."""
        return {"v": OFFER_VERSION, "payload": self.payload, "attempt": self.attempt, "headers": self.headers}

    @classmethod
    def parse(cls, task: Any) -> Offer:
        """The offer in a cfp's ``task``.

        Raises:
            MalformedOfferError: ``task`` is not an offer of a version this agent speaks.
        """
        if not isinstance(task, Mapping) or "payload" not in task or task.get("v") != OFFER_VERSION:
            raise MalformedOfferError(
                f"a market pool's cfp carries {{'v': {OFFER_VERSION}, 'payload': …, 'attempt': …, 'headers': …}}; "
                f"got {str(task)[:80]}"
            )
        attempt, headers = task.get("attempt", 1), task.get("headers") or {}
        if not isinstance(attempt, int) or attempt < 1 or not isinstance(headers, Mapping):
            raise MalformedOfferError(f"offer with attempt {attempt!r} and headers {str(headers)[:80]}")
        return cls(task["payload"], attempt, {str(k): str(v) for k, v in headers.items()})


def spread(agent_id: str, task_id: str) -> float:
    """A stable number in ``[0, 1)`` for (agent, task): the rendezvous hash that splits ties."""
    digest = hashlib.blake2b(f"{agent_id}\0{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def task_cost(handler: Handler, payload: Any) -> float:
    """The handler's own cost of a task: its ``cost`` attribute (number or ``cost(payload)``), else 1.0.

    Raises:
        WorkerError: the cost is not a non-negative finite number.
    """
    cost = getattr(handler.fn, "cost", 1.0)
    value = cost(payload) if callable(cost) else cost
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise WorkerError(f"the cost of handler {handler.spec} must be a finite number >= 0, got {value!r}")
    return float(value)


class Contractor:
    """One agent's bids and awarded work in a market pool.

    Args:
        nc: the worker's NATS connection.
        pool: the pool's config (its name is the Contract Net group).
        agent_id: the id initiators address (the worker's registry id).
        handler: the pool's handler.
        slot: the worker's slot id (``ctx.worker`` and the result's ``worker``).
        state: the volatile ``ctx.state`` shared by the handler calls of this process.
        gate: entered around each handler call (the pool's cluster-wide quota).
        variables: ``ctx.variables``.
        on_hard_limit: called when a handler ran over the hard time limit.
    """

    def __init__(
        self,
        nc: Connection,
        pool: PoolConfig,
        agent_id: str,
        handler: Handler,
        *,
        slot: str,
        state: dict[str, Any] | None = None,
        gate: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
        on_hard_limit: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.agent_id = agent_id
        self.handler = handler
        self.slot = slot
        self.state: dict[str, Any] = state if state is not None else {}
        self.gate = gate or nullcontext
        self.variables: Mapping[str, Any] = variables if variables is not None else {}
        self.on_hard_limit = on_hard_limit
        self.stopping = False
        self.performed = 0
        self.log = logging.getLogger(f"foundation.worker.{slot}")
        self.participant = ContractNetParticipant(
            nc, pool.name, agent_id, bid=self._bid, perform=self._perform, log_limit=_RECORDS_KEPT
        )

    @property
    def committed(self) -> int:
        """Tasks awarded and running, plus proposals that may still be accepted."""
        return self.participant.load + self.participant.pending

    async def start(self) -> None:
        """Answer the pool's cfps from now on (returns once subscribed).

        Raises:
            ContractNetError: NATS refused the subscriptions.
        """
        await self.participant.start()

    async def stop(self, drain: float = 0.0) -> None:
        """Stop bidding; let awarded work finish for up to ``drain`` seconds, report the rest as failure."""
        self.stopping = True
        await self.participant.stop(drain=drain)

    def _bid(self, cfp: CallForProposals) -> dict[str, Any] | str:
        """A proposal ``{price, load}``, or the reason of a refusal."""
        if self.stopping and cfp.initiator != self.agent_id:
            return STOPPING
        try:
            offer = Offer.parse(cfp.task)
        except MalformedOfferError:
            return MALFORMED
        committed, capacity = self.committed, self.pool.concurrency
        if committed >= capacity:
            return FULL
        price = load_price(task_cost(self.handler, offer.payload), committed, capacity)
        return {"price": price * (1 + _SPREAD * spread(self.agent_id, cfp.task_id)), "load": committed}

    async def _perform(self, cfp: CallForProposals) -> dict[str, Any]:
        offer = Offer.parse(cfp.task)
        headers = {
            **offer.headers, H_INITIATOR: cfp.initiator, H_ROUND: str(cfp.round), H_CONVERSATION: cfp.conversation_id,
        }
        ctx = TaskContext(
            task_id=cfp.task_id, attempt=offer.attempt, pool=self.pool.name, worker=self.slot, state=self.state,
            log=self.log, headers=headers, variables=self.variables,
        )
        async with self.gate():  # outside the time limits: waiting for the quota is not running
            t0 = time.perf_counter()
            try:
                result = await run_limited(self.handler.start(offer.payload, ctx), self.pool.time_limit,
                                           self.pool.hard_time_limit)
            except HardTimeLimitExceeded:
                self.log.error("task %s ran over the hard time limit; recycling after the work in hand", cfp.task_id)
                if self.on_hard_limit is not None:
                    self.on_hard_limit()
                raise
        self.performed += 1
        return {"result": result, "worker": self.slot, "duration_ms": (time.perf_counter() - t0) * 1000}

