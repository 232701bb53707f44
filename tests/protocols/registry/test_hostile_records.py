"""Records any client can write to the ``registry`` bucket: none may stop a watch, a start or a lookup."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import EmbeddedServer, ServerOptions, codec, connect, jetstream
from protocols.registry import (
    Entry,
    InvalidEntryError,
    KVBackend,
    Load,
    MemoryBackend,
    Registry,
    RegistrationTakenError,
    open_registry,
)
from protocols.registry.cache import MAX_REMOVED, RegistryCache
from protocols.registry.backend import Change, ChangeKind
from protocols.registry.kv import MAX_AGE

# What orjson can read from the bucket: integers within 64 bits.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _good() -> dict:
    return Entry.new("n.echo.0", pool="echo", node="n", pid=7, capabilities=["echo"]).to_dict()


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(_good())), value=json_values)
def test_any_field_value_parses_or_is_refused_by_name(field: str, value: object) -> None:
    data = _good() | {field: value}
    try:
        entry = Entry.from_dict(data)
    except InvalidEntryError:
        return
    # What parses is usable by every index and lookup of the cache.
    cache = RegistryCache()
    cache.apply(Change(ChangeKind.PUT, entry.id, entry, 1))
    assert cache.find(pool=entry.pool, node=entry.node) == [entry]
    assert Entry.from_json(entry.to_json()).to_json() == entry.to_json()  # metadata is free-form (NaN goes null)


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_any_json_document_parses_or_is_refused(data: object) -> None:
    try:
        Entry.from_dict(data)
    except InvalidEntryError:
        pass


@pytest.mark.parametrize(("field", "value", "match"), [
    ("node", ["a", "b"], "non-empty pool and node"),
    ("pool", {"x": 1}, "non-empty pool and node"),
    ("pid", True, "pid must be"),
    ("pid", 2**64, "pid must be"),
    ("capabilities", ["has space"], "without whitespace"),
    ("capabilities", "echo", "list of strings"),
    ("capabilities", [["nested"]], "malformed"),
    ("load", {"in_flight": "3"}, "load counts"),
    ("load", [1, 2], "load must be an object"),
    ("heartbeat_at", float("nan"), "finite"),
    ("started_at", "yesterday", "finite"),
])
def test_named_bad_fields_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(InvalidEntryError, match=match):
        Entry.from_dict(_good() | {field: value})


async def _raw_put(nc, key: str, data: bytes) -> None:
    # Written as any client could: a plain KV put, no TTL.
    kv = await jetstream(nc).key_value("registry")
    await kv.put(key, data)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_malformed_and_misnamed_records_are_skipped_and_logged(nats_url) -> None:
    nc = await connect(nats_url, name="hostile")
    seen = _Lines()
    logging.getLogger("foundation.registry").addHandler(seen)
    try:
        await KVBackend.open(nc)
        await _raw_put(nc, "n.bad.0", codec.encode(_good() | {"id": "n.bad.0", "node": ["x"]}))
        await _raw_put(nc, "n.other.0", codec.encode(_good()))  # its id is another key's
        await _raw_put(nc, "n.junk.0", b"\xff not json")
        async with open_registry(nc) as reg:
            assert reg.entries() == []
            good = Entry.new("n.echo.1", pool="echo", node="n", pid=8, capabilities=["echo"], status="ready")
            await reg.register(good)
            # A malformed record written live is skipped too, and the watch goes on.
            await _raw_put(nc, "n.late.0", codec.encode({"id": "n.late.0", "pool": 3}))
            other = Entry.new("n.echo.2", pool="echo", node="n", pid=9, capabilities=["echo"], status="ready")
            await _raw_put(nc, other.id, other.to_json())
            await reg.wait_for(lambda c: c.lookup("n.echo.2") is not None, 10)
            assert sorted(e.id for e in reg.find(capability="echo")) == ["n.echo.1", "n.echo.2"]
            assert [e.id for e in reg.least_loaded("echo", 2)] == ["n.echo.1", "n.echo.2"]
            assert reg.query([("pool", "eq", "echo")]) and reg.lookup("n.other.0") is None
        text = "\n".join(seen.lines)
        for key in ("n.bad.0", "n.other.0", "n.junk.0", "n.late.0"):
            assert f"key '{key}'" in text
    finally:
        logging.getLogger("foundation.registry").removeHandler(seen)
        await nc.close()


async def test_garbage_under_our_own_key_is_overwritten_on_register(nats_url) -> None:
    nc = await connect(nats_url, name="owner")
    try:
        backend = await KVBackend.open(nc)
        await _raw_put(nc, "n.echo.0", b"[1, 2, 3]")
        reg = Registry(backend)
        entry = Entry.new("n.echo.0", pool="echo", node="n", pid=7)
        await reg.register(entry)
        assert (await backend.get("n.echo.0"))[0] == entry
        await reg.close()
    finally:
        await nc.close()


async def test_bucket_has_a_max_age_so_entries_without_ttl_expire(nats_url) -> None:
    nc = await connect(nats_url, name="age")
    try:
        await KVBackend.open(nc)
        info = await jetstream(nc).stream_info("KV_registry")
        assert info.config.max_age == MAX_AGE
    finally:
        await nc.close()


async def test_a_squatted_id_from_another_node_is_refused_not_crashed(nats_url) -> None:
    nc = await connect(nats_url, name="squat")
    try:
        await KVBackend.open(nc)
        squat = Entry.new("n.echo.0", pool="echo", node="elsewhere", pid=1)
        await _raw_put(nc, squat.id, squat.to_json())
        async with open_registry(nc) as reg:
            with pytest.raises(RegistrationTakenError):
                await reg.register(Entry.new("n.echo.0", pool="echo", node="n", pid=7))
            assert not reg.owns("n.echo.0")
    finally:
        await nc.close()


class _FlakyBackend(MemoryBackend):
    """A memory backend whose watches can be made to fail, as a NATS outage would."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    async def watch(self):
        self.opened += 1
        return await super().watch()

    async def break_watches(self) -> None:
        for watch in list(self._watches):
            await watch.stop()


