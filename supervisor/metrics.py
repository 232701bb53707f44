"""Prometheus in multiprocess mode, served by the root supervisor.

``PROMETHEUS_MULTIPROC_DIR`` must be set before *any* process imports
``prometheus_client``, so :func:`prepare_dir` runs first thing in
``foundation up``, and every metric object here is created lazily.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_dir(path: str | os.PathLike[str]) -> Path:
    """Wipe and create the multiprocess directory, and point the env var at it.

    Files left by an earlier run would be summed into this run's figures.
    """
    p = Path(path).resolve()
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(p)
    return p


@cache
def _m() -> Any:
    from prometheus_client import Counter, Gauge

    class M:
        restarts = Counter("foundation_worker_restarts_total", "Children restarted by a supervisor.", ["pool", "reason"])
        escalations = Counter("foundation_supervisor_escalations_total", "Supervisors that gave up.", ["supervisor"])
        quota_breaches = Counter("foundation_quota_breaches_total", "Resource quota breaches.", ["pool", "kind"])
        workers = Gauge("foundation_workers", "Worker processes running.", ["pool"], multiprocess_mode="livemax")
        rss = Gauge("foundation_pool_rss_bytes", "Resident memory of a pool's workers.", ["pool"], multiprocess_mode="livemax")
        cpu = Gauge("foundation_pool_cpu_percent", "CPU use of a pool's workers.", ["pool"], multiprocess_mode="livemax")

    return M


def metrics() -> Any:
    """The supervisor's metric objects (created on first use)."""
    return _m()


def child_exited(pid: int) -> None:
    """Drop a dead process's live gauges and merge its files (bounded directory)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve(host: str, port: int) -> tuple[Any, int]:
    """Serve ``/metrics`` aggregated over every process; returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if os.environ.get(ENV):
        MultiProcessCollector(registry)
    server, _thread = start_http_server(max(port, 0), addr=host, registry=registry)
    return server, server.server_port
