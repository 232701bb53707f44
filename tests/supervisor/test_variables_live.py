"""Shared variables and votes in a running node: the CLI proposes, the workers vote and see it live."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from broker import collect_results, jetstream, publish_task
from protocols.consensus import Quorum, registry_finder
from protocols.consensus import propose as consensus_propose
from protocols.registry import open_registry
from protocols.variables import VariableStore, load_space, open_variables_bucket
from supervisor.harness import write_config
from tests.supervisor.cluster import cli, start_node
from tests.supervisor.helpers import worker_pids

pytestmark = pytest.mark.timeout(120)

VARIABLES = {
    "variables.lr": {"kind": "float", "default": 0.01, "low": 0.0001, "high": 1.0, "log": True},
    "variables.mode": {"kind": "choice", "default": "fast", "choices": ["fast", "exact"]},
}
_ids = itertools.count()


async def values_seen(js: Any, name: str, want: Any, workers: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """Send rounds of tasks until every worker in ``workers`` answered with ``want``.

    Work-queue tasks cannot be addressed to one worker, so this polls in
    rounds (two tasks per round, each taking a moment, so both workers get
    some); a worker that never shows ``want`` fails the test. Returns the
    last result of each worker.
    """
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    async with collect_results(js, "v") as results:
        while not all(last.get(w, {}).get("value") == want for w in workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"not every worker saw {name} = {want!r} in {timeout}s; last seen: {last}")
            batch = {f"read-{next(_ids)}" for _ in range(2)}
            for task_id in batch:
                await publish_task(js, "v", {"name": name, "seconds": 0.1}, task_id=task_id)
            for body in (await results.wait_for(batch, timeout=15)).values():
                assert body["ok"], body
                last[body["worker"]] = body["result"]
    return last


async def test_a_proposal_from_the_cli_is_voted_by_the_workers_and_seen_live(tmp_path: Path, nats_url: str, nc) -> None:
    node = await start_node(tmp_path, "test", nats_url, {
        "v": {"handler": "tests.handlers:read_variable", "size": 2, "concurrency": 1, "capabilities": ["variables"]},
    }, **VARIABLES)
    js = jetstream(nc)
    try:
        pids = await worker_pids(nc, "v")
        listed = await cli("vars", "ls", "--url", nats_url)
        assert listed.returncode == 0, listed.stderr
        assert [line.split()[:3] for line in listed.stdout.splitlines()] == [
            ["NAME", "VALUE", "VERSION"], ["lr", "0.01", "0"], ["mode", '"fast"', "0"]]
        before = await values_seen(js, "lr", 0.01, {"v.0", "v.1"})
        assert all(seen["names"] == ["lr", "mode"] for seen in before.values())

        accepted = await cli("vars", "propose", "lr", "0.5", "--reason", "warm-up done", "--url", nats_url)
        assert (accepted.returncode, accepted.stdout) == (0, "lr = 0.5 (accepted)\n"), accepted.stderr
        kv = await open_variables_bucket(js)
        current = await VariableStore(kv, await load_space(kv), approval=None).current("lr")  # type: ignore[arg-type]
        assert (current.value, current.version, current.reason) == (0.5, 1, "warm-up done")
        assert current.evidence["consensus"]["yes"] == ["test.v.0", "test.v.1"]  # both workers voted

        after = await values_seen(js, "lr", 0.5, {"v.0", "v.1"})
        assert {w: seen["pid"] for w, seen in after.items()} == pids  # the same processes: no restart

        out_of_bounds = await cli("vars", "propose", "lr", "5", "--url", nats_url)
        assert out_of_bounds.returncode == 1
        assert out_of_bounds.stderr == (
            "foundation: rejected: variable 'lr': 5.0 is above its upper bound; propose a value in [0.0001, 1.0]\n"
        )
        wrong_type = await cli("vars", "propose", "mode", "3", "--url", nats_url)
        assert wrong_type.returncode == 1 and wrong_type.stderr.startswith("foundation: rejected: variable 'mode'")
        assert "3" in wrong_type.stderr and "fast" in wrong_type.stderr
        not_json = await cli("vars", "propose", "mode", "exact", "--url", nats_url)
        assert (not_json.returncode, not_json.stderr) == (
            1, "foundation: value must be JSON (quote strings: '\"exact\"')\n")
        unknown = await cli("vars", "propose", "momentum", "0.9", "--url", nats_url)
        assert unknown.returncode == 1 and "unknown variable 'momentum'; known variables: lr, mode" in unknown.stderr
        assert (await VariableStore(kv, await load_space(kv), approval=None).current("lr")).version == 1  # type: ignore[arg-type]

        history = await cli("vars", "get", "lr", "--url", nats_url)
        assert history.stdout.splitlines()[0] == "lr = 0.5"
        assert [line.split()[:2] for line in history.stdout.splitlines()[1:]] == [["v0:", "0.01"], ["v1:", "0.5"]]
    finally:
        assert node.stop() == 0


async def test_a_handler_answers_consensus_votes(tmp_path: Path, nats_url: str, nc) -> None:
    node = await start_node(tmp_path, "test", nats_url, {
        "judge": {"handler": "tests.handlers:judge", "size": 2, "capabilities": ["vote:budget"]},
    })
    try:
        async with open_registry(nc) as registry:
            finder = registry_finder(registry)

            # A round ends as soon as its outcome is certain. Majority of two needs both
            # yes votes; "at least one yes" is refused only once both said otherwise.
            # Either way every voter's ballot is counted.
            async def vote(value: dict[str, Any], quorum: Quorum | None = None):
                return await consensus_propose(nc, "budget", value, capability="vote:budget", finder=finder,
                                               quorum=quorum, deadline=10.0, proposer="test")

            any_yes = Quorum.at_least(1)
            yes = await vote({"amount": 50})
            assert (yes.outcome, yes.yes, yes.no, yes.unanswered) == ("accepted", ["test.judge.0", "test.judge.1"], [], [])
            no = await vote({"amount": 500}, any_yes)
            assert (no.outcome, no.no) == ("rejected", ["test.judge.0", "test.judge.1"])
            assert no.reasons == {f"test.judge.{n}": f"judge.{n} finds 500 too much (vote:budget)" for n in (0, 1)}
            abstained = await vote({"amount": 1, "abstain": True}, any_yes)
            assert (abstained.outcome, abstained.abstain, abstained.yes) == ("rejected", ["test.judge.0", "test.judge.1"], [])
            # A return value that is no ballot, or an exception, abstains, saying why.
            garbled = await vote({"amount": 1, "garble": True}, any_yes)
            assert garbled.outcome == "rejected" and garbled.abstain == ["test.judge.0", "test.judge.1"]
            assert all(r.startswith("error: ConsensusError(\"a vote handler returns") for r in garbled.reasons.values())
            failed = await vote({"amount": "lots"}, any_yes)
            assert failed.abstain == ["test.judge.0", "test.judge.1"]
            assert all(r.startswith("error: TypeError(") for r in failed.reasons.values()), failed.reasons
        # Votes do not disturb the pool's tasks.
        async with collect_results(jetstream(nc), "judge") as results:
            await publish_task(jetstream(nc), "judge", {"n": 1}, task_id="t1")
            assert (await results.wait_for({"t1"}, timeout=15))["t1"]["result"] == {"n": 1}
    finally:
        assert node.stop() == 0


async def test_an_invalid_variable_stops_foundation_up_with_exit_2(tmp_path: Path, nats_url: str) -> None:
    config = write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"v": {"handler": "tests.handlers:slow"}},
                          **{"variables.lr": {"kind": "float", "default": 5, "low": 0, "high": 1}})
    up = await cli("up", "--config", str(config))
    assert up.returncode == 2
    assert up.stderr.endswith(
        "foundation: config error: variables.lr: variable 'lr': 5.0 is above its upper bound; propose a value in [0, 1]\n"
    )
