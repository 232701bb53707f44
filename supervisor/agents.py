"""The node's side of the agents' protocols: registry, quota services, declared variables.

The workers register, heartbeat and vote themselves (:mod:`workers.agent`);
the node does what a worker cannot do for itself or what is needed once per
node. :class:`NodeAgents` is created with the node (so a bad
``[variables.*]`` table stops ``foundation up`` with exit code 2 before
anything starts) and started on every NATS connection the node opens, before
the first pool starts:

* one registry (cache and watch) per node; when a worker process exits,
  for any reason, its entry ``<node>.<slot>`` is removed at once — checked
  against the exited pid, so the entry of the slot's replacement is never
  removed by mistake. Entries of a node that dies with its workers expire
  after ``node.registry_ttl``;
* the registry's JSON query endpoint (``foundation.registry.query``) on the
  node's ``foundation`` micro service (:mod:`protocols.registry.service`);
* one quota service candidate per pool with ``quota.rate_per_s`` or
  ``quota.max_concurrency``; one node's candidate wins the pool's lease and
  grants for the whole cluster (:mod:`protocols.quota`);
* the ``[variables.<name>]`` tables declared in the ``variables`` bucket
  (definitions written, defaults set only where no value exists yet), so
  workers started afterwards see them (:mod:`protocols.variables`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from broker import Connection, jetstream
from config.errors import ConfigError, FoundationError
from config.schema import Config
from protocols.consensus import decision_bucket, registry_finder
from protocols.quota import Budget, open_quota_service
from protocols.registry import Registry, open_registry, query_endpoint
from protocols.variables import (
    Change,
    ChangeRequest,
    ConsensusApproval,
    ParameterSpace,
    VariableStore,
    VariableValidationError,
    Verdict,
    load_space,
    open_variables_bucket,
)

log = logging.getLogger("foundation.node.agents")

STAKE_CAPABILITY = "variables"  # agents with this capability vote on variable changes
STOP_TIMEOUT = 10.0  # seconds for the node's services to close
UNREGISTER_TIMEOUT = 5.0  # seconds an exited worker's removal may take before the TTL is left to do it


def parse_variables(tables: dict[str, dict[str, Any]]) -> ParameterSpace:
    """The typed parameter space of a config's ``[variables.*]`` tables.

    Raises:
        ConfigError: a definition is invalid (named by its key, with what to fix).
    """
    for name, table in tables.items():
        try:
            ParameterSpace.from_dict({name: table})
        except (VariableValidationError, TypeError, ValueError) as exc:  # e.g. low = "x": compared with a number
            raise ConfigError(f"variables.{name}", str(exc)) from None
    return ParameterSpace.from_dict(tables)


async def propose_variable(nc: Connection, registry: Any, name: str, value: Any, *, proposer: str, reason: str = "",
                           deadline: float = 2.0) -> Change:
    """Put a change of variable ``name`` to the vote of its stakeholders and apply it if accepted.

    The node's ``propose`` control endpoint runs it (with ``[auth]`` only
    nodes may write the ``variables`` bucket, so an operator cannot skip the
    vote); without ``[auth]`` the CLI runs it itself.

    Raises:
        VariableValidationError: the value is outside the declared space.
        ChangeRejectedError: the stakeholders did not accept it.
        VariableConflictError: another change landed first.
    """
    kv = await open_variables_bucket(jetstream(nc))
    space = await load_space(kv)
    approval = ConsensusApproval(nc, capability=STAKE_CAPABILITY, finder=registry_finder(registry), deadline=deadline)
    return await VariableStore(kv, space, approval).propose(name, value, proposer=proposer, reason=reason)


class _DeclareOnly:
    """The node declares variables; it never changes one (that takes a proposal)."""

    async def approve(self, change: ChangeRequest) -> Verdict:
        return Verdict(False, "the node only declares variables; propose changes with `foundation vars propose`")


class NodeAgents:
    """Registry, quota services and variables of one node.

    Args:
        cfg: the node's config.

    Raises:
        ConfigError: a ``[variables.*]`` table is invalid.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.node = cfg.node.name
        self.space = parse_variables(cfg.variables)
        self.registry: Registry | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._removals: set[asyncio.Task[None]] = set()

    async def start(self, nc: Connection, service: Any) -> None:
        """Start on a (new) connection; ``service`` is the node's micro service.

        Raises:
            FoundationError: the registry, the variables or a quota service could not start.
        """
        await self.stop()
        stack = contextlib.AsyncExitStack()
        try:
            self.registry = await stack.enter_async_context(open_registry(nc, ttl=self.cfg.node.registry_ttl))
            await service.add_endpoint(query_endpoint(self.registry))
            # Declared by the node: with auth on, the operator's `vars propose`
            # may write decisions but not create buckets (broker.permissions).
            await decision_bucket(nc)
            if len(self.space):
                kv = await open_variables_bucket(jetstream(nc))
                await VariableStore(kv, self.space, _DeclareOnly()).declare()
            for pool in self.cfg.pools.values():
                if pool.quota.rate_per_s or pool.quota.max_concurrency:
                    budget = Budget.from_config(pool.quota)
                    await stack.enter_async_context(open_quota_service(nc, pool.name, budget, name=self.node))
        except BaseException:
            await stack.aclose()
            self.registry = None
            raise
        self._stack = stack

    def worker_exited(self, slot: str, pid: int) -> None:
        """Remove the registry entry of a worker process that ended (any child id that is no slot is ignored)."""
        if self.registry is None or slot.rpartition(".")[0] not in self.cfg.pools:
            return
        task = asyncio.get_running_loop().create_task(self._unregister(self.registry, slot, pid))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _unregister(self, registry: Registry, slot: str, pid: int) -> None:
        id = f"{self.node}.{slot}"
        try:
            async with asyncio.timeout(UNREGISTER_TIMEOUT):
                if await registry.unregister(id, pid=pid, node=self.node):
                    log.info("registry: removed %s (pid %d exited)", id, pid)
        except (FoundationError, TimeoutError) as exc:  # the entry's TTL removes it anyway
            log.warning("registry: could not remove %s (pid %d): %r", id, pid, exc)

    async def stop(self) -> None:
        """Finish pending removals (briefly), resign the quota services, close the registry."""
        if self._removals:
            await asyncio.wait(set(self._removals), timeout=UNREGISTER_TIMEOUT)
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                # Bounded: a node's stop must end even if a service does not.
                await asyncio.wait_for(stack.aclose(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("registry and quota services did not close within %gs", STOP_TIMEOUT)
            except Exception as exc:  # stopping; the connection may already be gone
                log.warning("closing the node's registry and quota services: %r", exc)
        self.registry = None
