"""Byzantine-guarded variable changes: authenticated requests, and refusals that cannot be replayed.

Four members (n = 4, f = 1) with static keys, on a real nats-server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from broker import codec, connect
from protocols.bft import Participant, Signer, StaticKeyDirectory, new_seed
from protocols.variables import ByzantineApproval, ByzantineStakeholder, ChangeRequest, FloatVar, ParameterSpace

IDS = ["m0", "m1", "m2", "m3"]
SPACE = ParameterSpace([FloatVar("lr", 0.01, 1e-5, 1.0, log=True)])
OPERATOR = Signer("operator", new_seed())


@contextlib.asynccontextmanager
async def members(nats_url: str, **kw) -> AsyncIterator[tuple[StaticKeyDirectory, list[ByzantineStakeholder]]]:
    signers = [Signer(pid, new_seed()) for pid in IDS]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    async with contextlib.AsyncExitStack() as stack:
        stakeholders = []
        for signer in signers:
            conn = await connect(nats_url, name=signer.id)
            stack.push_async_callback(conn.close)
            part = Participant(conn, signer, directory, rebroadcast_interval=0.05)
            stack.push_async_callback(part.close)
            stakeholders.append(await stack.enter_async_context(ByzantineStakeholder(part, SPACE, **kw)))
        yield directory, stakeholders


def change(value: float) -> ChangeRequest:
    return ChangeRequest(name="lr", value=value, previous=0.01, version=0, proposer="ops", session=f"s-{value}")


async def test_a_refusal_signed_for_an_earlier_request_is_not_counted(nats_url, nc) -> None:
    async with members(nats_url) as (directory, _):
        # Earlier: a request for lr=5 (out of bounds) is refused by every member, each answer signed.
        inbox = nc.new_inbox()
        old = await nc.subscribe(inbox)
        request = {"v": 1, "group": "variables", "instance": "var-lr-v0", "timeout": 5.0,
                   "change": change(5.0).to_dict(), "nonce": "earlier"}
        await nc.publish("coord.bft.variables.var-lr-v0.request", codec.encode(request), reply=inbox)
        refusals = [(await old.next_msg(timeout=10)).data for _ in IDS]
        assert all(not codec.decode(r)["ok"] and codec.decode(r)["nonce"] == "earlier" for r in refusals)

        # Now a valid change of the same instance; a replayer answers every request with those refusals.
        async def replay(msg) -> None:
            for data in refusals:
                await nc.publish(msg.reply, data)

        replayer = await nc.subscribe("coord.bft.variables.*.request", cb=replay)
        gate = ByzantineApproval(nc, directory, timeout=20.0)
        verdict = await gate.approve(change(0.5))
        await replayer.unsubscribe()
    assert verdict.approved, verdict.reason
    assert gate.ignored["other-request"] >= 2  # f + 1 replayed refusals would have refused it


async def test_only_requests_signed_by_a_known_proposer_are_taken_up(nats_url, nc) -> None:
    async with members(nats_url, proposers={OPERATOR.id: OPERATOR.public_key}) as (directory, stakeholders):
        unsigned = await ByzantineApproval(nc, directory, timeout=1.0).approve(change(0.5))
        impostor = Signer("operator", new_seed())  # the right name, another key
        forged = await ByzantineApproval(nc, directory, timeout=1.0, signer=impostor).approve(change(0.5))
        assert not unsigned.approved and not forged.approved
        assert all(s.stats["unauthenticated"] >= 2 and not s.stats["decided"] for s in stakeholders)
        signed = await ByzantineApproval(nc, directory, timeout=20.0, signer=OPERATOR).approve(change(0.5))
    assert signed.approved, signed.reason
