"""Market benchmark: Contract Net rounds on a local nats-server, auctions and winner determination.

Prints p50/p99 of:

* a full Contract Net round (cfp, proposals, accept/reject to every bidder,
  inform-result) with 10 and 100 bidders, and — as the baseline, in the same
  run on the same server and connections — the bare message pattern of a
  round (1 broadcast, N replies, N answers, 1 result) with plain nats-py
  publishes and no protocol logic; the ratio is the protocol's overhead;
* a Vickrey sealed-bid auction of 10/100/1000 bids against sorting the same
  amounts (the least work any sealed-bid rule must do);
* combinatorial winner determination with 12 items at 10/20/40 bids: the exact
  branch and bound alone, the exact mechanism with VCG payments, and the LOS
  greedy mechanism with critical-value payments.

Target: a Contract Net round with 10 bidders under 20 ms (p50).

    .venv/bin/python bench/market.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._stats import p50_p99_ms  # noqa: E402
from broker import EmbeddedServer, ServerOptions, connect  # noqa: E402
from protocols.market import (  # noqa: E402
    Bid,
    CallForProposals,
    ContractNetInitiator,
    ContractNetParticipant,
    lehmann_greedy,
    load_price,
    solve_exact,
    vcg,
    vickrey,
)

TARGET_MS = 20.0
ITEMS = [f"i{k}" for k in range(12)]


def row(label: str, samples: list[float], baseline: list[float] | None = None, unit: str = "ms") -> str:
    scale = 1.0 if unit == "ms" else 1e3
    p50, p99 = p50_p99_ms(samples)
    text = f"  {label:<44} p50 {p50 * scale:9.3f} {unit}   p99 {p99 * scale:9.3f} {unit}"
    if baseline is not None:
        b50, b99 = p50_p99_ms(baseline)
        text += f"   | baseline p50 {b50 * scale:8.3f} p99 {b99 * scale:8.3f}   ratio p50 {p50 / b50:5.1f}x"
    return text


class _Bidder:
    """Prices from its cost and its participant's load, as a pool agent would."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.participant: ContractNetParticipant | None = None

    def bid(self, cfp: CallForProposals) -> dict[str, float]:
        load = self.participant.load if self.participant else 0
        return {"price": load_price(self.cost, load, 4), "cost": self.cost}

    async def perform(self, cfp: CallForProposals) -> Any:
        return {"done": cfp.task}


async def contract_net(url: str, bidders: int, rounds: int) -> tuple[list[float], list[float]]:
    """Timed Contract Net rounds and bare-pattern rounds with ``bidders`` participants."""
    initiator_nc = await connect(url, name="bench-initiator")
    conns = [await connect(url, name=f"bench-agents-{k}") for k in range(min(bidders, 10))]
    rng = random.Random(bidders)
    costs = {f"agent-{i:03d}": rng.uniform(5, 15) for i in range(bidders)}
    participants = []
    for i, (agent, cost) in enumerate(costs.items()):
        bidder = _Bidder(cost)
        part = ContractNetParticipant(conns[i % len(conns)], "bench", agent, bid=bidder.bid, perform=bidder.perform)
        bidder.participant = part
        await part.start()
        participants.append(part)
    initiator = ContractNetInitiator(initiator_nc, "bench", participants=list(costs), reply_within=2.0)
    cnp: list[float] = []
    for r in range(rounds + 10):
        start = time.perf_counter()
        await initiator.run({"round": r})
        if r >= 10:  # the first rounds warm up connections and caches
            cnp.append(time.perf_counter() - start)
    for part in participants:
        await part.stop()
    bare = await _bare_pattern(initiator_nc, conns, bidders, rounds)
    for nc in [initiator_nc, *conns]:
        await nc.close()
    return cnp, bare


