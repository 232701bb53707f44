"""The chaos scenarios behind ``foundation chaos list`` and ``foundation chaos run``.

Each scenario names its nemeses and what it needs; :func:`run_scenario`
starts the cluster (3 servers, every stream and bucket at ``replicas``), the
client proxies and the node it needs (:func:`chaos.env.open_env`), or uses an
existing deployment (``url``), runs it (:func:`chaos.run.run`) and returns
the result. Where the machine lacks what a scenario needs it raises
:class:`~chaos.errors.NemesisUnavailable` with the reason: the CLI prints it
and exits 77 (skipped) — never 0 — and tests skip with it, except under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import netns
from chaos.env import Env, open_env
from chaos.errors import NemesisUnavailable
from chaos.nemesis import (
    KillNats, KillSupervisor, KillWorker, LinkFault, Nemesis, Partition, PauseNats, PauseSupervisor, PauseWorker, WipeNats,
)
from chaos.run import Progress, RunResult, run

Factory = Callable[[Env, random.Random], list[Nemesis]]


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    nemeses: Factory
    partitions: bool = False  # servers in network namespaces
    client_proxies: bool = False  # node and workload through toxiproxy
    replicas: int = 3
    expect_loss: bool = False
    existing_ok: bool = False  # can run against an existing node (--url)
    fault_s: float = 3.0
    calm_s: float = 3.0
    pick: str = "cycle"
    pool_table: dict[str, Any] = field(default_factory=dict)
    work_ms: float = 0.0  # simulated work per task (chaos.handlers.count sleeps it)

    def unavailable(self) -> str:
        """Why this machine cannot run it ("" when it can)."""
        return netns.unavailable() if self.partitions else ""


def _mixed(env: Env, rng: random.Random) -> list[Nemesis]:
    out: list[Nemesis] = [KillWorker(env, rng), PauseWorker(env, rng), KillNats(env, rng), PauseNats(env, rng, leader=False),
                          KillSupervisor(env, rng), PauseSupervisor(env, rng), LinkFault(env, rng)]
    if env.network is not None:
        out += [Partition(env, rng, mode="minority"), Partition(env, rng, mode="leader"), Partition(env, rng, mode="bridge")]
    return out


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("kill-workers", "kill -9 a random worker of the pool, again and again",
             lambda e, r: [KillWorker(e, r)], existing_ok=True, fault_s=0.5, calm_s=1.0),
    Scenario("pause-processes", "SIGSTOP a worker, then the node's supervisor; SIGCONT each",
             lambda e, r: [PauseWorker(e, r), PauseSupervisor(e, r)], fault_s=2.0, calm_s=1.0),
    Scenario("kill-supervisor", "kill -9 the node (foundation up with its workers), start it again",
             lambda e, r: [KillSupervisor(e, r)], fault_s=1.0),
    Scenario("kill-nats-leader", "kill -9 the nats-server leading TASKS, restart it on its store",
             lambda e, r: [KillNats(e, r, leader=True)]),
    Scenario("pause-nats", "SIGSTOP a nats-server (the TASKS leader), SIGCONT it",
             lambda e, r: [PauseNats(e, r, leader=True)]),
    Scenario("partition-minority", "cut one server off from the other two (nftables between namespaces)",
             lambda e, r: [Partition(e, r, mode="minority")], partitions=True),
    Scenario("partition-leader", "cut the TASKS leader off from the other two servers",
             lambda e, r: [Partition(e, r, mode="leader")], partitions=True),
    Scenario("partition-bridge", "two servers cut off from each other, both still seeing the third",
             lambda e, r: [Partition(e, r, mode="bridge")], partitions=True),
    Scenario("client-link-faults", "latency, reset, timeout, bandwidth and down on every client↔server link",
             lambda e, r: [LinkFault(e, r, kind=k) for k in ("latency", "reset", "timeout", "bandwidth", "down")],
             client_proxies=True, existing_ok=True, fault_s=2.0, calm_s=2.0),
    Scenario("mixed", "random nemeses (seeded): kills, pauses, partitions, link faults",
             _mixed, partitions=True, client_proxies=True, pick="random"),
    Scenario("lossy-r1-wipe", "replicas = 1; kill -9 the server holding TASKS and wipe its store: MUST report lost > 0",
             lambda e, r: [WipeNats(e, r, leader=True)], replicas=1, expect_loss=True, fault_s=1.0,
             # Slower than the workload: a backlog of acked tasks sits in TASKS when its store goes.
             pool_table={"size": 1, "concurrency": 1}, work_ms=20.0),
]}


def run_scenario(
    name: str,
    *,
    seed: int | None = None,
    duration: float = 30.0,
    rate: float = 200.0,
    url: str = "",
    pool: str = "chaos",
    node: str = "",
    progress: Progress | None = None,
    directory: Path | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run scenario ``name``; returns its result and the set-up it ran on (for the report).

    Raises:
        KeyError: no such scenario.
        NemesisUnavailable: this machine (or an existing deployment) cannot run it.
    """
    scenario = SCENARIOS[name]
    seed = random.randrange(1 << 31) if seed is None else seed
    why = scenario.unavailable()
    if why:
        raise NemesisUnavailable(f"scenario {name} skipped: {why}")
    # Short runs keep at least one whole fault window after the warm-up.
    fault_s = min(scenario.fault_s, duration / 3)
    calm_s = min(scenario.calm_s, duration / 4)
    kwargs = dict(seed=seed, duration=duration, rate=rate, fault_s=fault_s, calm_s=calm_s, pick=scenario.pick,
                  work_ms=scenario.work_ms, expect_loss=scenario.expect_loss, progress=progress)
    if scenario.expect_loss:
        # The lost tasks never come: stop the drain soon after the rest is in.
        kwargs["quiet_s"] = 5.0
    if url:
        if not scenario.existing_ok:
            raise NemesisUnavailable(f"scenario {name} needs a cluster and node of its own: run it without --url")
        return _on_existing(scenario, url, pool, node, kwargs)
    with open_env(replicas=scenario.replicas, partitions=scenario.partitions, client_proxies=scenario.client_proxies,
                  pool_table=scenario.pool_table, directory=directory) as env:
        rng = random.Random(seed)
        result = asyncio.run(run(env, name, scenario.nemeses(env, rng), **kwargs))
        setup = {"servers": len(env.cluster.names) if env.cluster else 0, "replicas": env.replicas,
                 "partitions_in_namespaces": env.network is not None, "client_proxies": bool(env.proxies)}
        return result, setup


def _on_existing(scenario: Scenario, url: str, pool: str, node: str, kwargs: dict[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    import contextlib

    from chaos.toxiproxy import ToxiproxyClient, open_toxiproxy

    env = Env(url=url, pool=pool, node_name=node)
    with contextlib.ExitStack() as stack:
        if scenario.client_proxies:
            # Only this run's own links go through proxies: the node keeps its own.
            env.toxiproxy = ToxiproxyClient(stack.enter_context(open_toxiproxy()))
            listens = []
            for i, server in enumerate(url.split(",")):
                name = f"foundation-chaos-client-{i}"
                listens.append(env.toxiproxy.create(name, server.strip().split("://", 1)[-1])["listen"])
                env.proxies.append(name)
                stack.callback(env.toxiproxy.delete, name)
            env.url = ",".join(f"nats://{listen}" for listen in listens)
        rng = random.Random(kwargs["seed"])
        result = asyncio.run(run(env, scenario.name, scenario.nemeses(env, rng), **kwargs))
        return result, {"existing": url, "pool": pool, "node": node}
