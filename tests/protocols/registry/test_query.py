"""The query language and the cache's indexes, on a cache fed directly."""

from __future__ import annotations

import itertools

import pytest

from protocols.registry import (
    Change,
    ChangeKind,
    Entry,
    InvalidQueryError,
    Load,
    RegistryCache,
    Status,
)

_revisions = itertools.count(1)


def put(cache: RegistryCache, entry: Entry) -> None:
    cache.apply(Change(ChangeKind.PUT, entry.id, entry, next(_revisions)))


def make(id: str, *, node: str = "a", caps=("echo",), status=Status.READY, load=(0, 0), **metadata) -> Entry:
    e = Entry.new(id, pool=id.split(".")[0], node=node, pid=1, capabilities=caps, metadata=metadata, status=status)
    return e.beat(load=Load(*load))


@pytest.fixture
def cache() -> RegistryCache:
    c = RegistryCache()
    put(c, make("gpu.0", node="a", caps=("embed", "chat"), gpu={"mem": 16, "kind": "a100"}, region="eu", load=(2, 10)))
    put(c, make("gpu.1", node="b", caps=("embed",), gpu={"mem": 24, "kind": "h100", "spec": {"cores": 132}},
                region="us", load=(0, 50)))
    put(c, make("gpu.2", node="b", caps=("embed",), gpu={"mem": 8}, region="us", status=Status.DRAINING))
    put(c, make("cpu.0", node="a", caps=("chat",), region="eu", tags=["x", "y"], load=(0, 3)))
    put(c, make("cpu.1", node="c", caps=("chat",), region=None, status=Status.STARTING))
    return c


def ids(entries: list[Entry]) -> list[str]:
    return sorted(e.id for e in entries)


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("metadata.gpu.mem", "eq", 16, ["gpu.0"]),
        ("metadata.gpu.spec.cores", "gt", 100, ["gpu.1"]),
        ("metadata.region", "neq", "eu", ["cpu.1", "gpu.1", "gpu.2"]),
        ("metadata.gpu.mem", "neq", 16, ["gpu.1", "gpu.2"]),  # no gpu.mem: not matched
        ("metadata.gpu.mem", "gt", 16, ["gpu.1"]),
        ("metadata.gpu.mem", "lt", 16, ["gpu.2"]),
        ("metadata.gpu.mem", "gte", 16, ["gpu.0", "gpu.1"]),
        ("metadata.gpu.mem", "lte", 16, ["gpu.0", "gpu.2"]),
        ("metadata.gpu.kind", "in", ["a100", "h100"], ["gpu.0", "gpu.1"]),
        ("metadata.gpu.kind", "not_in", ["a100"], ["gpu.1"]),
        ("metadata.region", "eq", None, ["cpu.1"]),
        ("metadata.tags", "eq", ["x", "y"], ["cpu.0"]),
        ("metadata.tags", "in", [["x", "y"], ["z"]], ["cpu.0"]),
        ("status", "eq", "draining", ["gpu.2"]),
        ("status", "in", ["ready", "starting"], ["cpu.0", "cpu.1", "gpu.0", "gpu.1"]),
        ("node", "neq", "b", ["cpu.0", "cpu.1", "gpu.0"]),
        ("load.in_flight", "gt", 0, ["gpu.0"]),
        ("load.processed", "gte", 10, ["gpu.0", "gpu.1"]),
        ("load", "eq", {"in_flight": 0, "processed": 3}, ["cpu.0"]),
        ("capabilities", "eq", ["chat", "embed"], ["gpu.0"]),
        ("id", "lt", "cpu.9", ["cpu.0", "cpu.1"]),
        ("pid", "eq", 1, ["cpu.0", "cpu.1", "gpu.0", "gpu.1", "gpu.2"]),
    ],
)
def test_every_operator_over_fields_and_nested_paths(cache, path, op, value, expected) -> None:
    assert ids(cache.query([(path, op, value)])) == expected


