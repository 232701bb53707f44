from __future__ import annotations

import pytest

from protocols.registry import Entry, InvalidEntryError, Load, Status


def _entry() -> Entry:
    return Entry.new("echo.0", pool="echo", node="a", pid=10, capabilities=["echo", "upper"],
                     metadata={"gpu": {"mem": 16}})


def test_json_round_trip_keeps_every_field() -> None:
    entry = _entry().beat(status="busy", load=Load(in_flight=3, processed=7))
    back = Entry.from_json(entry.to_json())
    assert back == entry
    assert back.status is Status.BUSY
    assert back.capabilities == frozenset({"echo", "upper"})


def test_unknown_fields_are_ignored() -> None:
    data = _entry().to_dict() | {"v": 2, "colour": "blue"}
    assert Entry.from_dict(data).id == "echo.0"


def test_beat_refreshes_time_and_keeps_identity() -> None:
    entry = _entry()
    later = entry.beat(load=Load(1, 2))
    assert later.heartbeat_at >= entry.heartbeat_at
    assert (later.id, later.pid, later.started_at) == (entry.id, entry.pid, entry.started_at)
    assert later.status == entry.status
    assert later.load == Load(1, 2)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"id": "echo 0"}, "entry id"),
        ({"id": ".echo"}, "entry id"),
        ({"pool": ""}, "non-empty pool"),
        ({"pid": -1}, "pid must be"),
        ({"status": "sleeping"}, "status 'sleeping'"),
    ],
)
def test_invalid_entries_are_refused(change: dict, match: str) -> None:
    data = _entry().to_dict() | change
    with pytest.raises(InvalidEntryError, match=match):
        Entry.from_dict(data)


def test_missing_field_and_bad_json_are_named() -> None:
    data = _entry().to_dict()
    del data["node"]
    with pytest.raises(InvalidEntryError, match="missing the field 'node'"):
        Entry.from_dict(data)
    with pytest.raises(InvalidEntryError, match="not valid JSON"):
        Entry.from_json(b"{nope")
