"""Records any client can write to the shared buckets (variables, leases, quota, agent_state).

Each must be skipped or read safely, logged with its key, and never raised
into a watch, a start or an election. Property tests drive the parsers with
arbitrary JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import EmbeddedServer, ServerOptions, codec, connect, jetstream
from protocols.election import Election
from protocols.lease import LeaseError, LeaseRecord, decode_record, open_lease_bucket, read_lease
from protocols.quota import Budget, QuotaClient, open_quota_service
from protocols.quota.errors import QuotaError
from protocols.quota.ledger import SlotTable, Window, window_index
from protocols.variables import (
    FloatVar,
    IntVar,
    InvalidRecordError,
    ParameterSpace,
    VariableStore,
    VariableView,
    Verdict,
    load_space,
    open_variables_bucket,
)
from protocols.variables.store import Change, spec_key, value_key
from workers.statestore import StateRecordError, StateStore, StoredState

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


class Lines(logging.Handler):
    """Warnings of one logger, as text."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(logger)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Lines:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def raw(data: object) -> bytes:
    """JSON as any writer may produce it: integers of any size, NaN, Infinity."""
    return json.dumps(data).encode()


class Approve:
    async def approve(self, change) -> Verdict:
        return Verdict(True, "test")


# -- parsers, with arbitrary input -------------------------------------------------------


def _good_change() -> dict:
    return {"v": 1, "name": "lr", "value": 0.1, "version": 3, "proposer": "p", "reason": "", "session": "s",
            "approval": "", "evidence": {}, "at": 1.0}


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(_good_change())), value=json_values)
def test_value_records_parse_or_are_refused(field: str, value: object) -> None:
    try:
        change = Change.from_entry(raw(_good_change() | {field: value}), 1)
    except InvalidRecordError:
        return
    assert type(change.version) is int and 0 <= change.version <= 2**53


@pytest.mark.parametrize("version", [1e300, "3", True, -1, 2**64, None])
def test_bad_versions_are_refused(version: object) -> None:
    with pytest.raises(InvalidRecordError, match="version"):
        Change.from_entry(raw(_good_change() | {"version": version}), 1)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["holder", "owner", "term", "ttl"]), value=json_values)
def test_lease_records_parse_or_are_refused(field: str, value: object) -> None:
    body = {"v": 1, "holder": "h", "owner": "o", "term": 3, "ttl": 5.0} | {field: value}
    try:
        record = decode_record(raw(body), 1)
    except LeaseError:
        return
    assert isinstance(record, LeaseRecord) and 0 <= record.term < 2**53 and 0 < record.ttl <= 3600
    codec.encode({"term": record.term + 1})  # the next grant's term is still encodable


def test_lease_term_at_the_64_bit_limit_is_refused() -> None:
    with pytest.raises(LeaseError, match="term"):
        decode_record(raw({"holder": "h", "owner": "o", "term": 2**64 - 1, "ttl": 5}), 1)


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_ledger_records_parse_or_are_refused(data: object) -> None:
    for parse in (Window.from_dict, SlotTable.from_dict):
        try:
            parse(data, 1)
        except QuotaError:
            pass


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_agent_state_records_parse_or_are_refused(data: object) -> None:
    try:
        state = StoredState.parse(raw(data), 1)
    except StateRecordError:
        return
    assert isinstance(state.state, dict) and all(isinstance(t, str) for t in state.applied)


# -- against a real server ---------------------------------------------------------------


async def test_malformed_variables_never_stop_a_start_and_never_freeze_a_value(nc) -> None:
    space = ParameterSpace([FloatVar("lr", 0.1, 0.0, 1.0), IntVar("batch", 8, 1, 64)])
    kv = await open_variables_bucket(jetstream(nc))
    store = VariableStore(kv, space, Approve())
    await store.declare()
    await kv.put(spec_key("broken"), b'{"kind": "float", "default": "x", "low": 0, "high": 1}')
    await kv.put(spec_key("junk"), b"\xff")
    await kv.put(spec_key("listy"), b"[1]")
    # A value whose version no integer passes would freeze the value if trusted.
    await kv.put(value_key("lr"), raw(_good_change() | {"value": 0.5, "version": 1e300}))
    with Lines("foundation.protocols.variables") as seen:
        loaded = await load_space(kv)
        assert [v.name for v in loaded] == ["batch", "lr"]
        async with VariableView(kv, space) as view:
            assert view["lr"] == 0.1  # the malformed record is not shown
            assert (await store.current("lr")).version == 0  # and reads as no value...
            await store.propose("lr", 0.25)  # ...so a proper change replaces it
            await view.wait_for("lr", lambda v: v == 0.25, 10)
            await kv.put(value_key("lr"), codec.encode(_good_change() | {"value": 0.75, "version": 2**53}))
            await view.wait_for("lr", lambda v: v == 0.75, 10)
            await store.propose("lr", 0.5)  # a huge hand-written version cannot freeze the value
            await view.wait_for("lr", lambda v: v == 0.5, 10)
    for key in ("spec.broken", "spec.junk", "spec.listy", "value.lr"):
        assert key in seen.text


