"""Prometheus in multiprocess mode, served by the root supervisor.

``PROMETHEUS_MULTIPROC_DIR`` must be set before *any* process imports
``prometheus_client``, so :func:`prepare_dir` runs first thing in
``foundation up``, and every metric object here is created lazily.

Each process writes its own value files (``counter_<pid>.db`` …), so under
worker churn the directory would grow with every pid ever seen. When a child
exits, :func:`child_exited` removes its gauges (a dead process has no current
value) and folds its counters, histograms and summaries into one
``<type>_archive.db`` per type, so totals survive and the directory stays
bounded by the number of live processes. Folding and scraping take the same
lock, so a scrape never counts a dead process twice or misses it.

``/metrics`` adds the label ``node`` to every sample, so figures of many
nodes stay apart in one Prometheus whatever its scrape config says, and
serves the node's sampled families (:mod:`supervisor.observe`) beside the
counters. :func:`declare` creates every known label set at 0 when the node
starts, so a dashboard shows 0 rather than "no data".
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"

_ARCHIVED_TYPES = ("counter", "histogram", "summary")  # values that add up across processes
_lock = threading.Lock()  # folding dead processes' files vs. reading them


def prepare_dir(path: str | os.PathLike[str]) -> Path:
    """Wipe and create the multiprocess directory, and point the env var at it.

    Files left by an earlier run would be summed into this run's figures.
    """
    p = Path(path).resolve()
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(p)
    # prometheus_client picks its value class when first imported; a module
    # imported before this point (the CLI imports protocols) would otherwise
    # keep this process's values in memory, out of /metrics. Metric children
    # created from now on read the class afresh.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return p


@cache
def _m() -> Any:
    from prometheus_client import Counter, Gauge

    # One metric for every quota breach: resource kinds (rss, cpu, fds) counted
    # here and budget kinds (rate, concurrency) by the quota protocol.
    from protocols.quota.metrics import BREACHES

    class M:
        restarts = Counter("foundation_worker_restarts_total", "Children restarted by a supervisor, by cause.", ["pool", "reason"])
        escalations = Counter("foundation_supervisor_escalations_total", "Supervisors that gave up.", ["supervisor"])
        quota_breaches = BREACHES
        quota_kills = Counter(
            "foundation_quota_kills_total", "Workers killed at once for a resource breach (RSS past 1.5x its limit).", ["pool", "kind"]
        )
        workers = Gauge("foundation_workers", "Worker processes running.", ["pool"], multiprocess_mode="livemax")
        rss = Gauge("foundation_pool_rss_bytes", "Resident memory of a pool's workers.", ["pool"], multiprocess_mode="livemax")
        cpu = Gauge("foundation_pool_cpu_percent", "CPU use of a pool's workers.", ["pool"], multiprocess_mode="livemax")

    return M


def metrics() -> Any:
    """The supervisor's metric objects (created on first use)."""
    return _m()


def child_exited(pid: int) -> None:
    """Drop a dead process's gauges and fold its other files into the archives."""
    path = os.environ.get(ENV)
    if not path:
        return
    with _lock:
        for f in glob.glob(os.path.join(path, f"*_{pid}.db")):
            typ = os.path.basename(f).split("_", 1)[0]
            if typ in _ARCHIVED_TYPES:
                _fold(f, os.path.join(path, f"{typ}_archive.db"))
            os.remove(f)


def _fold(src: str, archive: str) -> None:
    from prometheus_client.mmap_dict import MmapedDict

    values = list(MmapedDict.read_all_values_from_file(src))
    if not values:
        return
    target = MmapedDict(archive)
    try:
        for key, value, timestamp, _pos in values:
            total, _ = target.read_value(key)
            target.write_value(key, total + value, timestamp)
    finally:
        target.close()


RESTART_CAUSES = ("exit", "signal", "recycle", "quota", "sibling", "requested")
QUOTA_KINDS = ("rss", "cpu", "fds", "rate", "concurrency")


def declare(pools: Iterable[str]) -> None:
    """Create every known label set at 0: a panel never shows "no data"."""
    from protocols.metrics import declare as declare_protocols
    from protocols.quota.metrics import DENIALS, LEADER_CHANGES, TOKENS_GRANTED
    from workers.metrics import declare as declare_worker

    m = metrics()
    m.escalations.labels("root")
    for pool in pools:
        declare_worker(pool)
        m.escalations.labels(f"pool:{pool}")
        for cause in RESTART_CAUSES:
            m.restarts.labels(pool, cause)
        for kind in QUOTA_KINDS:
            m.quota_breaches.labels(pool, kind)
        for kind in ("rss", "cpu", "fds"):
            m.quota_kills.labels(pool, kind)
        TOKENS_GRANTED.labels(pool)
        LEADER_CHANGES.labels(pool)
        for kind in ("rate", "concurrency"):
            DENIALS.labels(pool, kind)
    declare_protocols()


class _LockedCollector:
    """The multiprocess collector, reading under the folding lock."""

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._path = path
        self._inner = MultiProcessCollector(None, path=path)

    def collect(self) -> Any:
        # A process that is creating its file has it open but not yet sized:
        # the file exists with 0 bytes for a moment, and reading it then raises
        # struct.error. Such a file holds no values yet, so it is skipped.
        with _lock:
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _sized(f)]
            return list(self._inner.merge(files, accumulate=True))


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8
    except OSError:  # removed by child_exited since the glob
        return False


class _SampledCollector:
    """The sampled families of :mod:`supervisor.observe`, as they were last sampled."""

    def __init__(self, families: Callable[[], list[Any]]) -> None:
        self._families = families

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for fam in self._families():
            kind = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            out = kind(fam.name, fam.help, labels=fam.labels)
            for values, value in fam.samples:
                out.add_metric(list(values), value)
            yield out


class _NodeLabel:
    """Adds ``node="<name>"`` to every sample of the collectors it wraps."""

    def __init__(self, node: str, inner: list[Any]) -> None:
        self.node = node
        self._inner = inner

    def collect(self) -> Any:
        for collector in self._inner:
            for family in collector.collect():
                family.samples = [s._replace(labels={**s.labels, "node": self.node}) for s in family.samples]
                yield family


def registry(node: str | None = None, sampled: Callable[[], list[Any]] | None = None) -> Any:
    """A registry aggregating every process's values (empty outside a node).

    Args:
        node: add the label ``node`` with this value to every sample.
        sampled: the node's sampled families (:meth:`supervisor.observe.Sampler.families`).
    """
    from prometheus_client import CollectorRegistry

    collectors: list[Any] = []
    path = os.environ.get(ENV)
    if path:
        collectors.append(_LockedCollector(path))
    if sampled is not None:
        collectors.append(_SampledCollector(sampled))
    reg = CollectorRegistry()
    if node is not None:
        reg.register(_NodeLabel(node, collectors))
    else:
        for c in collectors:
            reg.register(c)
    return reg


def totals(metric: str, label: str) -> dict[str, float]:
    """Sum of counter ``metric`` (its family name, without ``_total``) by ``label``."""
    out: dict[str, float] = {}
    for family in registry().collect():
        if family.name == metric:
            for s in family.samples:
                if s.name.endswith("_total") and label in s.labels:
                    out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return out


def serve(host: str, port: int, node: str | None = None, sampled: Callable[[], list[Any]] | None = None) -> tuple[Any, int]:
    """Serve ``/metrics`` aggregated over every process; returns (server, port)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(max(port, 0), addr=host, registry=registry(node, sampled))
    return server, server.server_port
