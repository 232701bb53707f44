from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from broker import connect, jetstream
from protocols.consensus import Ballot
from protocols.variables import (
    AllOf,
    BoolVar,
    ChangeRejectedError,
    ChoiceVar,
    ConsensusApproval,
    FloatVar,
    IntVar,
    ParameterSpace,
    VariableConflictError,
    VariableStore,
    VariableValidationError,
    VariableView,
    Verdict,
    load_space,
    open_variables_bucket,
    stakeholder,
)

ROOT = Path(__file__).resolve().parents[2]

SPACE = ParameterSpace([
    FloatVar("lr", 0.01, 1e-5, 1.0, log=True),
    IntVar("batch", 32, 1, 1024, log=True),
    ChoiceVar("optimizer", "adam", ("adam", "sgd")),
    BoolVar("shuffle", True),
])


class Counting:
    """A stub gate (an Approval twin): approves or refuses, counting calls."""

    def __init__(self, approve: bool = True, reason: str = "stub") -> None:
        self.calls: list = []
        self._verdict = Verdict(approve, reason)

    async def approve(self, change) -> Verdict:
        self.calls.append(change)
        return self._verdict


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lr", 2.0, r"variable 'lr': 2.0 is above its upper bound; propose a value in \[1e-05, 1.0\]"),
        ("lr", 0.0, "below its lower bound"),
        ("lr", "0.1", "variable 'lr' is float; got str '0.1'"),
        ("lr", True, "variable 'lr' is float; got bool True"),
        ("lr", math.nan, "must be a finite number"),
        ("batch", 2.5, "variable 'batch' is int; got float 2.5 with a fraction"),
        ("batch", 0, "below its lower bound"),
        ("optimizer", "rmsprop", r"'rmsprop' is not one of \['adam', 'sgd'\]"),
        ("shuffle", 1, "variable 'shuffle' is bool; got int 1"),
        ("momentum", 0.9, "unknown variable 'momentum'; known variables: batch, lr, optimizer, shuffle"),
    ],
)
def test_bad_values_are_refused_clearly(name, value, message) -> None:
    with pytest.raises(VariableValidationError, match=message):
        SPACE.validate(name, value)


def test_space_definitions_and_scales() -> None:
    assert SPACE.validate("batch", 64.0) == 64 and isinstance(SPACE.validate("batch", 64.0), int)
    assert SPACE.validate("lr", 1) == 1.0
    lr = SPACE["lr"]
    assert lr.to_unit(1e-5) == 0.0 and lr.to_unit(1.0) == 1.0
    assert math.isclose(lr.to_unit(1e-3), 0.4)  # log scale: 2 decades of 5
    assert math.isclose(lr.from_unit(0.4), 1e-3)
    assert SPACE["batch"].from_unit(0.5) == 32
    assert ParameterSpace.from_dict(SPACE.to_dict()).to_dict() == SPACE.to_dict()
    with pytest.raises(VariableValidationError, match="a log scale needs low > 0"):
        FloatVar("x", 1.0, 0.0, 2.0, log=True)
    with pytest.raises(VariableValidationError, match="unknown kind 'complex'"):
        ParameterSpace.from_dict({"x": {"type": "complex", "default": 1}})
    with pytest.raises(VariableValidationError, match="3 is above its upper bound"):
        IntVar("x", 3, 0, 2)


