"""Handlers of the Prometheus check's workload: tasks that succeed, fail or kill
their worker, and one task that runs every coordination protocol inside the node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import Any

from broker import connect, jetstream
from protocols import consensus
from protocols.barrier import Barrier, open_barrier_bucket
from protocols.bft import Participant, Signer, StaticKeyDirectory, new_seed, proposer
from protocols.election import Election
from protocols.lease import open_lease_bucket
from protocols.lock import lock
from protocols.market import Bid, combinatorial_auction, first_price, gsp, vickrey
from protocols.registry import open_registry


def work(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """``fail``: ``always`` raises on every attempt, ``first`` only on the first;
    ``exit``: the worker dies (``os._exit``) on every attempt; otherwise echoes."""
    if payload.get("exit"):
        os._exit(13)
    if payload.get("fail") == "always" or (payload.get("fail") == "first" and ctx.attempt == 1):
        raise RuntimeError(f"failing on attempt {ctx.attempt} as asked")
    time.sleep(0.002)
    return payload


async def coordinate(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """One round of each protocol, run in this worker: a vote among the pools
    with ``vote:obs``, a Byzantine decision of four members (one silent, so
    the others change rounds), an election, a lock, a barrier, and four
    sealed-bid auctions."""
    nc = await connect(payload["nats"], name=f"coordinate {ctx.worker}")
    out: dict[str, Any] = {}
    try:
        js = jetstream(nc)
        async with open_registry(nc) as registry:
            decision = await consensus.propose(
                nc, "obs", {"amount": 5}, capability="vote:obs", finder=consensus.registry_finder(registry),
                deadline=10.0, proposer=ctx.worker,
            )
        out["vote"] = decision.outcome
        out["bft"] = await _bft(payload["nats"])
        leases = await open_lease_bucket(js)
        election = Election(leases, "obs", ctx.worker, ttl=5.0)
        out["term"] = await election.campaign(10.0)
        await election.resign()
        async with lock(leases, "obs", timeout=10.0) as held:
            out["lock"] = held.token
        out["barrier"] = (await Barrier(await open_barrier_bucket(js), "obs", 1).wait(10.0)).generation
        bids = [Bid("a", 3.0), Bid("b", 5.0), Bid("c", 4.0)]
        out["auctions"] = [
            first_price(bids).awards[0].bidder,
            vickrey(bids).awards[0].payment,
            len(gsp(bids, slots=2).awards),
            len(combinatorial_auction([Bid("a", 3.0, {"x"}), Bid("b", 4.0, {"x", "y"})], items=["x", "y"]).awards),
        ]
    finally:
        await nc.close()
    return out


async def _bft(url: str) -> Any:
    signers = [Signer(name, new_seed()) for name in ("a", "b", "c", "d")]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    conns = [await connect(url, name=f"bft {s.id}") for s in signers]
    members = [Participant(c, s, directory, rebroadcast_interval=0.05) for c, s in zip(conns, signers)]
    instance = uuid.uuid4().hex[:12]
    # The first round's proposer stays silent: the other three (2f+1) time
    # out, change round and decide without it.
    silent = proposer([s.id for s in signers], "obs", instance, 0)
    try:
        for m in members:
            m.paused = m.id == silent
        decided = await asyncio.gather(
            *(m.decide("obs", {"by": m.id}, timeout=20.0, instance=instance) for m in members if not m.paused)
        )
        return decided[0][0]
    finally:
        for m in members:
            await m.close()
        for c in conns:
            with contextlib.suppress(Exception):
                await c.close()
