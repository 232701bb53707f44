"""Byzantine agreement latency on a local embedded nats-server: p50 and p99 of

* one decision (``Participant.decide`` returning with its certificate) for
  n = 4, 7 and 10 members, every member on its own NATS connection, all in
  this process (so their signature work shares one core); reported per
  member and for the whole group (the last member to decide);
* the baseline: the same three all-to-all message exchanges Tendermint needs
  on its happy path (proposal, prevote, precommit), unsigned and without any
  protocol logic, over the same connections, measured in the same run;
* Ed25519 signing and verification of a prevote, on their own, and the
  signature work one member does per decision.

Target (issue 7): n = 4 at p50 under 20 ms.

    .venv/bin/python bench/bft.py [--decisions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._stats import p50_p99_ms, row  # noqa: E402
from broker import EmbeddedServer, ServerOptions, connect  # noqa: E402
from protocols.bft import Message, Participant, Signer, StaticKeyDirectory, digest, new_seed  # noqa: E402
from protocols.bft import keys as bft_keys  # noqa: E402
from protocols.bft.messages import PREVOTE  # noqa: E402

SIZES = (4, 7, 10)
TARGET_N4_P50_MS = 20.0


def _crypto(iterations: int = 2000) -> tuple[float, float]:
    """Microseconds to sign and to verify one prevote."""
    signer = Signer("p0", new_seed())
    body = Message(kind=PREVOTE, group="bench", instance="1", round=0, sender="p0", digest=digest("v"))
    data = body.signing_bytes()
    began = time.perf_counter()
    for _ in range(iterations):
        sig = signer.sign(data)
    sign_us = (time.perf_counter() - began) / iterations * 1e6
    began = time.perf_counter()
    for _ in range(iterations):
        assert bft_keys.verify(signer.public_key, data, sig)
    return sign_us, (time.perf_counter() - began) / iterations * 1e6


async def _baseline(conns: list, rounds: int) -> list[float]:
    """Three unsigned all-to-all exchanges: each member answers a phase once it heard from everyone."""
    n = len(conns)
    samples = []
    for r in range(rounds):
        done = asyncio.get_running_loop().create_future()
        heard = [[0, 0, 0] for _ in range(n)]
        finished = [0]

        def handler(i: int, phase: int):
            async def on(msg) -> None:
                heard[i][phase] += 1
                if heard[i][phase] == n:
                    if phase < 2:
                        await conns[i].publish(f"bench.base.{r}.{phase + 1}", b"x" * 200)
                    else:
                        finished[0] += 1
                        if finished[0] == n and not done.done():
                            done.set_result(None)
            return on

        subs = [await conns[i].subscribe(f"bench.base.{r}.{p}", cb=handler(i, p)) for i in range(n) for p in range(3)]
        for nc in conns:
            await nc.flush()
        began = time.perf_counter()
        for nc in conns:
            await nc.publish(f"bench.base.{r}.0", b"x" * 200)
        await asyncio.wait_for(done, 10)
        samples.append(time.perf_counter() - began)
        for sub in subs:
            await sub.unsubscribe()
    return samples


async def _decisions(parts: list[Participant], count: int, warmup: int) -> tuple[list[float], list[float]]:
    member, group = [], []
    for k in range(warmup + count):
        began = time.perf_counter()
        finished: list[float] = []

        async def one(p: Participant) -> None:
            await p.decide("bench", f"value-{p.id}-{k}", 10, instance=str(k))
            finished.append(time.perf_counter() - began)

        await asyncio.gather(*(one(p) for p in parts))
        if k >= warmup:
            member.extend(finished)
            group.append(max(finished))
    return member, group


async def _size(url: str, n: int, count: int) -> tuple[list[float], list[float], list[float]]:
    signers = [Signer(f"p{i}", new_seed()) for i in range(n)]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    conns = [await connect(url, name=f"bft-bench-{s.id}") for s in signers]
    # A short linger: the bench runs hundreds of instances back to back.
    parts = [Participant(nc, s, directory, linger=1.0) for nc, s in zip(conns, signers)]
    try:
        base = await _baseline(conns, max(20, count // 2))
        member, group = await _decisions(parts, count, warmup=10)
    finally:
        for p in parts:
            await p.close()
        for nc in conns:
            await nc.close()
    return member, group, base


async def _main(url: str, count: int) -> dict[int, tuple[list[float], list[float], list[float]]]:
    return {n: await _size(url, n, count) for n in SIZES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200, help="decisions measured per group size")
    args = parser.parse_args(argv)

    sign_us, verify_us = _crypto()
    print("Byzantine agreement (Tendermint, Ed25519 via nkeys) on a local nats-server")
    print(f"  Ed25519 sign   {sign_us:7.1f} us per prevote")
    print(f"  Ed25519 verify {verify_us:7.1f} us per prevote")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(ServerOptions(store_dir=Path(tmp))) as server:
        results = asyncio.run(_main(server.url, args.decisions))
    for n, (member, group, base) in results.items():
        f = (n - 1) // 3
        # Happy path per member: sign prevote, precommit, decision (+ proposal
        # for the leader); verify the proposal, n - 1 prevotes, n - 1 precommits.
        signs, verifies = 3, 1 + 2 * (n - 1)
        crypto_ms = (signs * sign_us + verifies * verify_us) / 1000
        print(f"n = {n} (f = {f}, quorum = {n - f}), {args.decisions} decisions")
        print(row("decision, per member", member, base, width=30))
        print(row("decision, whole group", group, base, width=30))
        print(row("baseline: 3 all-to-all", base, width=30))
        print(f"  signature work per member      {crypto_ms:8.2f} ms  ({signs} signs, {verifies} verifies)"
              f"; x{n} members on one core: {crypto_ms * n:.2f} ms")
    p50_n4, _ = p50_p99_ms(results[4][0])
    verdict = "met" if p50_n4 < TARGET_N4_P50_MS else "NOT met"
    print(f"target n = 4 p50 < {TARGET_N4_P50_MS:.0f} ms: {p50_n4:.2f} ms, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
