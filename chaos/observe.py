"""Reading what a run left behind: results, dead letters, agent effects."""

from __future__ import annotations

from nats.js import JetStreamContext

from broker import decode, read_stream, subjects
from chaos.checker import Observation
from workers.statestore import StateStore

EFFECT_KEY = "count"  # the side effect chaos.handlers.count keeps in ctx.state


async def observe(js: JetStreamContext, pool: str, *, effects: bool = True) -> Observation:
    """Everything stored for ``pool``: every result and dead letter, and the
    per-agent effect counts (``ctx.state["count"]``) when ``effects``."""
    results = []
    for msg in await read_stream(js, subjects.RESULTS_STREAM, subjects.results(pool)):
        body = decode(msg.data)
        task_id = (msg.headers or {}).get(subjects.MSG_ID) or body.get("task_id")
        results.append((str(task_id), body))
    dead = [
        str((msg.headers or {}).get(subjects.TASK_ID))
        for msg in await read_stream(js, subjects.DLQ_STREAM, subjects.dlq(pool))
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