async def test_malformed_lease_records_are_taken_over_not_raised(nc) -> None:
    kv = await open_lease_bucket(jetstream(nc))
    await kv.put("election.x", raw({"holder": "h", "owner": "o", "term": 2**64 - 1, "ttl": 1e300}))
    with Lines("foundation.protocols.lease") as seen:
        election = Election(kv, "x", "me", ttl=1.0)
        term = await asyncio.wait_for(election.campaign(), 20)
        assert term == 1 and election.is_leader
        assert (await read_lease(kv, "election.x")).holder == "me"
        await election.resign()
    assert "election.x" in seen.text


async def test_malformed_ledger_records_never_stop_the_quota_service(nc, nats_url) -> None:
    js = jetstream(nc)
    budget = Budget(rate_per_s=100, max_concurrency=2)
    client_nc = await connect(nats_url, name="client")
    client = QuotaClient(client_nc, "api", "api.0", batch=5, timeout=20)
    try:
        async with open_quota_service(nc, "api", budget, name="svc") as service:
            await asyncio.wait_for(service.leading.wait(), 20)
            kv = await js.key_value("quota")
            await kv.put("api.slots", b'{"holders": ["a"]}')
            # The next ten windows: garbage, so those windows count as spent.
            now = window_index(time.time(), 1.0)
            for index in range(now, now + 3):
                await kv.put(f"api.rate.{index}", b'{"grants": "lots"}')
            with Lines("foundation.quota") as seen:
                await client.acquire(timeout=20)  # served, once a window without garbage comes
                await client.acquire_slot(timeout=20)
                client.release_slot()
            assert "api.slots" in seen.text and "api.rate." in seen.text
    finally:
        await client.close()
        await client_nc.close()


async def test_a_quota_candidate_campaigns_again_after_a_nats_outage(tmp_path) -> None:
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats"))
    server.start()
    port = int(server.url.rsplit(":", 1)[1])
    nc = await connect(server.url, name="candidate")
    terms: list[int] = []
    led = asyncio.Event()

    def on_lead(term: int) -> None:
        terms.append(term)
        led.set()

    try:
        async with open_quota_service(nc, "api", Budget(rate_per_s=10), name="svc", lease_ttl=1.0,
                                      on_lead=on_lead) as service:
            await asyncio.wait_for(led.wait(), 20)
            led.clear()
            server.stop()
            await asyncio.wait_for(_until(lambda: not service.leading.is_set()), 20)
            server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", port=port))
            server.start()
            await asyncio.wait_for(led.wait(), 60)
            assert terms[-1] > terms[0]
    finally:
        await nc.close()
        server.stop()


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.05)  # polling a flag the service sets from its own task


async def test_malformed_agent_state_is_read_as_empty_and_peers_are_skipped(nc) -> None:
    store = await StateStore.open(jetstream(nc))
    await store.kv.put("n.echo.0", b'{"state": [1], "applied": "t"}')
    await store.kv.put("n.echo.1", codec.encode({"v": 1, "state": {"k": 1}, "applied": ["t-1"], "outbox": {}}))
    with Lines("foundation.worker.state") as seen:
        own = await store.load("n.echo.0")
        assert own.state == {} and own.revision > 0
        # Its next write replaces the malformed value by compare-and-set.
        await store.write("n.echo.0", codec.encode({"v": 1, "state": {"k": 2}}), own.revision)
        await store.kv.put("n.echo.2", b"nope")
        peers = await store.peers("echo")
    assert sorted(peers) == ["n.echo.0", "n.echo.1"]
    assert "n.echo.0" in seen.text and "n.echo.2" in seen.text
