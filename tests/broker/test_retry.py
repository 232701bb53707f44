"""Which NATS failures are worth retrying, and the retry loop's contract."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from broker import NatsUnavailableError, is_transient, retrying


@pytest.mark.parametrize("exc, transient", [
    (nats.errors.TimeoutError(), True),
    (nats.errors.NoRespondersError(), True),
    (ServiceUnavailableError(), True),
    (APIError(code=500, err_code=10008, description="JetStream system temporarily unavailable"), True),
    (APIError(code=500, err_code=10009, description="JetStream cluster can not handle request"), True),
    (APIError(code=409, description="Leadership Change"), True),
    (BadRequestError(code=400, err_code=10005, description="no suitable peers for placement, peer offline"), True),
    (BadRequestError(code=400, err_code=10005, description="no suitable peers for placement"), False),
    (BadRequestError(code=400, err_code=10058, description="stream name already in use"), False),
    (NotFoundError(code=404, err_code=10059, description="stream not found"), False),
    (ValueError("bug"), False),
])
def test_leader_elections_and_outages_are_transient_refusals_are_not(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


async def test_retrying_until_the_call_works() -> None:
    calls = []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServiceUnavailableError()
        return "ok"

    assert await retrying(call, what="test call", max_delay=0.01) == "ok"
    assert len(calls) == 3


async def test_a_refusal_is_raised_at_once_and_an_outage_after_the_deadline() -> None:
    calls = []

    async def refused() -> None:
        calls.append(1)
        raise BadRequestError(code=400, err_code=10058, description="stream name already in use")

    with pytest.raises(BadRequestError):
        await retrying(refused, what="test call")
    assert len(calls) == 1

    async def away() -> None:
        raise nats.errors.TimeoutError()

    with pytest.raises(NatsUnavailableError, match=r"cannot test call: NATS kept failing for 0.2s"):
        await retrying(away, what="test call", deadline=0.2, max_delay=0.01)
