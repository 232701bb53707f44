"""Lifecycle events of a node, published on ``foundation.events.<node>.<kind>``.

Every event is a JSON object with ``node``, ``kind`` and ``time`` (Unix
seconds) plus the fields of its kind; unknown fields must be ignored by
readers. ``supervisor`` is the id of the supervisor that acted (``root``,
``pool:echo``) and ``child`` the child's id (a slot ``echo.0``, ``pool:echo``,
``nats-server``).

========  ==============================================================
kind      fields
========  ==============================================================
start     supervisor, child, pid — a child started and is ready
exit      supervisor, child, pid, code (None if a signal), signal (None or
          ``"SIGKILL"``), how (one line), restart (whether it will be)
restart   supervisor, child, pid (the new one), cause (``exit``,
          ``signal``, ``recycle``, ``quota``, ``sibling``, ``requested``),
          reason
quota     pool, child, pid, quota (``rss``, ``cpu``, ``fds``), value,
          limit, action (``recycle`` or ``kill``)
escalate  supervisor, reason — restart intensity exceeded, it gave up
scale     pool, size (from autoscaling or the ``scale`` endpoint)
drain     pool, workers (the slots stopped)
resume    pool, workers (the slots started)
========  ==============================================================

Events are best effort (a plain NATS publish): the log has them as well.
Publishing them also keeps the supervisor's metrics: restarts by pool and
cause, quota breaches by kind, escalations by supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from broker import encode, subjects
from supervisor import metrics

log = logging.getLogger("foundation.events")

KINDS = ("start", "exit", "restart", "quota", "escalate", "scale", "drain", "resume")


def pool_label(data: dict[str, Any]) -> str | None:
    """The pool an event is about, if any (from its supervisor or child id)."""
    if "pool" in data:
        return str(data["pool"])
    for key in ("supervisor", "child"):
        value = str(data.get(key, ""))
        if value.startswith("pool:"):
            return value[len("pool:"):]
    return None


class EventPublisher:
    """The node's event sink: ``publisher(kind, data)``; NATS once attached.

    Args:
        node: the node name (a subject token).
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.nc: Any = None
        self._pending: set[asyncio.Task[None]] = set()

    def attach(self, nc: Any) -> None:
        """Publish from now on over ``nc``; events before that are only logged."""
        self.nc = nc

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        event = {"node": self.node, "kind": kind, "time": time.time(), **data}
        self._count(kind, event)
        log.debug("event %s %s", kind, event)
        if self.nc is not None and self.nc.is_connected:
            task = asyncio.get_running_loop().create_task(self._publish(kind, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _count(self, kind: str, event: dict[str, Any]) -> None:
        pool = pool_label(event)
        m = metrics.metrics()
        if kind == "restart" and pool is not None:
            m.restarts.labels(pool, str(event.get("cause", "exit"))).inc()
        elif kind == "quota" and pool is not None:
            m.quota_breaches.labels(pool, str(event.get("quota"))).inc()
            if event.get("action") == "kill":
                m.quota_kills.labels(pool, str(event.get("quota"))).inc()
        elif kind == "escalate":
            m.escalations.labels(str(event.get("supervisor"))).inc()

    async def _publish(self, kind: str, event: dict[str, Any]) -> None:
        try:
            await self.nc.publish(subjects.event(self.node, kind), encode(event))
        except Exception as exc:  # events are best effort; the log has them too
            log.debug("event %s not published: %s", kind, exc)

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for events still being published, e.g. before exiting."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.nc.flush(timeout=timeout)
            except Exception as exc:  # shutting down anyway
                log.debug("flush of events failed: %s", exc)
