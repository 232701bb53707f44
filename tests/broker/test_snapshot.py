"""current_values: what a bucket holds now, read through a watcher, against a real server."""

from __future__ import annotations

from broker import current_values, jetstream, key_value


async def test_live_values_only_with_their_revisions(nc) -> None:
    js = jetstream(nc)
    kv = await key_value(js, "snap")
    assert await current_values(js, kv, "snap") == {}
    first = await kv.put("a.x", b"1")
    await kv.put("a.y", b"2")
    await kv.put("b.z", b"3")
    await kv.delete("a.y")
    assert await current_values(js, kv, "snap", "a.*") == {"a.x": (b"1", first)}
    # A pattern under which only a delete marker stands is empty, not a time-out.
    assert await current_values(js, kv, "snap", "a.y", timeout=2.0) == {}


async def test_every_key_in_every_read(nc) -> None:
    # The watcher's "caught up" marker may come before values the server has
    # already sent; each read must still hold every key.
    js = jetstream(nc)
    kv = await key_value(js, "snap")
    keys = {f"k{i}" for i in range(20)}
    for key in keys:
        await kv.put(key, key.encode())
    for _ in range(40):
        assert set(await current_values(js, kv, "snap")) == keys
