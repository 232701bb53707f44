"""Nemeses: faults a chaos run injects and heals, each saying what it did.

Every nemesis is ``inject() -> label`` then ``heal() -> label``, both
awaitable; a label names the victims ("kill -9 nats-server n2 (leads
TASKS)"), and the run draws each inject–heal window on the timeline.

==================  ===========================================  ==========================
nemesis             inject                                       heal
==================  ===========================================  ==========================
KillWorker          ``kill -9`` one running worker of the pool    its supervisor respawns it
                                                                 (waited for)
PauseWorker         ``SIGSTOP`` one running worker                ``SIGCONT``
PauseSupervisor     ``SIGSTOP`` the node process (its workers     ``SIGCONT``
                    keep running, unsupervised)
KillSupervisor      ``kill -9`` the node (``foundation up``);     start the node again, as
                    its workers die with it                      systemd would
KillNats            ``kill -9`` a nats-server (the leader of      restart it on its store
                    ``TASKS``, or one at random)
PauseNats           ``SIGSTOP`` a nats-server                     ``SIGCONT``
Partition           nftables drops between namespaces:           the rules removed
                    ``minority`` (one server vs the rest),
                    ``leader`` (the ``TASKS`` leader vs the
                    rest), ``bridge`` (two servers cut off from
                    each other, both still seeing the third)
LinkFault           a toxic on every client↔server proxy:        the toxic removed, or the
                    ``latency``, ``reset``, ``timeout``,          proxies enabled
                    ``bandwidth``, or ``down`` (proxies
                    disabled)
WipeNats            ``kill -9`` the server holding ``TASKS``,      restart it, empty
                    its store deleted (expected to lose data)
==================  ===========================================  ==========================
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
from typing import TYPE_CHECKING, Protocol

from broker import subjects
from chaos.errors import ChaosError

if TYPE_CHECKING:
    from chaos.env import Env


class Nemesis(Protocol):
    """A fault: :meth:`inject` it, then :meth:`heal` it."""

    name: str

    async def inject(self) -> str: ...

    async def heal(self) -> str: ...


class KillWorker:
    name = "kill-worker"

    def __init__(self, env: "Env", rng: random.Random) -> None:
        self.env, self.rng = env, rng
        self._victim: tuple[str, int] | None = None

    async def inject(self) -> str:
        while True:
            pids = await self.env.worker_pids()
            if not pids:
                raise ChaosError(f"no running worker in pool {self.env.pool} to kill")
            slot = self.rng.choice(sorted(pids))
            try:
                os.kill(pids[slot], signal.SIGKILL)
            except ProcessLookupError:  # it exited since the status reply: pick again
                continue
            self._victim = (slot, pids[slot])
            return f"kill -9 worker {slot}"

    async def heal(self) -> str:
        if self._victim is None:
            return "nothing to heal"
        slot, old = self._victim
        deadline = time.monotonic() + 60
        while (await self.env.worker_pids()).get(slot) in (None, old):
            if time.monotonic() > deadline:
                raise ChaosError(f"worker {slot} did not come back within 60s of its kill -9")
            await asyncio.sleep(0.05)  # polling the control service: a respawn sends no event here
        return f"worker {slot} respawned"


class PauseWorker(KillWorker):
    name = "pause-worker"

    async def inject(self) -> str:
        pids = await self.env.worker_pids()
        if not pids:
            raise ChaosError(f"no running worker in pool {self.env.pool} to pause")
        slot = self.rng.choice(sorted(pids))
        os.kill(pids[slot], signal.SIGSTOP)
        self._victim = (slot, pids[slot])
        return f"SIGSTOP worker {slot}"

    async def heal(self) -> str:
        if self._victim is None:
            return "nothing to heal"
        slot, pid = self._victim
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # its supervisor replaced it meanwhile (a missed heartbeat)
            return f"worker {slot} was replaced while stopped"
        return f"SIGCONT worker {slot}"


class PauseSupervisor:
    name = "pause-supervisor"

    def __init__(self, env: "Env", rng: random.Random) -> None:
        self.env = env
        self._pid = 0

    async def inject(self) -> str:
        node = self.env.require_node(self.name)
        self._pid = node.pid
        os.kill(self._pid, signal.SIGSTOP)
        return f"SIGSTOP node {node.name} (foundation up; its workers run on)"

    async def heal(self) -> str:
        os.kill(self._pid, signal.SIGCONT)
        return f"SIGCONT node {self.env.require_node(self.name).name}"


class KillSupervisor:
    name = "kill-supervisor"

    def __init__(self, env: "Env", rng: random.Random) -> None:
        self.env = env

    async def inject(self) -> str:
        node = self.env.require_node(self.name)
        await asyncio.to_thread(node.kill)
        return f"kill -9 node {node.name} (foundation up and its workers)"

    async def heal(self) -> str:
        node = self.env.require_node(self.name)
        await asyncio.to_thread(node.start)
        return f"node {node.name} started again"


class KillNats:
    name = "kill-nats"

    def __init__(self, env: "Env", rng: random.Random, *, leader: bool = True) -> None:
        self.env, self.rng, self.leader = env, rng, leader
        self._victim = ""

    async def _pick(self) -> tuple[str, str]:
        cluster = self.env.require_cluster(self.name)
        if self.leader:
            name = await asyncio.to_thread(cluster.leader, subjects.TASKS_STREAM)
            return name, f"leads {subjects.TASKS_STREAM}"
        return self.rng.choice([n for n in cluster.names if cluster.running(n)]), "random"

    async def inject(self) -> str:
        name, why = await self._pick()
        await asyncio.to_thread(self.env.require_cluster(self.name).kill, name)
        self._victim = name
        return f"kill -9 nats-server {name} ({why})"

    async def heal(self) -> str:
        await asyncio.to_thread(self.env.require_cluster(self.name).restart, self._victim, 60.0)
        return f"nats-server {self._victim} restarted"


class PauseNats(KillNats):
    name = "pause-nats"

    async def inject(self) -> str:
        name, why = await self._pick()
        os.kill(self._pid(name), signal.SIGSTOP)
        self._victim = name
        return f"SIGSTOP nats-server {name} ({why})"

    def _pid(self, name: str) -> int:
        pid = self.env.require_cluster(self.name).pid(name)
        if pid is None:
            raise ChaosError(f"nats-server {name} is not running")
        return pid

    async def heal(self) -> str:
        os.kill(self._pid(self._victim), signal.SIGCONT)
        return f"SIGCONT nats-server {self._victim}"


class Partition:
    name = "partition"
    MODES = ("minority", "leader", "bridge")

    def __init__(self, env: "Env", rng: random.Random, *, mode: str = "minority") -> None:
        if mode not in self.MODES:
            raise ValueError(f"partition mode must be one of {self.MODES}, got {mode!r}")
        self.env, self.rng, self.mode = env, rng, mode

    async def inject(self) -> str:
        network = self.env.require_network(self.name)
        names = list(network.members)
        if self.mode == "leader":
            cut = await asyncio.to_thread(self.env.require_cluster(self.name).leader, subjects.TASKS_STREAM)
            why = f"the {subjects.TASKS_STREAM} leader"
        else:
            cut = self.rng.choice(names)
            why = "a minority"
        rest = [n for n in names if n != cut]
        if self.mode == "bridge":
            a, b = self.rng.sample(names, 2)
            middle = [n for n in names if n not in (a, b)]
            await asyncio.to_thread(network.partition, {a}, {b})
            return f"bridge: {a} ✕ {b}, both see {', '.join(middle)}"
        await asyncio.to_thread(network.partition, {cut}, set(rest))
        return f"partition {cut} ({why}) | {', '.join(rest)}"

    async def heal(self) -> str:
        await asyncio.to_thread(self.env.require_network(self.name).heal)
        return "partition healed"


class LinkFault:
    name = "link"
    KINDS = {
        "latency": ("latency", {"latency": 300, "jitter": 100}),
        "reset": ("reset_peer", {"timeout": 0}),
        "timeout": ("timeout", {"timeout": 0}),
        "bandwidth": ("bandwidth", {"rate": 16}),
        "down": ("", {}),
    }

    def __init__(self, env: "Env", rng: random.Random, *, kind: str = "") -> None:
        self.env, self.rng = env, rng
        self.fixed = kind
        self.kind = kind

    async def inject(self) -> str:
        toxiproxy, proxies = self.env.require_toxiproxy(self.name)
        self.kind = self.fixed or self.rng.choice(sorted(self.KINDS))
        toxic_type, attrs = self.KINDS[self.kind]
        for proxy in proxies:
            if self.kind == "down":
                await asyncio.to_thread(toxiproxy.set_enabled, proxy, False)
            else:
                await asyncio.to_thread(lambda p=proxy: toxiproxy.add_toxic(p, toxic_type, name="chaos", **attrs))
        detail = ", ".join(f"{k}={v}" for k, v in attrs.items())
        return f"client links {self.kind}" + (f" ({detail})" if detail else "")

    async def heal(self) -> str:
        toxiproxy, proxies = self.env.require_toxiproxy(self.name)
        for proxy in proxies:
            if self.kind == "down":
                await asyncio.to_thread(toxiproxy.set_enabled, proxy, True)
            else:
                await asyncio.to_thread(toxiproxy.remove_toxic, proxy, "chaos")
        return f"client links {self.kind} healed"


class WipeNats(KillNats):
    name = "wipe-nats"

    async def inject(self) -> str:
        cluster = self.env.require_cluster(self.name)
        name, why = await self._pick()
        await asyncio.to_thread(cluster.kill, name)
        shutil.rmtree(cluster.dir / name / "jetstream", ignore_errors=True)
        self._victim = name
        return f"kill -9 nats-server {name} ({why}), store wiped"
