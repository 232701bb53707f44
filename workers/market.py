"""Market dispatch: each task of a pool is allocated by a Contract Net round.

A pool with ``dispatch = "market"`` keeps the task contract of the ordinary
(``queue``) dispatch — same streams, result body, DLQ and delivery guarantee
— but the worker that fetches a task does not run it: it offers it to the
pool's live agents and the best proposal runs it.

Roles. Every worker process of the pool is both:

* a *dispatcher* (:class:`MarketStep`, the last link of the consume loop's
  chain in place of the handler call): it fetches tasks from the pool's
  consumer as usual and, instead of calling the handler, runs
  :meth:`ContractNetInitiator.run <protocols.market.ContractNetInitiator.run>`
  for each; and
* a *contractor* (:class:`~workers.contractor.Contractor`): it bids on the
  pool's cfps from its load and cost, and runs the tasks it is awarded.

One task, in order::

    dispatcher  fetch tasks.<pool>           (decode; bad JSON / oversize -> DLQ at once, as in queue mode)
    dispatcher  cfp to the pool's agents     coord.cnp.<pool>.<conversation>.cfp, to = live agents
    contractors propose {price, load} | refuse {full | stopping | malformed offer}
    dispatcher  accept the best score, reject the others
    winner      inform-progress … inform-result {result, worker, duration_ms} | failure
    dispatcher  store the result on results.<pool> (Nats-Msg-Id = task id, worker = the winner), then ack

Who is asked: the pool's entries in the registry (:mod:`protocols.registry`)
with status ready or busy, always including the dispatcher's own agent.
How proposals rank: ``-price / reputation`` (:func:`~protocols.market.reputation_weighted`),
where reputation is the dispatcher's :class:`~protocols.market.BetaReputation`
of each agent, fed by the outcome of every round it ran; a newcomer starts
at the prior, so re-registering does not wash a bad record.

Failures map onto the queue dispatch's:

* the winner fails (handler error) or goes silent for ``silence_timeout``
  (default: the pool's ``ack_wait``; e.g. it was killed): the task is
  re-offered to the others, up to ``max_rounds`` rounds per delivery;
* every round's winner failed (:class:`~protocols.market.AwardFailedError`):
  the delivery failed — nak with the pool's ``backoff``, and after
  ``max_deliver`` deliveries the DLQ with the usual headers and an
  ``ok: false`` result, whose error names each round's failure;
* nobody proposed (every agent full): asked again, with short pauses, for up
  to ``ack_wait`` seconds before the delivery counts as failed — a busy pool
  is not a failing task;
* the dispatcher dies: its deliveries are not acked, so JetStream redelivers
  them after ``ack_wait`` and another dispatcher offers them again; a winner
  working for a dead dispatcher finishes, and its result is simply unused
  (at-least-once, as in queue mode).

Stopping (SIGTERM): the contractor refuses other dispatchers' cfps at once
and the registry lists the agent as draining; the dispatcher fetches no more
and finishes its tasks in hand, offering them to the live agents and to its
own contractor; work awarded by others finishes within the pool's
``shutdown`` or is reported as failure, so its dispatcher re-offers it at once.

Limits. The cfp carries the payload to every agent of the pool, so a body
near the server's ``max_payload`` cannot be offered (its delivery fails and
ends in the DLQ). ``ctx.state`` is the executing process's volatile dict:
``persist_state`` applies to queue dispatch only, since the winner is not the
process that acknowledges the task.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker import one_line, result_body
from protocols.market import (
    AwardFailedError,
    BetaReputation,
    ContractNetError,
    ContractNetInitiator,
    ContractResult,
    NoParticipantsError,
    NoProposalsError,
    messages,
    reputation_weighted,
)
from protocols.registry import ACCEPTING, Registry
from workers.contractor import Contractor, Offer
from workers.delivery import Delivery, Outcome
from workers.recycle import HARD_TIME_LIMIT

if TYPE_CHECKING:
    from workers.agent import WorkerAgent
    from workers.consumer import Worker

REPLY_WITHIN = 0.5  # seconds agents have to bid; a round closes early once all addressed answered
MAX_ROUNDS = 3  # offers of one delivery: the first and two re-offers
_FIRST_PAUSE = 0.05  # seconds before asking again when nobody proposed; doubles up to _MAX_PAUSE
_MAX_PAUSE = 1.0
_EXPLAIN_CHARS = 600  # the DLQ header stays one readable line


@dataclass(frozen=True, slots=True)
class Awarded:
    """What the winner of a task's Contract Net run returned.

    Attributes:
        value: the handler's return value (the result body's ``result``).
        worker: the winner's slot id (the result body's ``worker``).
        agent: the winner's registry id.
        price: its accepted price.
        duration_ms: the handler's run time on the winner.
    """

    value: Any
    worker: str
    agent: str
    price: float
    duration_ms: float | None

    @classmethod
    def of(cls, won: ContractResult) -> Awarded:
        body = won.result
        if isinstance(body, dict) and "worker" in body:
            ms = body.get("duration_ms")
            return cls(body.get("result"), str(body["worker"]), won.winner, won.price,
                       float(ms) if isinstance(ms, (int, float)) else None)
        return cls(body, won.winner, won.winner, won.price, None)  # a participant that is not a Contractor


class MarketStep:
    """The last link of a market pool's chain: offer the task until an agent completes it.

    It also runs the worker's :class:`~workers.contractor.Contractor` (bids
    for the pool's tasks), started when the worker binds and stopped after
    its last task. Build it with :func:`market_step`.

    Args:
        worker: the bound worker (its pool, slot, state, quota gate, variables, recycle policy).
        agent_id: this agent's id in the registry and in Contract Net (default ``<node>.<slot>``).
        registry: returns the registry to find the pool's agents in, or None
            (then tasks are offered to this agent alone).
        reply_within: seconds agents have to bid.
        silence_timeout: seconds an awarded agent may stay silent (default: the pool's ``ack_wait``).
        max_rounds: offers per delivery.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        agent_id: str | None = None,
        registry: Callable[[], Registry | None] | None = None,
        reply_within: float = REPLY_WITHIN,
        silence_timeout: float | None = None,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        pool = worker.pool
        self.pool = pool
        self.worker_id = worker.worker_id
        self.agent_id = agent_id or f"{worker.node}.{worker.worker_id}"
        self.patience = pool.ack_wait
        self.reputation = BetaReputation()
        self._registry = registry
        self._stopped_at: float | None = None
        self.initiator = ContractNetInitiator(
            worker.nc, pool.name, participants=self._bidders, name=self.agent_id,
            scorer=reputation_weighted(self._reputation_of), reply_within=reply_within,
            silence_timeout=silence_timeout or pool.ack_wait, max_rounds=max_rounds, on_outcome=self._observe,
        )
        self.contractor = Contractor(
            worker.nc, pool, self.agent_id, worker.handler, slot=worker.worker_id, state=worker.state,
            gate=worker.gate, variables=worker.variables,
            on_hard_limit=lambda: worker.stop_fetching(HARD_TIME_LIMIT),
        )

    # -- start and stop --------------------------------------------------------

    async def start(self) -> None:
        """Start answering cfps (the worker binds before the agent is listed)."""
        await self.contractor.start()

    def stopping(self) -> None:
        """The worker was told to stop: refuse other dispatchers' cfps from now on."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self.contractor.stopping = True

    async def close(self) -> None:
        """After the worker's last task: give awarded work what is left of ``shutdown``."""
        self.contractor.stopping = True
        # After SIGTERM the supervisor kills at `shutdown`: finish what fits before that.
        # A recycle has no such clock, but is bounded the same way.
        budget = max(0.5, self.pool.shutdown - 1.5)
        spent = time.monotonic() - self._stopped_at if self._stopped_at is not None else 0.0
        await self.contractor.stop(drain=max(0.0, budget - spent))

    # -- dispatch ------------------------------------------------------------

    async def __call__(self, d: Delivery, call_next: None = None) -> Outcome:
        t0 = time.perf_counter()
        try:
            won = await self.offer(d.payload, d)
        except Exception as exc:
            d.failure = exc
            raise
        d.seconds = seconds = time.perf_counter() - t0
        ms = won.duration_ms if won.duration_ms is not None else seconds * 1000
        body = result_body(task_id=d.task_id, pool=d.pool, worker=won.worker, attempt=d.attempt,
                           duration_ms=ms, result=won.value)
        return Outcome("ok", result=won.value, handler_seconds=seconds, body=body)

    def _bidders(self) -> list[str]:
        registry = self._registry() if self._registry is not None else None
        ids = {self.agent_id}
        if registry is not None:
            ids.update(e.id for e in registry.find(pool=self.pool.name) if e.status in ACCEPTING)
        return sorted(ids)

    def _reputation_of(self, agent: str) -> float:
        return self.reputation.score(agent, time.monotonic())

    def _observe(self, agent: str, succeeded: bool) -> None:
        self.reputation.observe(agent, succeeded, time.monotonic())

    async def offer(self, payload: Any, d: Delivery) -> Awarded:
        """Offer the task until an agent completes it.

        Raises:
            ContractNetError: no agent completed it; the message says what each round saw.
        """
        offer = Offer(payload, d.attempt, dict(d.headers)).body()
        give_up = time.monotonic() + self.patience
        pause = _FIRST_PAUSE
        while True:
            try:
                return Awarded.of(await self.initiator.run(offer, task_id=d.task_id))
            except ContractNetError as exc:
                if any(conv.winner for conv in exc.conversations):
                    raise _explained(exc) from exc  # an agent took the task and failed it: an attempt
                if not isinstance(exc, (NoParticipantsError, NoProposalsError)):
                    raise _explained(exc) from exc  # NATS refused the cfp
                if time.monotonic() + pause >= give_up:
                    raise _explained(exc, f"for {self.patience:g}s") from exc
            await asyncio.sleep(pause)  # every agent was full: a slot frees up as their tasks end
            pause = min(pause * 2, _MAX_PAUSE)


def market_step(agent: WorkerAgent | None = None, **options: Any) -> Callable[[Worker], MarketStep]:
    """The ``step`` argument of :class:`~workers.consumer.Worker` for a market pool:
    with ``agent``, its registry id and its registry (open once the agent started)."""
    if agent is not None:
        options = {"agent_id": agent.id, "registry": lambda: agent.registry, **options}
    return functools.partial(MarketStep, **options)


def _explained(exc: ContractNetError, waited: str = "") -> ContractNetError:
    """The same error, its message extended with what each round saw (for the DLQ header).

    Every agent asked having failed the task is an :class:`AwardFailedError`
    even when the initiator ran out of agents before running out of rounds.
    """
    kind: type[ContractNetError] = type(exc)
    message = str(exc)
    if isinstance(exc, NoParticipantsError) and exc.conversations:
        kind = AwardFailedError
        message = f"task {exc.task_id}: the winner of each of {len(exc.conversations)} round(s) failed or went silent"
    rounds = "; ".join(filter(None, (_round_summary(c) for c in exc.conversations)))
    detail = one_line(" ".join(filter(None, [message, waited and f"(asked again {waited})", rounds and f"— {rounds}"])))
    if len(detail) > _EXPLAIN_CHARS:
        detail = detail[: _EXPLAIN_CHARS - 1] + "…"
    return kind(detail, exc.task_id, exc.conversations)


def _round_summary(conv: messages.Conversation) -> str:
    head = f"round {conv.round}"
    if conv.outcome == messages.FAILED:
        reasons = [r.body.get("reason", "") for r in conv.received(messages.FAILURE) if isinstance(r.body, dict)]
        return f"{head}: {conv.winner} failed: {reasons[-1] if reasons else 'no reason given'}"
    if conv.outcome == messages.TIMEOUT:
        return f"{head}: {conv.winner} went silent"
    if conv.outcome == messages.NO_PROPOSALS:
        refused = [f"{r.peer} {r.body.get('reason', '')}".strip() for r in conv.received(messages.REFUSE)
                   if isinstance(r.body, dict)]
        answered = {r.peer for r in conv.records if r.direction == "in"}
        silent = [a for a in conv.addressed if a not in answered]
        parts = [f"refused: {', '.join(refused)}" if refused else "", f"silent: {', '.join(silent)}" if silent else ""]
        return f"{head}: " + "; ".join(filter(None, parts)) if any(parts) else head
    return ""
