"""The agent side of a worker process: registry entry, quotas, live variables, votes.

Besides its consume loop (:mod:`workers.consumer`), every worker process runs
one :class:`WorkerAgent` on its NATS connection. :mod:`workers.process` starts
it once the worker is bound to its consumer and before it reports ready, and
stops it after the last task, before the connection closes.

Registry
    The worker registers as ``<node>.<slot>`` (registry ids are unique across
    the cluster; the slot id ``<pool>.<n>`` stays the worker id in results
    and ``ctx``, and is in the entry's ``metadata.slot``), with its pool,
    node, pid, the pool's ``capabilities`` and status ``ready``. Every
    ``node.registry_ttl / 3`` seconds it heartbeats its status — ``busy``
    while tasks are in flight, ``ready`` otherwise, ``draining`` from SIGTERM
    on (also sent at once) — and its load (tasks in flight, tasks
    processed). A clean exit unregisters it; the supervisor unregisters a
    worker that died; the entries of a lost node expire after the TTL. An id
    held by another node's entry (a squatted id) does not stop the worker:
    it serves its tasks unlisted and retries registering, with backoff, until
    the squatter's entry is gone (the bucket's max age ends any entry that is
    not heartbeated). Only
    the agents of market-dispatched pools keep a local copy of the whole
    registry (they pick bidders from it); the others only write.

Quotas
    A pool with ``quota.rate_per_s`` or ``quota.max_concurrency`` shares that
    budget across the cluster (:mod:`protocols.quota`): before each handler
    call the worker takes one rate token, and it holds one concurrency slot
    for the call (:attr:`WorkerAgent.gate`, entered by the consume loop).
    Tokens and slots come in small leases, so most tasks pay no round trip.
    Waiting for the budget is neither an attempt nor part of the time
    limits, and the delivery is kept alive meanwhile; a worker told to stop
    hands a waiting task back.

Variables
    A :class:`~protocols.variables.VariableView` of the variables declared
    in the ``variables`` bucket (the nodes declare their ``[variables.*]``),
    read by handlers as ``ctx.variables["name"]``: a change agreed anywhere
    shows at once, without a restart. Variables declared after the worker
    started appear when it is next restarted.

Votes
    Capability ``variables``: the worker is a stakeholder of variable changes
    (``foundation vars propose`` asks every agent with it); it votes no on a
    value outside the declared space, yes otherwise.

    Capability ``vote:<group>``: the pool's handler answers the consensus
    proposals of ``<group>`` (:mod:`protocols.consensus`), besides its tasks.
    It is called with the payload ``{"proposal": {"group", "session",
    "proposer", "value", "participants", "timeout"}}`` and a ``ctx`` whose
    ``task_id`` is ``vote:<group>.<session>``, ``headers`` hold
    ``Foundation-Vote: <group>``, and ``state`` is a fresh dict (a vote is not
    a task: it never touches the agent's persisted state). It returns its
    ballot: ``True``/``False``, ``"yes"``/``"no"``/``"abstain"``, or
    ``{"vote": ..., "reason": ...}``. Anything else, or an exception, is an
    abstention with the reason; an answer after the proposal's deadline is
    no vote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from broker import NATS_ERRORS, Connection, jetstream
from config.errors import FoundationError, WorkerError
from config.schema import PoolConfig
from protocols.consensus import ABSTAIN, NO, YES, Ballot, ConsensusError, Proposal, Voter
from protocols.quota import Budget, QuotaClient, QuotaTimeoutError, QuotaUnavailableError
from protocols.registry import (
    DEFAULT_TTL,
    Entry,
    KVBackend,
    Load,
    RegistrationTakenError,
    Registry,
    RegistryError,
    Status,
)
from protocols.variables import VariableView, load_space, open_variables_bucket, stakeholder
from workers.context import TaskContext
from workers.handler import Handler
from workers.timelimits import SoftTimeLimitExceeded, run_limited

if TYPE_CHECKING:
    from workers.consumer import Worker

log = logging.getLogger("foundation.worker.agent")

STAKE_CAPABILITY = "variables"  # agents with it vote on variable changes
VOTE_PREFIX = "vote:"  # capability "vote:<group>": the handler answers <group>'s proposals
VOTE_HEADER = "Foundation-Vote"
QUOTA_PATIENCE = 30.0  # seconds between "still waiting for the quota" warnings
REGISTER_BACKOFF = (1.0, 30.0)  # first and longest pause between attempts to take a held registry id
STOP_TIMEOUT = 3.0  # seconds the agent has to unregister and close at exit
VOTE_CONCURRENCY = 2  # vote handler calls at once; the rest wait (bounded by the voter)

_VOTES = (YES, NO, ABSTAIN)


class AgentStartError(WorkerError):
    """The worker could not join the registry, variables or votes; it does not report ready."""


class LiveVariables(Mapping[str, Any]):
    """``ctx.variables``: a read-only mapping over the live view (empty until it starts)."""

    def __init__(self) -> None:
        self._view: VariableView | None = None

    def attach(self, view: VariableView) -> None:
        self._view = view

    def __getitem__(self, name: str) -> Any:
        view = self._view
        if view is None or name not in view.space:
            raise KeyError(name)
        return view[name]

    def __iter__(self) -> Iterator[str]:
        return iter([] if self._view is None else [var.name for var in self._view.space])

    def __len__(self) -> int:
        return 0 if self._view is None else len(self._view.space)

    def __repr__(self) -> str:
        return f"LiveVariables({self._view.values() if self._view is not None else {}})"


def ballot_of(answer: Any) -> Ballot:
    """The ballot a vote handler returned (see the module docstring).

    Raises:
        ConsensusError: the answer is not a ballot.
    """
    if isinstance(answer, bool):
        return Ballot(YES if answer else NO)
    if isinstance(answer, str) and answer in _VOTES:
        return Ballot(answer)  # type: ignore[arg-type]
    if isinstance(answer, Mapping) and answer.get("vote") in _VOTES:
        return Ballot(answer["vote"], str(answer.get("reason", "")))
    raise ConsensusError(
        "a vote handler returns true/false, 'yes'/'no'/'abstain' or {'vote': ..., 'reason': ...}; "
        f"got {repr(answer)[:80]}"
    )


def vote_groups(capabilities: tuple[str, ...]) -> list[str]:
    """The consensus groups a pool's handler answers: its ``vote:<group>`` capabilities."""
    return [c[len(VOTE_PREFIX):] for c in capabilities if c.startswith(VOTE_PREFIX) and len(c) > len(VOTE_PREFIX)]