async def test_watch_restarts_after_it_ends_and_drops_what_went_away() -> None:
    backend = _FlakyBackend()
    async with open_registry(backend=backend) as reg:
        a = Entry.new("n.a.0", pool="a", node="n", pid=1)
        b = Entry.new("n.b.0", pool="b", node="n", pid=2)
        await backend.put(a, 30)
        await backend.put(b, 30)
        await reg.wait_for(lambda c: len(c) == 2, 5)
        await backend.break_watches()
        await backend.delete("n.a.0")  # while no watch runs
        await reg.wait_for(lambda c: backend.opened >= 2 and c.lookup("n.a.0") is None, 10)
        c = Entry.new("n.c.0", pool="c", node="n", pid=3)
        await backend.put(c, 30)
        await reg.wait_for(lambda cache: cache.lookup("n.c.0") is not None, 5)
        assert sorted(e.id for e in reg.entries()) == ["n.b.0", "n.c.0"]
    await backend.close()


async def test_watch_restarts_across_a_nats_restart(tmp_path) -> None:
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats"))
    server.start()
    port = int(server.url.rsplit(":", 1)[1])
    nc = await connect(server.url, name="restart")
    try:
        async with open_registry(nc) as reg:
            await reg.register(Entry.new("n.echo.0", pool="echo", node="n", pid=7))
            server.stop()
            # The same port and store: the client reconnects, the watch's consumer may be gone.
            server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", port=port))
            server.start()
            other = await connect(server.url, name="other")
            try:
                later = Entry.new("n.echo.1", pool="echo", node="n", pid=8)
                await (await KVBackend.open(other)).put(later, 30)
                await reg.wait_for(lambda c: c.lookup("n.echo.1") is not None, 30)
            finally:
                await other.close()
    finally:
        await nc.close()
        server.stop()


def test_removed_revisions_are_bounded() -> None:
    cache = RegistryCache()
    for i in range(MAX_REMOVED + 50):
        id = f"n.x.{i}"
        cache.apply(Change(ChangeKind.PUT, id, Entry.new(id, pool="x", node="n", pid=1), 2 * i + 1))
        cache.apply(Change(ChangeKind.DELETE, id, None, 2 * i + 2))
    assert len(cache) == 0
    assert len(cache._removed) == MAX_REMOVED and not cache._revisions


def test_load_counts_must_be_integers() -> None:
    with pytest.raises(InvalidEntryError):
        Entry("n.a.0", pool="a", node="n", pid=1, load=Load(-1, 0))
