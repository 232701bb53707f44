"""Reading what a run left behind: results, dead letters, agent effects."""

from __future__ import annotations

from broker import JetStream, decode, read_stream, subjects
from chaos.checker import Observation
from chaos.errors import ChaosError
from workers.statestore import StateStore

EFFECT_KEY = "count"  # the side effect chaos.handlers.count keeps in ctx.state


async def require_pool(js: JetStream, pool: str, where: str) -> None:
    """Raise :class:`ChaosError` at once when ``pool`` has no consumer on ``TASKS`` (no node runs it).

    Tasks published to a pool nobody consumes would wait forever for results.
    """
    try:
        await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(pool))
    except Exception as exc:  # not found, or no TASKS stream at all: either way no pool
        raise ChaosError(
            f"no pool {pool!r} at {where}: its consumer {subjects.consumer(pool)} on {subjects.TASKS_STREAM} "
            f"does not exist ({type(exc).__name__}); name a pool the node runs (--pool), or let the run start its own node"
        ) from exc


def drop_uncounted(seen: Observation, pool: str) -> str:
    """When no agent kept a count, stop the checker from reading that as lost effects; returns the reason ("" if counted)."""
    if seen.effects is None or any(seen.effects.values()) or not seen.results:
        return ""
    seen.effects = None
    return (
        f"effects not checked: no agent of pool {pool} keeps a count in ctx.state['count'] (its handler must "
        "count each task it applies there, as chaos.handlers:count does), so duplicates processed are not counted"
    )


async def next_seq(js: JetStream, stream: str) -> int:
    """The sequence the next message of ``stream`` will get: where a run's outcomes start."""
    return (await js.stream_info(stream)).state.last_seq + 1


async def effects_of(js: JetStream, pool: str) -> dict[str, int]:
    """Tasks applied per agent of ``pool`` (``ctx.state["count"]``), by slot id."""
    store = await StateStore.open(js)
    # Keys are <node>.<slot>; results name the slot.
    return {
        key.split(".", 1)[1]: int(stored.state.get(EFFECT_KEY, 0))
        for key, stored in (await store.peers(pool)).items()
    }


async def observe(
    js: JetStream,
    pool: str,
    *,
    effects: bool = True,
    results_from: int = 1,
    dead_from: int = 1,
    baseline: dict[str, int] | None = None,
) -> Observation:
    """What a run stored for ``pool``: every result and dead letter from the
    given stream sequences on, and the effects each agent applied beyond
    ``baseline`` (its counts before the run) when ``effects``."""
    results = []
    for msg in await read_stream(js, subjects.RESULTS_STREAM, subjects.results(pool), start_seq=results_from):
        body = decode(msg.data)
        task_id = (msg.headers or {}).get(subjects.MSG_ID) or body.get("task_id")
        results.append((str(task_id), body))
    dead = [
        str((msg.headers or {}).get(subjects.TASK_ID))
        for msg in await read_stream(js, subjects.DLQ_STREAM, subjects.dlq(pool), start_seq=dead_from)
    ]
    counts = None
    if effects:
        before = baseline or {}
        counts = {agent: n - before.get(agent, 0) for agent, n in (await effects_of(js, pool)).items()}
    return Observation(results=results, dead=dead, effects=counts)
