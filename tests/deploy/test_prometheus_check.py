"""Every dashboard panel and every rule, evaluated by a real Prometheus scraping a real node under load.

The node runs four pools: ``work`` (tasks that succeed, fail once, always
fail, are not JSON, or kill their worker on every attempt; a cluster-wide
rate quota), ``voters`` (answer votes of group ``obs`` and variable changes),
``market`` (market dispatch: every task is a Contract Net auction) and
``coord`` (one task runs a vote, a Byzantine decision, an election, a lock, a
barrier and four sealed-bid auctions inside the node) and ``hog`` (a task that
blows its worker's memory: killed by the RSS quota, the pool escalates). A voter is killed with
SIGKILL and a shared variable is changed by vote. Prometheus scrapes the node
every second with the shipped rules — copied with every alert's ``for:`` set
to 0s, expressions unchanged — and the test waits until:

* Prometheus sees what the workload did (each figure below), then
* every panel query and every recording rule returns at least one series,
  every alert expression evaluates, and the DLQ, restart-storm, quota-kill
  and escalation alerts fire.

It prints how many series each panel's query returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import collect_results, connect, jetstream, publish_task, subjects
from deploy.grafana import panel_queries
from supervisor.control import request
from supervisor.harness import FOUNDATION, NodeProcess, write_config
from tests.deploy.promcheck import Prometheus
from tests.deploy.tools import tool

pytestmark = pytest.mark.timeout(300)

WINDOW = "30s"  # stands for $__rate_interval: thirty scrapes
# What the workload must have done, as Prometheus sees it.
SEEN = [
    'sum(foundation_tasks_processed_total{pool="work"}) >= 31',
    'sum(foundation_tasks_failed_total{pool="work"}) >= 4',
    'sum(foundation_tasks_retried_total{pool="work"}) >= 3',
    'sum(foundation_task_redeliveries_total{pool="work"}) >= 3',
    'sum(foundation_task_queue_wait_seconds_count{pool="work"}) >= 30',
    'sum(foundation_tasks_dead_lettered_total{pool="work", reason="exhausted"}) >= 1',
    'sum(foundation_tasks_dead_lettered_total{pool="work", reason="invalid"}) >= 1',
    'sum(foundation_tasks_dead_lettered_total{pool="work", reason="worker_died"}) >= 3',
    'max(foundation_dlq_messages{pool="work"}) >= 5',
    'max(foundation_results_messages{pool="work"}) >= 36',
    'sum(foundation_worker_restarts_total{pool="work", reason="exit"}) >= 6',
    'sum(foundation_worker_restarts_total{pool="voters", reason="signal"}) >= 1',
    'sum(foundation_quota_tokens_granted_total{pool="work"}) >= 31',
    'sum(foundation_quota_kills_total{pool="hog", kind="rss"}) >= 2',
    'sum(foundation_supervisor_escalations_total{supervisor="pool:hog"}) >= 2',
    'sum(foundation_tasks_dead_lettered_total{pool="hog", reason="worker_died"}) >= 1',
    'sum(foundation_quota_leader_changes_total{pool="work"}) >= 1',
    'sum(foundation_coord_rounds_total{protocol="consensus", outcome="accepted"}) >= 2',
    'sum(foundation_coord_rounds_total{protocol="bft", outcome="decided"}) >= 3',
    'sum(foundation_bft_round_changes_total) >= 1',
    'sum(foundation_coord_rounds_total{protocol="election", outcome="won"}) >= 2',
    'sum(foundation_coord_rounds_total{protocol="lock", outcome="acquired"}) >= 1',
    'sum(foundation_coord_rounds_total{protocol="barrier", outcome="passed"}) >= 1',
    'sum(foundation_coord_rounds_total{protocol="contract_net", outcome="awarded"}) >= 10',
    'min(foundation_auctions_cleared_total) >= 1',
    'sum(foundation_registry_agents{status=~"ready|busy"}) >= 4',
    'max(foundation_variable_changes_total{variable="lr"}) >= 1',
    'max(foundation_variable_value{variable="lr"}) == 0.05',
    'min(foundation_nats_jetstream_up) == 1',
    "min(foundation_node_ready) == 1",
]
MUST_FIRE = {"FoundationDLQGrowing", "FoundationRestartStorm", "FoundationQuotaKill", "FoundationEscalation"}
# Every foundation_* family /metrics serves and its labels besides node (counters
# without _total): names and labels are a contract with dashboards and alerts.
INVENTORY = {
    "foundation_auction_seconds": ('kind',),
    "foundation_auctions_cleared": ('kind',),
    "foundation_bft_rejected": ('reason',),
    "foundation_bft_round_changes": ('cause',),
    "foundation_coord_round_seconds": ('protocol',),
    "foundation_coord_rounds": ('outcome', 'protocol'),
    "foundation_dlq_messages": ('pool',),
    "foundation_nats_connections": ('server',),
    "foundation_nats_connections_opened": ('server',),
    "foundation_nats_cpu_percent": ('server',),
    "foundation_nats_in_bytes": ('server',),
    "foundation_nats_in_msgs": ('server',),
    "foundation_nats_jetstream_api_errors": ('server',),
    "foundation_nats_jetstream_api_requests": ('server',),
    "foundation_nats_jetstream_bytes": ('server',),
    "foundation_nats_jetstream_consumers": ('server',),
    "foundation_nats_jetstream_memory_bytes": ('server',),
    "foundation_nats_jetstream_messages": ('server',),
    "foundation_nats_jetstream_storage_bytes": ('server',),
    "foundation_nats_jetstream_streams": ('server',),
    "foundation_nats_jetstream_up": ('server',),
    "foundation_nats_leafnodes": ('server',),
    "foundation_nats_mem_bytes": ('server',),
    "foundation_nats_out_bytes": ('server',),
    "foundation_nats_out_msgs": ('server',),
    "foundation_nats_routes": ('server',),
    "foundation_nats_slow_consumers": ('server',),
    "foundation_nats_subscriptions": ('server',),
    "foundation_nats_up": ('server',),
    "foundation_node_ready": (),
    "foundation_node_start_time_seconds": (),
    "foundation_node_up": (),
    "foundation_pool_ack_pending": ('pool',),
    "foundation_pool_backlog": ('pool',),
    "foundation_pool_cpu_percent": ('pool',),
    "foundation_pool_redelivered": ('pool',),
    "foundation_pool_rss_bytes": ('pool',),
    "foundation_pool_size": ('pool',),
    "foundation_pool_waiting_fetches": ('pool',),
    "foundation_quota_breaches": ('kind', 'pool'),
    "foundation_quota_denials": ('kind', 'pool'),
    "foundation_quota_kills": ('kind', 'pool'),
    "foundation_quota_leader_changes": ('pool',),
    "foundation_quota_tokens_granted": ('pool',),
    "foundation_registry_agents": ('pool', 'status'),
    "foundation_results_messages": ('pool',),
    "foundation_sampler_errors": ('part',),
    "foundation_supervisor_escalations": ('supervisor',),
    "foundation_task_duration_seconds": ('pool',),
    "foundation_task_queue_wait_seconds": ('pool',),
    "foundation_task_redeliveries": ('pool',),
    "foundation_tasks_abandoned": ('pool',),
    "foundation_tasks_dead_lettered": ('pool', 'reason'),
    "foundation_tasks_deduplicated": ('pool',),
    "foundation_tasks_failed": ('pool',),
    "foundation_tasks_in_flight": ('pool',),
    "foundation_tasks_processed": ('pool',),
    "foundation_tasks_retried": ('pool',),
    "foundation_variable_changes": ('variable',),
    "foundation_variable_value": ('variable',),
    "foundation_worker_restarts": ('pool', 'reason'),
    "foundation_workers": ('pool',),
    "foundation_workers_by_state": ('pool', 'state'),
}


def _expr(expr: str) -> str:
    return expr.replace("$__rate_interval", WINDOW).replace("$node", ".*").replace("$pool", ".*")


def _config(tmp_path: Path) -> Path:
    work = {
        "handler": "tests.deploy.workload:work", "size": 2, "concurrency": 4, "ack_wait": 1, "max_deliver": 3,
        "backoff": [0.1, 0.2], "max_restarts": 100, "max_seconds": 10, "quota": {"rate_per_s": 1000},
    }
    return write_config(
        tmp_path / "f.toml",
        metrics={"port": -1, "sample_interval": 0.5},
        pools={
            "work": work,
            "voters": {"handler": "tests.handlers:judge", "size": 2, "capabilities": ["vote:obs", "variables"]},
            "market": {"handler": "workers.examples:echo", "size": 2, "dispatch": "market"},
            "coord": {"handler": "tests.deploy.workload:coordinate", "size": 1, "concurrency": 1},
            # Last, so the root's rest_for_one restarts only it: a task that blows
            # its worker's memory is killed by the RSS quota, and the pool (allowed
            # no restart) escalates to the root each time.
            "hog": {"handler": "tests.handlers:poison", "size": 1, "max_restarts": 0, "ack_wait": 1,
                    "max_deliver": 2, "backoff": [0.1], "quota": {"max_rss_mb": 120}},
        },
        supervisor={"max_restarts": 10, "max_seconds": 10},
        **{'variables."lr"': {"kind": "float", "default": 0.1, "low": 0.0, "high": 1.0}},
    )


async def _workload(url: str, config: Path, metrics_url: str) -> None:
    nc = await connect(url, name="workload")
    js = jetstream(nc)
    try:
        async with collect_results(js, ">") as results:
            ids: list[str] = []

            async def task(pool: str, payload: dict, task_id: str) -> None:
                await publish_task(js, pool, payload, task_id=task_id)
                ids.append(task_id)

            for i in range(30):
                await task("work", {"i": i}, f"ok{i}")
            await task("work", {"fail": "first"}, "fail-once")
            await task("work", {"fail": "always"}, "fail-always")
            await js.publish(subjects.tasks("work"), b"not json", headers={subjects.MSG_ID: "garbage"})
            ids.append("garbage")
            for i in range(10):
                await task("market", {"i": i}, f"bid{i}")
            await task("coord", {"nats": url}, "coordinate")
            got = await results.wait_for(ids, timeout=120)
            # One at a time, once the rest is done: a task that kills its worker
            # takes whatever shares the worker with it down too, including the
            # worker still dead-lettering the previous poison (its count would be lost).
            for i in range(3):
                await task("work", {"exit": True}, f"poison{i}")
                got.update(await results.wait_for([f"poison{i}"], timeout=60))
                await _counted(metrics_url, i + 1)
            await task("hog", {"hog": True}, "hog")
            got.update(await results.wait_for(["hog"], timeout=60))
        failed = {t for t in ids if not got[t]["ok"]}
        assert failed == {"fail-always", "poison0", "poison1", "poison2", "garbage", "hog"}, {t: got[t].get("error") for t in failed}
        assert got["coordinate"]["result"]["vote"] == "accepted", got["coordinate"]
        proposed = await asyncio.to_thread(
            subprocess.run,
            [FOUNDATION, "vars", "propose", "lr", "0.05", "--config", str(config), "--url", url, "--deadline", "10"],
            capture_output=True, text=True, timeout=60,
        )
        assert proposed.returncode == 0, proposed.stdout + proposed.stderr
        # After the vote: a voter killed mid-vote would leave its ballot unanswered.
        status = await request(nc, "test", "status")
        voter = next(w["pid"] for w in status["pools"]["voters"]["workers"] if w["running"])
        os.kill(voter, signal.SIGKILL)
    finally:
        await nc.close()


async def _counted(metrics_url: str, n: int, timeout: float = 60.0) -> None:
    """Wait until the node counts ``n`` tasks of pool work dead-lettered because their worker died."""
    deadline = time.monotonic() + timeout

    def count() -> float:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "foundation_tasks_dead_lettered_total"
                   and s.labels.get("pool") == "work" and s.labels.get("reason") == "worker_died")

    while (seen := await asyncio.to_thread(count)) < n:
        assert time.monotonic() < deadline, f"{seen} of {n} poison tasks counted as dead-lettered"
        await asyncio.sleep(0.2)  # the node's /metrics: a figure to poll, no event to wait on


def _inventory(url: str) -> dict[str, tuple[str, ...]]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("foundation_"):
            labels = {k for s in family.samples for k in s.labels} - {"le", "node"}
            assert all(s.labels.get("node") == "test" for s in family.samples), family.name
            out[family.name] = tuple(sorted(labels))
    return out


def _series(prom: Prometheus, exprs: list[str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for expr in exprs:
        try:
            out[expr] = len(prom.query(_expr(expr)))
        except AssertionError as exc:  # does not evaluate: reported as the error
            out[expr] = str(exc)
    return out


async def test_every_panel_and_rule_returns_series_under_a_real_workload(tmp_path: Path) -> None:
    binary = tool("prometheus")
    started = time.monotonic()
    config = _config(tmp_path)
    node = NodeProcess(config)
    prom = None
    try:
        node.wait_up(timeout=90)
        metrics_url, nats_url = node.metrics_url, node.url
        target = metrics_url.removeprefix("http://").removesuffix("/metrics")
        prom = Prometheus(binary, tmp_path / "prometheus", target)
        await asyncio.to_thread(prom.wait_ready)
        await _until(lambda: prom.query('up{job="foundation"} == 1'), 30, "Prometheus' first scrape of the node")

        await _workload(nats_url, config, metrics_url)

        await _until(lambda: all(prom.query(e) for e in SEEN), 120, "the workload in Prometheus",
                     lambda: {e: prom.query(re.split(" [>=]= ", e)[0]) for e in SEEN if not prom.query(e)})
        panels = panel_queries()
        rules = prom.rules()
        assert {r["name"] for r in rules if r["type"] == "alerting"} >= MUST_FIRE
        recorded = [r["query"] for r in rules if r["type"] == "recording"]

        def complete() -> bool:
            counts = _series(prom, [q.expr for q in panels] + recorded)
            return all(isinstance(n, int) and n > 0 for n in counts.values()) and MUST_FIRE <= prom.firing()

        def missing() -> object:
            counts = _series(prom, [q.expr for q in panels] + recorded)
            return {"empty": [e for e, n in counts.items() if n == 0 or isinstance(n, str)],
                    "not firing": sorted(MUST_FIRE - prom.firing())}

        await _until(complete, 120, "every panel and recording rule to return series", missing)
        assert await asyncio.to_thread(_inventory, metrics_url) == INVENTORY
        alerts = {r["name"]: r["query"] for r in rules if r["type"] == "alerting"}
        for name, expr in alerts.items():
            prom.query(expr)  # evaluates (raises with Prometheus' error otherwise)
        counts = _series(prom, [q.expr for q in panels])
        lines = [f"{q.dashboard:<13} {q.title:<34} {counts[q.expr]:>4}" for q in panels]
        lines += [f"{'rule':<13} {r['name'][:34]:<34} {len(prom.query(r['query'])):>4}" for r in rules]
        lines.append(f"alerts firing: {', '.join(sorted(prom.firing()))}")
        lines.append(f"check took {time.monotonic() - started:.0f}s")
        print("\n" + "\n".join(lines))
        (tmp_path / "series.txt").write_text("\n".join(lines) + "\n")
        if os.environ.get("FOUNDATION_PANEL_REPORT"):
            Path(os.environ["FOUNDATION_PANEL_REPORT"]).write_text("\n".join(lines) + "\n")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- the node's last output ---\n{node.tail(120)}") from None
    finally:
        if prom is not None:
            prom.stop()
        code = node.stop()
        assert code == 0, f"the node exited with {code}; its last output:\n{node.tail(120)}"


async def _until(check, timeout: float, what: str, explain=None) -> None:
    """Poll Prometheus (an external process: no event to wait on) until ``check()`` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(check):
            return
        if time.monotonic() > deadline:
            detail = await asyncio.to_thread(explain) if explain else ""
            raise AssertionError(f"no {what} within {timeout:g}s: {json.dumps(detail, indent=1, default=str)}")
        await asyncio.sleep(0.5)
