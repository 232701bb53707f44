"""Worker metrics: queue waits counted locally match direct observations; redeliveries counted."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Histogram

from workers.delivery import Outcome
from workers.metrics import QUEUE_WAIT, REDELIVERIES, LocalHistogram, MetricsMiddleware


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for f in registry.collect() for s in f.samples if not s.name.endswith("_created")}


def test_a_local_histogram_writes_what_direct_observations_would() -> None:
    values = [0.0, 0.001, 0.004, 0.005, 0.3, 2.0, 7.5, 1e9]
    direct_reg, local_reg = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.005, 0.5, 5)
    direct = Histogram("h_seconds", "h", buckets=buckets, registry=direct_reg)
    local = LocalHistogram(Histogram("h_seconds", "h", buckets=buckets, registry=local_reg))
    for v in values:
        direct.observe(v)
        local.observe(v)
    assert _samples(local_reg)[("h_seconds_count", "")] == 0  # nothing written before the flush
    local.flush()
    local.flush()  # a second flush with nothing new writes nothing
    assert _samples(local_reg) == _samples(direct_reg)


def _delivery(attempt: int, published_ago: float) -> SimpleNamespace:
    stamp = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=published_ago)
    return SimpleNamespace(pool="mtest", attempt=attempt, msg=SimpleNamespace(metadata=SimpleNamespace(timestamp=stamp)))


async def test_first_attempts_record_their_queue_wait_and_later_ones_count_as_redeliveries() -> None:
    wait, redelivered = QUEUE_WAIT.labels("mtest"), REDELIVERIES.labels("mtest")
    count_before = wait._sum.get(), redelivered._value.get()
    metrics = MetricsMiddleware()

    async def ok(_d):
        return Outcome("ok", handler_seconds=0.001)

    await metrics(_delivery(1, published_ago=2.0), ok)
    await metrics(_delivery(3, published_ago=9.0), ok)
    metrics.flush()

    waited = wait._sum.get() - count_before[0]
    assert 2.0 <= waited < 3.0  # one first attempt, published two seconds ago
    assert redelivered._value.get() - count_before[1] == 1
