"""Reading what a run left behind: results, dead letters, agent effects."""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from broker import decode, subjects
from chaos.checker import Observation
from workers.statestore import StateStore

EFFECT_KEY = "count"  # the side effect chaos.handlers.count keeps in ctx.state


async def read_subject(js: JetStreamContext, stream: str, subject: str, timeout: float = 5.0) -> list[Msg]:
    """Every message of ``stream`` on ``subject`` (no wildcards), in order.

    The count is taken from the stream before reading: asking the consumer
    what is pending would race with the messages it pushes at once.
    """
    info = await js.stream_info(stream, subjects_filter=subject)
    expected = (info.state.subjects or {}).get(subject, 0)
    if not expected:
        return []
    out: list[Msg] = []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            msg = await sub.next_msg(timeout=timeout)
            out.append(msg)
            if len(out) >= expected and msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def observe(js: JetStreamContext, pool: str, *, effects: bool = True) -> Observation:
    """Everything stored for ``pool``: every result and dead letter, and the
    per-agent effect counts (``ctx.state["count"]``) when ``effects``."""
    results = []
    for msg in await read_subject(js, subjects.RESULTS_STREAM, subjects.results(pool)):
        body = decode(msg.data)
        task_id = (msg.headers or {}).get(subjects.MSG_ID) or body.get("task_id")
        results.append((str(task_id), body))
    dead = [
        str((msg.headers or {}).get(subjects.TASK_ID))
        for msg in await read_subject(js, subjects.DLQ_STREAM, subjects.dlq(pool))
    ]
    counts = None
    if effects:
        store = await StateStore.open(js)
        # Keys are <node>.<slot>; results name the slot.
        counts = {
            key.split(".", 1)[1]: int(stored.state.get(EFFECT_KEY, 0))
            for key, stored in (await store.peers(pool)).items()
        }
    return Observation(results=results, dead=dead, effects=counts)