async def test_invalid_proposal_never_reaches_the_gate(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    gate = Counting()
    store = VariableStore(kv, SPACE, gate)
    await store.declare()
    with pytest.raises(VariableValidationError, match="above its upper bound"):
        await store.propose("lr", 5.0)
    assert gate.calls == [] and await store.get("lr") == 0.01


async def test_change_accepted_by_stakeholders_is_applied_with_history(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    cautious = stakeholder(nc, SPACE, "cautious", check=lambda change: change.value <= 0.1)
    voters = [stakeholder(nc, SPACE, "s1"), stakeholder(nc, SPACE, "s2"), cautious]
    for v in voters:
        await v.start()
    store = VariableStore(kv, SPACE, ConsensusApproval(nc, stakeholders=["s1", "s2", "cautious"], deadline=5.0))
    await store.declare()
    async with VariableView(kv, SPACE) as view:
        assert view["lr"] == 0.01
        applied = await store.propose("lr", 0.5, proposer="ops", reason="warm up faster")
        assert applied.version == 1 and applied.value == 0.5
        assert "consensus accepted" in applied.approval
        decision = applied.evidence["consensus"]
        assert decision["yes"] == ["s1", "s2"]  # the cautious stakeholder's check said no
        assert await view.wait_for("lr", lambda v: v == 0.5, 5.0) == 0.5
        assert view.version("lr") == 1
    history = await store.history("lr")
    assert [(c.version, c.value, c.proposer) for c in history] == [(0, 0.01, "declare"), (1, 0.5, "ops")]
    assert sorted((await load_space(kv)).to_dict()) == ["batch", "lr", "optimizer", "shuffle"]
    for v in voters:
        await v.stop()


async def test_change_refused_by_stakeholders_is_not_applied(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    voters = [stakeholder(nc, SPACE, f"s{i}", check=lambda c: Ballot("no", "too risky")) for i in range(3)]
    for v in voters:
        await v.start()
    store = VariableStore(kv, SPACE, ConsensusApproval(nc, stakeholders=["s0", "s1", "s2"], deadline=5.0))
    await store.declare()
    with pytest.raises(ChangeRejectedError, match="consensus rejected: yes 0 of 3; no: .*too risky") as caught:
        await store.propose("optimizer", "sgd")
    assert not caught.value.verdict.approved
    assert await store.get("optimizer") == "adam"
    for v in voters:
        await v.stop()


async def test_stakeholders_vote_no_on_values_outside_their_own_space(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    narrow = ParameterSpace([FloatVar("lr", 0.01, 1e-5, 0.1, log=True)])
    voters = [stakeholder(nc, narrow, "n1"), stakeholder(nc, narrow, "n2"), stakeholder(nc, SPACE, "wide")]
    for v in voters:
        await v.start()
    store = VariableStore(kv, SPACE, ConsensusApproval(nc, stakeholders=["n1", "n2", "wide"], deadline=5.0))
    with pytest.raises(ChangeRejectedError, match=r"n1 \(variable 'lr': 0.5 is above its upper bound"):
        await store.propose("lr", 0.5)
    for v in voters:
        await v.stop()


async def test_an_extra_gate_can_veto_an_accepted_change(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    async with stakeholder(nc, SPACE, "s1"):
        veto = Counting(approve=False, reason="byzantine agreement refused")
        gate = AllOf(ConsensusApproval(nc, stakeholders=["s1"], deadline=5.0), veto)
        store = VariableStore(kv, SPACE, gate)
        await store.declare()
        with pytest.raises(ChangeRejectedError, match="byzantine agreement refused"):
            await store.propose("shuffle", False)
        assert len(veto.calls) == 1 and await store.get("shuffle") is True


async def test_concurrent_approved_changes_cannot_both_apply(nc) -> None:
    kv = await open_variables_bucket(jetstream(nc))

    class Held:
        def __init__(self) -> None:
            self.entered = asyncio.Event()
            self.go = asyncio.Event()

        async def approve(self, change) -> Verdict:
            self.entered.set()
            await self.go.wait()
            return Verdict(True)

    first, second = Held(), Held()
    await VariableStore(kv, SPACE, first).declare()
    a = asyncio.create_task(VariableStore(kv, SPACE, first).propose("batch", 64))
    b = asyncio.create_task(VariableStore(kv, SPACE, second).propose("batch", 128))
    await asyncio.wait_for(asyncio.gather(first.entered.wait(), second.entered.wait()), 5.0)
    first.go.set()
    assert (await a).value == 64
    second.go.set()
    with pytest.raises(VariableConflictError, match="propose again"):
        await b
    assert await VariableStore(kv, SPACE, first).get("batch") == 64


async def test_accepted_change_reaches_every_watching_process(nc, nats_url) -> None:
    kv = await open_variables_bucket(jetstream(nc))
    store = VariableStore(kv, SPACE, Counting())
    await store.declare()
    watchers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.protocols.test_variables", nats_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for w in watchers:
            assert await asyncio.wait_for(w.stdout.readline(), 20.0) == b"ready 0.01\n"
        await store.propose("lr", 0.2)
        for w in watchers:
            assert await asyncio.wait_for(w.stdout.readline(), 10.0) == b"saw 0.2 version 1\n"
    finally:
        for w in watchers:
            if w.returncode is None:
                w.kill()
            await w.wait()


async def _watch(url: str) -> None:
    nc = await connect(url, name="watcher")
    kv = await open_variables_bucket(jetstream(nc))
    async with VariableView(kv, SPACE) as view:
        print(f"ready {view['lr']}", flush=True)
        value = await view.wait_for("lr", lambda v: v != 0.01)
        print(f"saw {value} version {view.version('lr')}", flush=True)


if __name__ == "__main__":
    asyncio.run(_watch(sys.argv[1]))
