"""Sampled metrics of a node: what no single task update can count.

Every ``metrics.sample_interval`` seconds the node's :class:`Sampler` reads

* each pool's consumer (JetStream consumer info): backlog, ack pending,
  redelivered, waiting pull requests;
* the per-pool message counts of the ``DLQ`` and ``RESULTS`` streams;
* the registry cache: this node's agents by pool and status;
* the declared shared variables: changes applied (their version) and
  numeric values;
* its pool supervisors: workers by state, desired size;
* the monitoring endpoint (``/varz``, ``/jsz``, ``/healthz``) of the
  embedded nats-server or of each ``nats.monitor_urls`` server;

and keeps the figures as metric families that ``/metrics`` serves as they
are (:class:`SampledCollector`), so a scrape costs no NATS request and a
label that disappears (a pool scaled away, a server gone) disappears from
``/metrics`` too. A part that fails to sample keeps its last figures and
counts the failure in ``foundation_sampler_errors_total{part}``; sampling
never stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker import jetstream, subjects
from broker.monitor import VARZ_COUNTERS, VARZ_GAUGES, ServerHealth, poll
from protocols.variables import ParameterSpace, VariableStore, open_variables_bucket

log = logging.getLogger("foundation.observe")

AGENT_STATUSES = ("starting", "ready", "busy", "draining")
WORKER_STATES = ("running", "down", "drained")
PARTS = ("consumers", "streams", "registry", "variables", "nats")


@dataclass(frozen=True)
class Family:
    """One metric family: name, type (``gauge`` or ``counter``), help, label names and samples."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]


def _gauge(name: str, help: str, labels: tuple[str, ...], samples: Iterable[tuple[tuple[str, ...], float]]) -> Family:
    return Family(name, "gauge", help, labels, tuple(samples))


def _counter(name: str, help: str, labels: tuple[str, ...], samples: Iterable[tuple[tuple[str, ...], float]]) -> Family:
    return Family(name, "counter", help, labels, tuple(samples))


@dataclass
class NodeView:
    """What the sampler reads of its node (a narrow interface, filled in by the node).

    Attributes:
        node: the node name.
        pools: pool name → its supervisor (``size``, ``running_count``, ``drained``).
        nc: the node's NATS connection now (``None`` while there is none).
        registry: the node's registry now (``None`` while there is none).
        monitor_urls: the monitoring URLs to poll now.
        ready: whether the node has started all its pools and is not stopping.
        variables: the declared shared variables.
    """

    node: str
    pools: Mapping[str, Any]
    nc: Callable[[], Any]
    registry: Callable[[], Any]
    monitor_urls: Callable[[], list[str]]
    ready: Callable[[], bool]
    variables: ParameterSpace | None = None