def test_conditions_combine_with_and(cache) -> None:
    where = [("metadata.region", "eq", "us"), ("metadata.gpu.mem", "gt", 10), ("status", "eq", "ready")]
    assert ids(cache.query(where)) == ["gpu.1"]


def test_query_takes_find_criteria_too(cache) -> None:
    assert ids(cache.query([("metadata.region", "eq", "eu")], capability="chat")) == ["cpu.0", "gpu.0"]
    assert ids(cache.query([("metadata.region", "eq", "eu")], capability="chat", node="b")) == []


def test_comparing_unordered_types_is_false_not_an_error(cache) -> None:
    assert cache.query([("metadata.region", "gt", 3)]) == []
    assert cache.query([("metadata.gpu", "lt", "z")]) == []
    assert cache.query([("metadata.region.deeper", "eq", "eu")]) == []


@pytest.mark.parametrize(
    ("condition", "match"),
    [
        (("metadata.x", "like", 1), "unknown query operator 'like'"),
        (("metadata.x", "in", 1), "needs a list"),
        (("colour", "eq", 1), "must start with one of"),
        (("metadata..x", "eq", 1), "must start with one of"),
        (("", "eq", 1), "non-empty string"),
        (("metadata.x", "eq"), "triple"),
    ],
)
def test_bad_conditions_are_refused_by_name(cache, condition, match) -> None:
    with pytest.raises(InvalidQueryError, match=match):
        cache.query([condition])


def test_find_intersects_indexes(cache) -> None:
    assert ids(cache.find(capability="embed")) == ["gpu.0", "gpu.1", "gpu.2"]
    assert ids(cache.find(capability="embed", node="b")) == ["gpu.1", "gpu.2"]
    assert ids(cache.find(capability="embed", node="b", status=Status.READY)) == ["gpu.1"]
    assert ids(cache.find(pool="cpu", status="starting")) == ["cpu.1"]
    assert cache.find(capability="nothing") == []
    assert len(cache.find()) == 5


def test_indexes_follow_updates_and_removals(cache) -> None:
    put(cache, make("gpu.1", node="c", caps=("chat",), status=Status.BUSY))
    assert ids(cache.find(capability="embed")) == ["gpu.0", "gpu.2"]
    assert ids(cache.find(node="c", status="busy")) == ["gpu.1"]
    assert ids(cache.find(node="b")) == ["gpu.2"]
    cache.apply(Change(ChangeKind.EXPIRE, "gpu.2", None, next(_revisions)))
    assert cache.find(node="b") == [] and cache.lookup("gpu.2") is None
    # Every index is empty of removed ids, not only the ones we asked about.
    assert all("gpu.2" not in s for index in (cache._by_capability, cache._by_pool, cache._by_node, cache._by_status)
               for s in index.values())


def test_stale_changes_are_dropped(cache) -> None:
    newer = make("cpu.0", caps=("chat",), region="new")
    cache.apply(Change(ChangeKind.PUT, "cpu.0", newer, 10_000))
    assert cache.apply(Change(ChangeKind.PUT, "cpu.0", make("cpu.0", region="old"), 9_999)) is None
    assert cache.apply(Change(ChangeKind.DELETE, "cpu.0", None, 9_998)) is None
    assert cache.lookup("cpu.0").metadata["region"] == "new"


def test_least_loaded_skips_non_accepting_and_orders_by_load(cache) -> None:
    assert ids(cache.least_loaded("embed", 5)) == ["gpu.0", "gpu.1"]  # gpu.2 is draining
    assert [e.id for e in cache.least_loaded("embed", 2)] == ["gpu.1", "gpu.0"]  # 0 in flight before 2
    assert [e.id for e in cache.least_loaded("chat", 1)] == ["cpu.0"]  # cpu.1 is starting
    assert cache.least_loaded("nothing", 3) == []