async def _bare_pattern(initiator_nc: Any, conns: list[Any], bidders: int, rounds: int) -> list[float]:
    """The same messages as a round, without the protocol: the floor a round can reach."""
    replies: asyncio.Queue[Any] = asyncio.Queue()
    inbox = initiator_nc.new_inbox()
    await initiator_nc.subscribe(inbox, cb=replies.put)
    agent_inboxes = []
    for i in range(bidders):
        nc = conns[i % len(conns)]
        own = nc.new_inbox()
        agent_inboxes.append(own)

        async def on_broadcast(msg: Any, nc: Any = nc, own: str = own) -> None:
            await nc.publish(inbox, b'{"price": 1.0}', headers={"agent": own})

        async def on_answer(msg: Any, nc: Any = nc) -> None:
            if msg.data == b"accept":
                await nc.publish(inbox, b'{"result": 1}')

        await nc.subscribe("bench.bare.cfp", cb=on_broadcast)
        await nc.subscribe(own, cb=on_answer)
    for nc in conns:
        await nc.flush()
    samples = []
    for r in range(rounds + 10):
        start = time.perf_counter()
        await initiator_nc.publish("bench.bare.cfp", b'{"task": 1}')
        proposals = [await replies.get() for _ in range(bidders)]
        for k, msg in enumerate(proposals):
            await initiator_nc.publish(msg.headers["agent"], b"accept" if k == 0 else b"reject")
        await replies.get()
        if r >= 10:
            samples.append(time.perf_counter() - start)
    return samples


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def sealed_bid(rounds: int) -> list[str]:
    rng = random.Random(1)
    lines = []
    for n in (10, 100, 1000):
        bids = [Bid(f"b{i}", rng.uniform(0, 100)) for i in range(n)]
        amounts = [b.amount for b in bids]
        auction = timed(lambda: vickrey(bids, reserve=10.0), rounds)
        baseline = timed(lambda: sorted(amounts, reverse=True), rounds)
        lines.append(row(f"vickrey sealed-bid, {n} bids", auction, baseline, unit="us"))
    return lines


def _instance(rng: random.Random, n: int) -> list[Bid]:
    bids = []
    for j in range(n):
        size = rng.choice([1, 1, 2, 2, 3, 4])
        bids.append(Bid(f"b{j}", round(size * rng.uniform(1, 2), 2), rng.sample(ITEMS, size)))
    return bids


def combinatorial(instances: int) -> list[str]:
    rng = random.Random(2)
    lines = []
    for n in (10, 20, 40):
        cases = [_instance(rng, n) for _ in range(instances)]
        exact, mechanism, greedy = [], [], []
        for bids in cases:
            bundles, amounts = [b.items for b in bids], [b.amount for b in bids]
            exact += timed(lambda: solve_exact(bundles, amounts), 1)
            mechanism += timed(lambda: vcg(bids, items=ITEMS), 1)
            greedy += timed(lambda: lehmann_greedy(bids, items=ITEMS), 1)
        lines.append(row(f"{n} bids: exact WDP (branch and bound)", exact))
        lines.append(row(f"{n} bids: exact WDP + VCG payments", mechanism))
        lines.append(row(f"{n} bids: LOS greedy + critical payments", greedy))
    return lines


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(ServerOptions(store_dir=Path(tmp))) as server:
        print(f"market benchmark: embedded nats-server {server.url}, {rounds} timed rounds each")
        print("contract net round (cfp, N proposals, N accept/reject, inform-result);")
        print("  baseline: the same messages as bare nats-py publishes, no protocol logic")
        verdict = ""
        for bidders in (10, 100):
            cnp, bare = await contract_net(server.url, bidders, rounds)
            print(row(f"contract net, {bidders} bidders", cnp, bare))
            if bidders == 10:
                p50 = p50_p99_ms(cnp)[0]
                status = "met" if p50 < TARGET_MS else "MISSED"
                verdict = f"target p50 < {TARGET_MS:.0f} ms with 10 bidders: {status} ({p50:.2f} ms)"
        print(verdict)
    print("sealed-bid auction; baseline: sorting the amounts")
    print("\n".join(sealed_bid(rounds)))
    print(f"combinatorial winner determination, {len(ITEMS)} items, {min(rounds, 100)} random instances each")
    print("\n".join(combinatorial(min(rounds, 100))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds per measurement")
    asyncio.run(main(parser.parse_args().rounds))
