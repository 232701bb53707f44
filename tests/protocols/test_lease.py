from __future__ import annotations

import asyncio

import pytest

from broker import codec, jetstream
from protocols.lease import (
    Lease,
    LeaseError,
    LeaseLostError,
    LeaseTimeoutError,
    open_lease_bucket,
    read_lease,
)


@pytest.fixture
async def kv(nc):
    return await open_lease_bucket(jetstream(nc))


async def test_grant_is_exclusive_and_terms_increase(kv) -> None:
    a = Lease(kv, "job", "a", ttl=2.0)
    b = Lease(kv, "job", "b", ttl=2.0)
    assert await a.try_acquire() == 1
    assert a.held
    assert await b.try_acquire() is None
    record = await read_lease(kv, "job")
    assert (record.holder, record.term) == ("a", 1)
    await a.release()
    assert not a.held
    freed = await read_lease(kv, "job")
    assert freed.free and freed.term == 1  # the term survives the release
    assert await b.try_acquire() == 2
    await b.release()
    assert await a.try_acquire() == 3
    await a.release()


async def test_acquire_wakes_on_release(kv) -> None:
    a = Lease(kv, "job", "a", ttl=5.0)
    b = Lease(kv, "job", "b", ttl=5.0)
    await a.acquire()
    waiting = asyncio.create_task(b.acquire(timeout=4.0))
    # b is parked on the watch; the release alone must wake it, long before a's ttl.
    await asyncio.wait_for(_until(lambda: b._seen is not None), 2.0)
    assert not waiting.done()
    started = asyncio.get_running_loop().time()
    await a.release()
    assert await asyncio.wait_for(waiting, 2.0) == 2
    assert asyncio.get_running_loop().time() - started < 1.0
    await b.release()


async def test_holder_loses_belief_before_takeover(kv) -> None:
    loop = asyncio.get_running_loop()
    # A holder that never renews behaves like a paused or partitioned one.
    stuck = Lease(kv, "job", "stuck", ttl=1.0, safety_margin=0.2, renew_every=1e9)
    rival = Lease(kv, "job", "rival", ttl=1.0)
    granted_at = loop.time()
    assert await stuck.try_acquire() == 1
    lost_at: list[float] = []
    watch = asyncio.create_task(stuck.lost.wait())
    watch.add_done_callback(lambda _: lost_at.append(loop.time()))
    assert await rival.acquire(timeout=5.0) == 2
    taken_at = loop.time()
    assert lost_at, "the stuck holder must have given up before the takeover"
    assert lost_at[0] < taken_at
    assert not stuck.held
    assert 0.95 <= taken_at - granted_at < 3.0  # one ttl after the last renewal, not sooner
    with pytest.raises(LeaseLostError):
        await stuck.renew()
    await rival.release()


async def test_renewals_keep_the_lease(kv) -> None:
    holder = Lease(kv, "job", "holder", ttl=0.5)
    rival = Lease(kv, "job", "rival", ttl=0.5)
    async with holder as term:
        assert term == 1
        with pytest.raises(LeaseTimeoutError, match="not granted within"):
            await rival.acquire(timeout=1.2)  # more than two ttls
        assert holder.held and not holder.lost.is_set()
        assert (await read_lease(kv, "job")).holder == "holder"
    assert (await read_lease(kv, "job")).free


async def test_renewal_that_finds_another_owner_is_lost(kv) -> None:
    holder = Lease(kv, "job", "holder", ttl=5.0)
    await holder.acquire()
    # An operator overwriting the record by hand: the holder must notice.
    await kv.put("job", codec.encode({"v": 1, "holder": "x", "owner": "x", "term": 7, "ttl": 5.0}))
    with pytest.raises(LeaseLostError, match="taken over"):
        await holder.renew()
    assert holder.lost.is_set() and not holder.held
    await holder.release()
    assert (await read_lease(kv, "job")).holder == "x"  # release left the other grant alone


async def test_same_holder_name_in_two_objects_is_two_holders(kv) -> None:
    first = Lease(kv, "job", "pool.0", ttl=5.0)
    respawned = Lease(kv, "job", "pool.0", ttl=5.0)
    await first.acquire()
    assert await respawned.try_acquire() is None
    await first.release()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(LeaseError, match="ttl must be in"):
        Lease(None, "x", "h", ttl=0)  # type: ignore[arg-type]
    with pytest.raises(LeaseError, match="safety_margin must be in"):
        Lease(None, "x", "h", ttl=1.0, safety_margin=1.0)  # type: ignore[arg-type]
    with pytest.raises(LeaseError, match="is not a KV key"):
        Lease(None, "a b", "h", ttl=1.0)  # type: ignore[arg-type]


async def _until(cond) -> None:
    # Polling a private condition: there is no event for "the waiter is parked".
    while not cond():
        await asyncio.sleep(0.005)
