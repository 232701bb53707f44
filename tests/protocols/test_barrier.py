from __future__ import annotations

import asyncio

import pytest

from broker import codec, jetstream
from protocols.barrier import (
    Barrier,
    BarrierError,
    BarrierTimeoutError,
    Passage,
    open_barrier_bucket,
)


@pytest.fixture
async def kv(nc):
    return await open_barrier_bucket(jetstream(nc))


async def test_parties_pass_together_for_several_generations(kv) -> None:
    parties, generations = 5, 4
    events: list[tuple[str, int, str]] = []  # one event loop: list order is causal order

    async def party(name: str) -> list[Passage]:
        barrier = Barrier(kv, "sync", parties, party=name)
        passed = []
        for g in range(generations):
            events.append(("arrive", g, name))
            passage = await barrier.wait(timeout=10.0)
            events.append(("pass", passage.generation, name))
            passed.append(passage)
        return passed

    results = await asyncio.gather(*(party(f"p{i}") for i in range(parties)))
    for passed in results:
        assert [p.generation for p in passed] == list(range(generations))
    for g in range(generations):
        arrivals = [i for i, e in enumerate(events) if e[:2] == ("arrive", g)]
        passes = [i for i, e in enumerate(events) if e[:2] == ("pass", g)]
        assert len(arrivals) == len(passes) == parties
        assert max(arrivals) < min(passes), f"someone passed generation {g} before all arrived"
        indexes = sorted(passed[g].index for passed in results)
        assert indexes == list(range(parties))  # one last arriver released each generation


async def test_a_party_that_never_arrives_times_everyone_out(kv) -> None:
    waiting = [Barrier(kv, "sync", 3, party=p) for p in ("a", "b")]
    outcomes = await asyncio.gather(*(b.wait(timeout=0.5) for b in waiting), return_exceptions=True)
    assert all(isinstance(o, BarrierTimeoutError) for o in outcomes), outcomes
    assert "not all 3 parties arrived within 0.5s" in str(outcomes[0])
    record = codec.decode((await kv.get("sync")).value)
    assert record["arrived"] == [] and record["generation"] == 0  # both withdrew
    # The barrier is still usable: a full set of parties passes generation 0.
    everyone = [Barrier(kv, "sync", 3, party=p) for p in ("a", "b", "c")]
    passed = await asyncio.gather(*(b.wait(timeout=10.0) for b in everyone))
    assert {p.generation for p in passed} == {0}


async def test_inconsistent_use_is_refused(kv) -> None:
    first = Barrier(kv, "sync", 2, party="a")
    pending = asyncio.create_task(first.wait(timeout=10.0))
    record = await _arrived(kv, "sync", ["a"])
    assert record["parties"] == 2
    with pytest.raises(BarrierError, match="has 2 parties but this party expects 3"):
        await Barrier(kv, "sync", 3, party="b").wait(timeout=1.0)
    with pytest.raises(BarrierError, match="already waits"):
        await Barrier(kv, "sync", 2, party="a").wait(timeout=1.0)
    assert (await Barrier(kv, "sync", 2, party="b").wait(timeout=1.0)) == Passage(0, 1)
    assert await asyncio.wait_for(pending, 5.0) == Passage(0, 0)
    with pytest.raises(BarrierError, match="at least 1 party"):
        Barrier(kv, "x", 0)


async def _arrived(kv, key: str, parties: list[str]) -> dict:
    """Wait (on a KV watch) until exactly ``parties`` have arrived."""
    watcher = await kv.watch(key)
    try:
        while True:
            entry = await watcher.updates(5.0)
            if entry is not None and entry.value:
                record = codec.decode(entry.value)
                if record["arrived"] == parties:
                    return record
    finally:
        await watcher.stop()
