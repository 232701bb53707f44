"""Reading a nats-server's monitoring endpoint (``/varz``, ``/jsz``, ``/healthz``).

``nats-server`` has no ``/metrics``; the node polls these JSON endpoints of
the embedded server, or of each ``nats.monitor_urls`` server, and exports the
figures as ``foundation_nats_*`` gauges (:mod:`supervisor.observe`).

:func:`poll` never raises: a server that does not answer is reported as down
(``up = False``) with the reason, so one unreachable server never hides the
others.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

TIMEOUT = 2.0  # seconds per request; a poll of one server makes at most three

# /varz fields that only grow (exported as counters) and those that are levels (gauges).
VARZ_COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes", "slow_consumers", "total_connections")
VARZ_GAUGES = ("connections", "subscriptions", "routes", "leafnodes", "mem", "cpu")
JSZ_GAUGES = ("streams", "consumers", "messages", "bytes", "memory", "storage")


@dataclass
class ServerHealth:
    """One poll of one server's monitoring endpoint."""

    url: str
    up: bool = False  # /varz answered
    jetstream_ok: bool = False  # /healthz?js-enabled-only=true said ok
    name: str = ""  # the server's name (``server_name``), or its URL when unknown
    varz: dict[str, float] = field(default_factory=dict)
    jsz: dict[str, float] = field(default_factory=dict)
    api_total: float = 0.0
    api_errors: float = 0.0
    error: str = ""


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
        return json.loads(resp.read())


def _numbers(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: float(data[k]) for k in keys if isinstance(data.get(k), (int, float))}


def poll_sync(url: str) -> ServerHealth:
    """Poll one server (blocking); see :func:`poll`."""
    base = url.rstrip("/")
    health = ServerHealth(url=base, name=base)
    try:
        varz = _get(f"{base}/varz")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        health.error = f"/varz: {exc}"
        return health
    health.up = True
    health.name = str(varz.get("server_name") or base)
    health.varz = _numbers(varz, VARZ_COUNTERS + VARZ_GAUGES)
    try:
        with urllib.request.urlopen(f"{base}/healthz?js-enabled-only=true", timeout=TIMEOUT) as resp:
            health.jetstream_ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:  # 503 when JetStream is down
        health.error = f"/healthz: {exc}"
    try:
        jsz = _get(f"{base}/jsz")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        health.error = f"/jsz: {exc}"
        return health
    health.jsz = _numbers(jsz, JSZ_GAUGES)
    api = jsz.get("api") or {}
    health.api_total = float(api.get("total", 0) or 0)
    health.api_errors = float(api.get("errors", 0) or 0)
    return health


async def poll(url: str) -> ServerHealth:
    """Poll the monitoring endpoint at ``url`` (``http://host:port``) off the event loop."""
    return await asyncio.to_thread(poll_sync, url)