class Sampler:
    """Refreshes the node's sampled metric families; :meth:`run` until cancelled."""

    def __init__(self, view: NodeView, interval: float = 5.0) -> None:
        self.view = view
        self.interval = interval
        self.started = time.time()
        self._parts: dict[str, list[Family]] = {}
        self._errors = {part: 0 for part in PARTS}
        self.samples = 0
        self._sampled = asyncio.Event()

    # -- what /metrics serves --------------------------------------------------

    def families(self) -> list[Family]:
        """Every sampled family, the node's own first."""
        pools = self.view.pools
        own = [
            _gauge("foundation_node_up", "1 while the node's supervisor runs (serves /metrics).", (), [((), 1.0)]),
            _gauge("foundation_node_ready", "1 when every pool has started and the node is not stopping.", (),
                   [((), 1.0 if self.view.ready() else 0.0)]),
            _gauge("foundation_node_start_time_seconds", "When the node started (Unix time).", (), [((), self.started)]),
            _gauge("foundation_pool_size", "Workers a pool should have (its size now).", ("pool",),
                   [((name,), float(sup.size)) for name, sup in pools.items()]),
            _gauge("foundation_workers_by_state", "A pool's worker slots by state: running, down (being restarted), drained.",
                   ("pool", "state"), [((name, state), n) for name, sup in pools.items() for state, n in _states(sup).items()]),
            _counter("foundation_sampler_errors_total", "Samples of a part that failed (the last figures stay).",
                     ("part",), [((part,), float(n)) for part, n in self._errors.items()]),
        ]
        return own + [f for part in PARTS for f in self._parts.get(part, [])]

    # -- sampling ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval)

    async def wait_sampled(self) -> None:
        await self._sampled.wait()

    async def sample_once(self) -> None:
        """Sample every part (concurrently); a failing part keeps its last figures."""
        parts = {
            "consumers": self._consumers, "streams": self._streams, "registry": self._registry,
            "variables": self._variables, "nats": self._nats,
        }
        results = await asyncio.gather(*(fn() for fn in parts.values()), return_exceptions=True)
        for part, result in zip(parts, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                self._errors[part] += 1
                log.debug("sampling %s failed: %r", part, result)
            elif result is not None:
                self._parts[part] = result
        self.samples += 1
        self._sampled.set()

    def _js(self) -> Any:
        nc = self.view.nc()
        if nc is None or not nc.is_connected:
            raise ConnectionError("no NATS connection")
        return jetstream(nc)

    async def _consumers(self) -> list[Family] | None:
        if not self.view.pools:
            return []
        js = self._js()
        infos = await asyncio.gather(
            *(js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(p)) for p in self.view.pools)
        )
        rows = [(p, i) for p, i in zip(self.view.pools, infos)]
        return [
            _gauge("foundation_pool_backlog", "Tasks waiting in a pool's consumer, not yet delivered.", ("pool",),
                   [((p,), float(i.num_pending)) for p, i in rows]),
            _gauge("foundation_pool_ack_pending", "Tasks delivered to a pool's workers and not yet acknowledged.", ("pool",),
                   [((p,), float(i.num_ack_pending)) for p, i in rows]),
            _gauge("foundation_pool_redelivered", "Tasks of a pool delivered more than once and not yet acknowledged.", ("pool",),
                   [((p,), float(i.num_redelivered)) for p, i in rows]),
            _gauge("foundation_pool_waiting_fetches", "Pull requests of a pool's workers waiting for tasks.", ("pool",),
                   [((p,), float(i.num_waiting or 0)) for p, i in rows]),
        ]

    async def _streams(self) -> list[Family] | None:
        js = self._js()
        dlq, results = await asyncio.gather(
            js.stream_info(subjects.DLQ_STREAM, subjects_filter="dlq.>"),
            js.stream_info(subjects.RESULTS_STREAM, subjects_filter="results.>"),
        )
        per_dlq = dlq.state.subjects or {}
        per_results = results.state.subjects or {}
        return [
            _gauge("foundation_dlq_messages", "Dead letters kept in the DLQ stream for a pool (its depth).", ("pool",),
                   [((p,), float(per_dlq.get(subjects.dlq(p), 0))) for p in self.view.pools]),
            _gauge("foundation_results_messages", "Results kept in the RESULTS stream for a pool.", ("pool",),
                   [((p,), float(per_results.get(subjects.results(p), 0))) for p in self.view.pools]),
        ]

    async def _registry(self) -> list[Family] | None:
        registry = self.view.registry()
        if registry is None:
            return None
        counts = {(p, s): 0 for p in self.view.pools for s in AGENT_STATUSES}
        for entry in registry.entries():
            if entry.node == self.view.node:
                key = (entry.pool, str(entry.status.value))
                counts[key] = counts.get(key, 0) + 1
        return [
            _gauge("foundation_registry_agents", "This node's agents in the cluster registry, by pool and status.",
                   ("pool", "status"), [((p, s), float(n)) for (p, s), n in sorted(counts.items())]),
        ]

    async def _variables(self) -> list[Family] | None:
        space = self.view.variables
        if space is None or not len(space):
            return []
        store = VariableStore(await open_variables_bucket(self._js()), space, approval=None)  # read-only: never proposes
        changes = [await store.current(var.name) for var in space]
        numeric = [c for c in changes if isinstance(c.value, (int, float))]  # bools too: True is an int
        return [
            _counter("foundation_variable_changes_total", "Changes applied to a shared variable since it was declared.",
                     ("variable",), [((c.name,), float(c.version)) for c in changes]),
            _gauge("foundation_variable_value", "The applied value of a numeric (or bool) shared variable.", ("variable",),
                   [((c.name,), float(c.value)) for c in numeric]),
        ]

    async def _nats(self) -> list[Family] | None:
        urls = self.view.monitor_urls()
        polls: list[ServerHealth] = list(await asyncio.gather(*(poll(u) for u in urls)))
        return nats_families(polls)


def _states(sup: Any) -> dict[str, float]:
    running = float(sup.running_count)
    idle = float(max(sup.size - sup.running_count, 0))
    return {"running": running, "down": 0.0 if sup.drained else idle, "drained": idle if sup.drained else 0.0}


def nats_families(polls: list[ServerHealth]) -> list[Family]:
    """``foundation_nats_*`` families from one poll of each server (label ``server``)."""
    s = [(h.name,) for h in polls]
    fams = [
        _gauge("foundation_nats_up", "1 when the server's monitoring endpoint answered.", ("server",),
               [(k, 1.0 if h.up else 0.0) for k, h in zip(s, polls)]),
        _gauge("foundation_nats_jetstream_up", "1 when the server reports JetStream healthy (/healthz?js-enabled-only).",
               ("server",), [(k, 1.0 if h.jetstream_ok else 0.0) for k, h in zip(s, polls)]),
    ]
    for field in VARZ_GAUGES:
        name = {"mem": "mem_bytes", "cpu": "cpu_percent"}.get(field, field)
        fams.append(_gauge(f"foundation_nats_{name}", f"/varz {field} of the server.", ("server",),
                           [(k, h.varz[field]) for k, h in zip(s, polls) if field in h.varz]))
    for field in VARZ_COUNTERS:
        name = {"total_connections": "connections_opened"}.get(field, field)
        fams.append(_counter(f"foundation_nats_{name}_total", f"/varz {field} of the server (since it started).", ("server",),
                             [(k, h.varz[field]) for k, h in zip(s, polls) if field in h.varz]))
    for field, unit in (("streams", ""), ("consumers", ""), ("messages", ""), ("bytes", ""), ("memory", "_bytes"), ("storage", "_bytes")):
        fams.append(_gauge(f"foundation_nats_jetstream_{field}{unit}", f"/jsz {field} of the server.", ("server",),
                           [(k, h.jsz[field]) for k, h in zip(s, polls) if field in h.jsz]))
    fams.append(_counter("foundation_nats_jetstream_api_requests_total", "/jsz JetStream API requests served.", ("server",),
                         [(k, h.api_total) for k, h in zip(s, polls) if h.jsz]))
    fams.append(_counter("foundation_nats_jetstream_api_errors_total", "/jsz JetStream API requests that failed.", ("server",),
                         [(k, h.api_errors) for k, h in zip(s, polls) if h.jsz]))
    return fams