def quota_batch(pool: PoolConfig) -> int:
    """Rate tokens a worker leases at a time: at most a tenth of a window's budget,
    so one worker never holds what several others wait for, and at most its
    concurrency, so tokens are not left to expire unused."""
    if not pool.quota.rate_per_s:
        return 1
    return max(1, min(pool.concurrency, Budget.from_config(pool.quota).tokens_per_window // 10))


async def _patiently(take: Callable[..., Awaitable[None]], what: str) -> None:
    # No deadline: a task waiting for the budget must not fail an attempt.
    # The wait ends when the budget allows, or when the worker stops (cancel).
    while True:
        try:
            await take(timeout=QUOTA_PATIENCE)
            return
        except (QuotaTimeoutError, QuotaUnavailableError) as exc:
            log.warning("still waiting for %s: %s", what, exc)


class WorkerAgent:
    """Registry entry, quota leases, live variables and voters of one worker.

    Args:
        nc: the worker's NATS connection (the agent does not close it).
        pool: the pool's config.
        slot: the worker's slot id, ``<pool>.<n>``.
        node: the node name.
        handler: the pool's handler (answers ``vote:<group>`` proposals).
        registry_ttl: seconds the entry outlives its last heartbeat.
        watch_registry: keep a local cache of the whole registry (``agent.registry.find``).
            By default only market-dispatched pools do, to pick bidders: a watch in
            every worker would bring every heartbeat of the cluster to each of them.
    """

    def __init__(self, nc: Connection, pool: PoolConfig, slot: str, node: str, handler: Handler, *,
                 registry_ttl: float = DEFAULT_TTL, watch_registry: bool | None = None) -> None:
        self.nc = nc
        self.pool = pool
        self.slot = slot
        self.node = node
        self.id = f"{node}.{slot}"
        self.handler = handler
        self.registry_ttl = registry_ttl
        self.watch_registry = pool.dispatch == "market" if watch_registry is None else watch_registry
        self.variables = LiveVariables()
        limited = bool(pool.quota.rate_per_s or pool.quota.max_concurrency)
        self.quota = QuotaClient(nc, pool.name, self.id, batch=quota_batch(pool)) if limited else None
        # What the consume loop enters around each handler call; None: no quota, no overhead.
        self.gate: Callable[[], AbstractAsyncContextManager[None]] | None = self._quota_gate if limited else None
        self.registry: Registry | None = None
        self.draining = False
        self._worker: Worker | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = logging.getLogger(f"foundation.worker.{slot}")

    # -- start and stop ------------------------------------------------------

    async def start(self, worker: Worker, stop: asyncio.Event) -> None:
        """Open the variables and voters, register as ready, start heartbeating.

        Raises:
            AgentStartError: NATS refused something (the message says what).
        """
        self._worker = worker
        caps = self.pool.capabilities
        try:
            # The two buckets open in parallel: a restarted worker is back in service sooner.
            kv, backend = await asyncio.gather(open_variables_bucket(jetstream(self.nc)), KVBackend.open(self.nc))
            space = await load_space(kv)
            self.variables.attach(await self._stack.enter_async_context(VariableView(kv, space)))
            if STAKE_CAPABILITY in caps:
                await self._stack.enter_async_context(stakeholder(self.nc, space, self.id))
            for group in vote_groups(caps):
                # Few votes at a time, so proposals can never take the handler threads from tasks.
                await self._stack.enter_async_context(Voter(
                    self.nc, group, self.id, self._decider(group), max_concurrent=VOTE_CONCURRENCY,
                ))
            self.registry = Registry(backend, ttl=self.registry_ttl)
            self._stack.push_async_callback(self.registry.close)  # unregisters
            if self.watch_registry:
                await self.registry.start()
            # Last: once listed, the agent can be asked to vote and sent work.
            entry = Entry.new(
                self.id, pool=self.pool.name, node=self.node, pid=os.getpid(), capabilities=caps,
                metadata={"slot": self.slot}, status=Status.READY,
            )
            try:
                await self.registry.register(entry)
            except RegistrationTakenError as exc:
                log.error("%s: %s; serving unlisted and retrying", self.id, exc)
        except (FoundationError, *NATS_ERRORS, OSError, asyncio.TimeoutError) as exc:
            await self.stop()
            raise AgentStartError(f"{self.id} could not join the cluster: {exc}") from exc
        self._tasks.append(asyncio.create_task(self._heartbeat(entry), name=f"registry heartbeat {self.id}"))
        self._tasks.append(asyncio.create_task(self._on_stop(stop), name=f"draining {self.id}"))

    async def stop(self) -> None:
        """Stop voting and heartbeating, unregister, release the quota leases. Never raises."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._stack.aclose()  # last in, first out: unregister, then voters, then the view
                if self.quota is not None:
                    await self.quota.close()  # hands held slots back
        except Exception as exc:  # at exit; the supervisor unregisters a worker that could not
            log.warning("%s: closing the agent: %r", self.id, exc)

    # -- registry ------------------------------------------------------------

    def _sample(self) -> tuple[Status, Load]:
        worker = self._worker
        in_flight, processed = (worker.in_flight, worker.processed) if worker is not None else (0, 0)
        status = Status.DRAINING if self.draining else Status.BUSY if in_flight else Status.READY
        return status, Load(in_flight, processed)

    async def _heartbeat(self, entry: Entry) -> None:
        registry = self.registry
        assert registry is not None
        pause, longest = REGISTER_BACKOFF
        while True:
            if not registry.owns(self.id):
                try:
                    status, load = self._sample()
                    await registry.register(entry.beat(status=status, load=load))
                    pause = REGISTER_BACKOFF[0]
                    log.info("%s: registered", self.id)
                except RegistryError as exc:
                    log.warning("%s: cannot register yet (%s); retrying in %.0fs", self.id, exc, pause)
                    await asyncio.sleep(pause)  # a backoff pause between attempts, not a wait for an event
                    pause = min(pause * 2, longest)
                    continue
            try:
                await registry.heartbeat_forever(self.id, self._sample)
            except RegistryError as exc:  # taken over or removed: register again when the id is free
                log.error("%s: registry heartbeats stopped: %s", self.id, exc)

    async def _on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.draining = True
        status, load = self._sample()
        assert self.registry is not None
        if not self.registry.owns(self.id):
            return
        try:
            await self.registry.heartbeat(self.id, status=status, load=load)
        except RegistryError as exc:
            log.warning("%s: could not mark draining: %s", self.id, exc)

    # -- quotas --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _quota_gate(self) -> AsyncIterator[None]:
        client, quota = self.quota, self.pool.quota
        assert client is not None
        if quota.rate_per_s:
            await _patiently(client.acquire, f"a rate token of pool {self.pool.name}")
        if not quota.max_concurrency:
            yield
            return
        await _patiently(client.acquire_slot, f"a concurrency slot of pool {self.pool.name}")
        try:
            yield
        finally:
            client.release_slot()

    # -- votes ---------------------------------------------------------------

    def _decider(self, group: str) -> Callable[[Proposal], Awaitable[Ballot]]:
        async def decide(proposal: Proposal) -> Ballot:
            payload = {"proposal": {
                "group": proposal.group, "session": proposal.session, "proposer": proposal.proposer,
                "value": proposal.value, "participants": list(proposal.participants),
                "timeout": max(proposal.deadline - asyncio.get_running_loop().time(), 0.0),
            }}
            ctx = TaskContext(
                task_id=f"vote:{group}.{proposal.session}", attempt=1, pool=self.pool.name, worker=self.slot,
                state={}, log=self._log, headers={VOTE_HEADER: group}, variables=self.variables,
            )
            remaining = max(proposal.deadline - asyncio.get_running_loop().time(), 0.001)
            limit = min(self.pool.time_limit, remaining) if self.pool.time_limit else remaining
            try:
                return ballot_of(await run_limited(self.handler.start(payload, ctx), soft=limit))
            except SoftTimeLimitExceeded:
                # Interrupted: the handler thread is free again; say why rather than stay silent.
                return Ballot(ABSTAIN, f"the vote ran over its time limit of {limit:.3g}s")

        return decide
