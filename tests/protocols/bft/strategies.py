"""Hypothesis strategies for simulated scenarios: who is Byzantine, and what the network does."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from protocols.bft.sim import BEHAVIOURS, Cut, Partition, Scenario, Schedule


def endpoint_names(n: int, byzantine: Sequence[tuple[int, str]]) -> list[str]:
    names = [f"p{i}" for i in range(n)]
    names += [f"p{i}~twin" for i, b in byzantine if b == "twins"]
    return names


@st.composite
def schedules(draw: st.DrawFn, names: Sequence[str]) -> Schedule:
    """Drops, duplicates, delays (reordering), partitions, one-way cuts and late joiners, healed at ``heal_at``."""
    partitions = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.sampled_from([0.0, 0.0, 0.5, 2.0, 5.0]))
        length = draw(st.sampled_from([1.0, 3.0, 8.0, 20.0]))
        side = dict(zip(names, draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))))
        if draw(st.booleans()):
            # As in the Twins method: put the two copies of a shared key on
            # opposite sides, so each can pass for the honest member there.
            for name in names:
                if name.endswith("~twin"):
                    side[name] = not side[name.removesuffix("~twin")]
        sides = (frozenset(n for n in names if side[n]), frozenset(n for n in names if not side[n]))
        partitions.append(Partition(start, start + length, sides))
    cuts = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.sampled_from([0.0, 0.5, 2.0]))
        length = draw(st.sampled_from([1.0, 3.0, 10.0]))
        src = frozenset(draw(st.sets(st.sampled_from(list(names)), min_size=1, max_size=2)))
        dst = frozenset(draw(st.sets(st.sampled_from(list(names)), min_size=1, max_size=2)))
        kinds = draw(st.sampled_from([(), ("precommit", "decision"), ("prevote",), ("proposal",)]))
        cuts.append(Cut(start, start + length, src, dst, frozenset(kinds)))
    late = ()
    if draw(st.booleans()):
        late = ((draw(st.sampled_from(list(names))), draw(st.sampled_from([0.5, 3.0, 9.0]))),)
    return Schedule(
        seed=draw(st.integers(0, 2**32 - 1)),
        drop=draw(st.sampled_from([0.0, 0.1, 0.3, 0.6])),
        duplicate=draw(st.sampled_from([0.0, 0.2])),
        max_delay=draw(st.sampled_from([0.01, 0.3, 1.5, 4.0])),
        partitions=tuple(partitions),
        cuts=tuple(cuts),
        heal_at=draw(st.sampled_from([0.0, 3.0, 8.0, 15.0])),
        late=late,
    )


@st.composite
def scenarios(draw: st.DrawFn, n: int, bad: int, behaviours: Sequence[str] = tuple(BEHAVIOURS)) -> Scenario:
    """n members of which ``bad`` are Byzantine, each with a drawn behaviour and position."""
    members = draw(st.lists(st.integers(0, n - 1), min_size=bad, max_size=bad, unique=True))
    byzantine = tuple(sorted((i, draw(st.sampled_from(list(behaviours)))) for i in members))
    schedule = draw(schedules(endpoint_names(n, byzantine)))
    return Scenario(n=n, byzantine=byzantine, schedule=schedule, instance=draw(st.sampled_from(["i0", "i1", "i2"])))
