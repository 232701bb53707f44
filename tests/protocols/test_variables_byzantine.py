"""Shared-variable changes gated by Byzantine agreement, on a real nats-server.

Four members (n = 4, f = 1), each with its own connection, registry and
participant; keys are advertised in, and resolved from, the registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from broker import codec, connect, jetstream
from protocols.bft import (
    CertificateError,
    Participant,
    RegistryKeyDirectory,
    Signer,
    StaticKeyDirectory,
    canonical,
    digest,
    key_metadata,
    new_seed,
    proposer,
    verify_certificate,
)
from protocols.bft.messages import from_wire
from protocols.registry import Entry, Registry, open_registry
from protocols.variables import (
    VARIABLES_GROUP,
    ByzantineApproval,
    ByzantineStakeholder,
    ChangeRejectedError,
    ChangeRequest,
    ChoiceVar,
    FloatVar,
    ParameterSpace,
    VariableStore,
    VariableView,
    change_instance,
    open_variables_bucket,
    verify_change,
)

IDS = ["tuner.0", "tuner.1", "tuner.2", "tuner.3"]
SPACE = ParameterSpace([FloatVar("lr", 0.01, 1e-5, 1.0, log=True), ChoiceVar("optimizer", "adam", ("adam", "sgd"))])
# A proposer with a stale, wider definition: its own validation lets 5.0 through, the members' does not.
WIDE = ParameterSpace([FloatVar("lr", 0.01, 1e-5, 10.0, log=True), ChoiceVar("optimizer", "adam", ("adam", "sgd"))])


@dataclass
class Group:
    signers: dict[str, Signer]
    stakeholders: dict[str, ByzantineStakeholder] = field(default_factory=dict)
    registry: Registry | None = None  # the proposer's

    def keys(self) -> dict[str, str]:
        return {pid: s.public_key for pid, s in self.signers.items()}


@contextlib.asynccontextmanager
async def _group(nats_url: str, nc, *, running: list[str] = IDS) -> AsyncIterator[Group]:
    """Every member registers its key; only those in ``running`` take part (the others are silent)."""
    group = Group({pid: Signer(pid, new_seed()) for pid in IDS})
    async with contextlib.AsyncExitStack() as stack:
        registries = []
        for pid, signer in group.signers.items():
            conn = await connect(nats_url, name=pid)
            stack.push_async_callback(conn.close)
            registry = await stack.enter_async_context(open_registry(conn))
            registries.append(registry)
            await registry.register(Entry.new(
                pid, pool="tuner", node="n1", pid=os.getpid(), capabilities=["tuner"],
                metadata=key_metadata(signer.public_key, [VARIABLES_GROUP]),
            ))
            if pid in running:
                part = Participant(conn, signer, RegistryKeyDirectory(registry), rebroadcast_interval=0.05)
                stack.push_async_callback(part.close)
                group.stakeholders[pid] = await stack.enter_async_context(ByzantineStakeholder(part, SPACE))
        group.registry = await stack.enter_async_context(open_registry(nc))
        # n fixes the quorum: nobody starts before it sees the whole group.
        for registry in [*registries, group.registry]:
            await registry.wait_for(lambda cache: all(pid in cache for pid in IDS), 5.0)
        yield group


async def _store(nc, group: Group, space: ParameterSpace = SPACE, **kw) -> VariableStore:
    kv = await open_variables_bucket(jetstream(nc))
    store = VariableStore(kv, space, ByzantineApproval(nc, RegistryKeyDirectory(group.registry), **kw))
    await store.declare()
    return store


async def test_decided_change_is_applied_and_its_stored_certificate_verifies_in_a_fresh_check(nats_url, nc) -> None:
    async with _group(nats_url, nc) as group:
        store = await _store(nc, group)
        async with VariableView(store.kv, SPACE) as view:
            applied = await store.propose("lr", 0.5, proposer="ops", reason="warm up faster")
            assert (applied.version, applied.value) == (1, 0.5)
            assert applied.approval.startswith("Byzantine decision in variables/var-lr-v0, round 0")
            assert await view.wait_for("lr", lambda v: v == 0.5, 5.0) == 0.5
            # A fresh process: its own connection, keys from its own registry, its own read of the bucket.
            fresh = await connect(nats_url, name="auditor")
            try:
                async with open_registry(fresh) as registry:
                    keys = RegistryKeyDirectory(registry).members(VARIABLES_GROUP)
                kv = await open_variables_bucket(jetstream(fresh))
                gate = ByzantineApproval(fresh, StaticKeyDirectory(keys))
                stored = await VariableStore(kv, SPACE, gate).current("lr")
            finally:
                await fresh.close()
        assert {s.stats["decided"] for s in group.stakeholders.values()} == {1}
    assert keys == group.keys()
    cert = verify_change(stored, keys)
    assert (cert.group, cert.instance) == (VARIABLES_GROUP, change_instance("lr", 0))
    assert cert.value["value"] == 0.5 and cert.value["proposer"] == "ops" and cert.value["session"] == stored.session
    assert len({from_wire(p).sender for p in cert.precommits}) >= 3

    # The certificate proves this change only: not another value, version or group, nor under other keys.
    with pytest.raises(CertificateError, match="not the stored change"):
        verify_change(dataclasses.replace(stored, value=0.9), group.keys())
    with pytest.raises(CertificateError, match="not variables/var-lr-v1"):
        verify_change(dataclasses.replace(stored, version=2), group.keys())
    with pytest.raises(CertificateError, match="not pricing/var-lr-v0"):
        verify_change(stored, group.keys(), group="pricing")
    with pytest.raises(CertificateError, match="does not verify"):
        verify_change(stored, {pid: Signer(pid, new_seed()).public_key for pid in IDS})
    with pytest.raises(CertificateError, match="carries no Byzantine certificate"):
        verify_change(dataclasses.replace(stored, evidence={}), group.keys())


async def test_out_of_bounds_change_is_refused_by_honest_members(nats_url, nc) -> None:
    async with _group(nats_url, nc) as group:
        store = await _store(nc, group, WIDE)
        refused = r"members of 'variables' refused lr=5.0: .*above its upper bound"
        with pytest.raises(ChangeRejectedError, match=refused):
            await store.propose("lr", 5.0, proposer="stale")
        assert await store.get("lr") == 0.01
        assert [c.version for c in await store.history("lr")] == [0]
        assert sum(s.stats["refused"] for s in group.stakeholders.values()) >= 2
        assert sum(s.stats["decided"] for s in group.stakeholders.values()) == 0
        # The refusal left the version free: a valid change for it is decided next.
        assert (await store.propose("lr", 0.2)).version == 1


async def test_a_silent_member_does_not_stop_a_valid_change(nats_url, nc) -> None:
    # The silent member is the first round's proposer: the group must move to round 1 without it.
    silent = proposer(IDS, VARIABLES_GROUP, change_instance("optimizer", 0), 0)
    async with _group(nats_url, nc, running=[pid for pid in IDS if pid != silent]) as group:
        store = await _store(nc, group)
        applied = await store.propose("optimizer", "sgd")
        assert applied.value == "sgd"
        cert = verify_change(applied, group.keys())
        assert cert.round >= 1
        assert silent not in {from_wire(p).sender for p in cert.precommits}


async def test_without_a_quorum_running_a_valid_change_is_refused_at_the_deadline(nats_url, nc) -> None:
    async with _group(nats_url, nc, running=IDS[:2]) as group:  # 2 of 4 running; a quorum is 3
        store = await _store(nc, group, timeout=1.0)
        # Either the gate's deadline comes first, or both members' own (equal) deadlines do.
        reason = r"no Byzantine decision on lr=0.5 in variables/var-lr-v0 within 1s|2 of 4 .*DecisionTimeoutError"
        with pytest.raises(ChangeRejectedError, match=reason):
            await store.propose("lr", 0.5)
        assert await store.get("lr") == 0.01


async def test_two_changes_racing_for_one_version_cannot_both_pass(nats_url, nc) -> None:
    async with _group(nats_url, nc) as group:
        gate = ByzantineApproval(nc, RegistryKeyDirectory(group.registry))
        first = ChangeRequest("lr", 0.1, 0.01, 0, "alice", session="s-alice")
        second = ChangeRequest("lr", 0.2, 0.01, 0, "bob", session="s-bob")
        verdicts = await asyncio.gather(gate.approve(first), gate.approve(second))
        assert sorted(v.approved for v in verdicts) == [False, True]
        winner = verdicts.index(next(v for v in verdicts if v.approved))
        loser = verdicts[1 - winner]
        assert "decided another change for 'lr' version 0" in loser.reason
        assert [first, second][winner].proposer in loser.reason
        cert = verdicts[winner].evidence["bft"]["certificate"]
        assert verify_certificate(cert, group.keys())["session"] == [first, second][winner].session


async def test_lying_answers_are_ignored(nats_url, nc) -> None:
    """A Byzantine member answers with a certificate proving nothing, and forges honest members' refusals."""
    liar = "tuner.3"
    async with _group(nats_url, nc, running=IDS[:3]) as group:
        def answer(signer: Signer, request: dict, **fields) -> bytes:
            body = {"v": 1, "group": VARIABLES_GROUP, "instance": request["instance"], "member": signer.id, **fields}
            return codec.encode({**body, "sig": base64.b64encode(signer.sign(canonical(body))).decode()})

        async def lie(msg) -> None:
            request = codec.decode(msg.data)
            # Well formed, the right value and digest, signed by a member: but no precommits behind it.
            bogus = {"group": VARIABLES_GROUP, "instance": request["instance"], "round": 0,
                     "digest": digest(request["change"]), "value": request["change"], "precommits": []}
            await nc.publish(msg.reply, answer(group.signers[liar], request, ok=True, certificate=bogus))
            for name in ("tuner.0", "tuner.1"):  # f + 1 refusals, if they were believed
                impostor = Signer(name, new_seed())  # the right name, not the member's key
                await nc.publish(msg.reply, answer(impostor, request, ok=False, reason="forged"))

        sub = await nc.subscribe(f"coord.bft.{VARIABLES_GROUP}.*.request", cb=lie)
        await nc.flush()
        gate = ByzantineApproval(nc, RegistryKeyDirectory(group.registry))
        store = VariableStore(await open_variables_bucket(jetstream(nc)), SPACE, gate)
        await store.declare()
        applied = await store.propose("lr", 0.3)
        await sub.unsubscribe()
        assert applied.value == 0.3 and verify_change(applied, group.keys()).value["value"] == 0.3
        assert gate.ignored["bad-certificate"] >= 1 and gate.ignored["bad-signature"] >= 2

