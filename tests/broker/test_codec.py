from __future__ import annotations

import pytest

from broker import (
    BodyTooLargeError,
    CodecError,
    InvalidJSONError,
    dead_letter_headers,
    decode,
    encode,
    error_line,
    result_body,
    subjects,
)
from config import BrokerError


def test_round_trip_and_limit_boundary() -> None:
    data = encode({"a": [1, 2.5, "x", None, True]})
    assert decode(data, limit=len(data)) == {"a": [1, 2.5, "x", None, True]}
    with pytest.raises(BodyTooLargeError, match=f"body of {len(data)} bytes is over the limit of {len(data) - 1} bytes"):
        decode(data, limit=len(data) - 1)


@pytest.mark.parametrize("raw", [b"", b"{", b"nope", b"\xff\xfe", b'{"a":1}x'])
def test_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJSONError, match="not valid JSON"):
        decode(raw)


def test_unserializable_value() -> None:
    with pytest.raises(CodecError, match="not JSON-serializable"):
        encode({"s": {1, 2}})


def test_result_body_shapes() -> None:
    ok = result_body(task_id="t", pool="p", worker="p.0", attempt=1, duration_ms=1.23456, result={"x": 1})
    assert ok == {"task_id": "t", "pool": "p", "ok": True, "worker": "p.0", "attempt": 1, "duration_ms": 1.235, "result": {"x": 1}}
    bad = result_body(task_id="t", pool="p", worker="p.0", attempt=5, duration_ms=2, error="ValueError: x")
    assert bad["ok"] is False and bad["error"] == "ValueError: x" and "result" not in bad


def test_dead_letter_headers_are_one_line() -> None:
    h = dead_letter_headers(task_id="t1", pool="p", error=error_line(ValueError("multi\nline\r\nerror")), attempts=3)
    assert h == {
        "Nats-Msg-Id": "t1",
        "Foundation-Task-Id": "t1",
        "Foundation-Pool": "p",
        "Foundation-Error": "ValueError: multi line error",
        "Foundation-Attempts": "3",
    }


def test_subject_builders_reject_bad_tokens() -> None:
    assert subjects.tasks("echo") == "tasks.echo"
    assert subjects.results("echo") == "results.echo"
    assert subjects.dlq("echo") == "dlq.echo"
    assert subjects.event("n1", "restart") == "foundation.events.n1.restart"
    assert subjects.coord("consensus", "g", "s1", "propose") == "coord.consensus.g.s1.propose"
    assert subjects.default_task_id(42) == "TASKS:42"
    for bad in ("", "a.b", "a b", "*", ">"):
        with pytest.raises(BrokerError, match="must be non-empty"):
            subjects.tasks(bad)
