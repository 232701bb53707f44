"""Group arithmetic: fault bound, quorum sizes, and who proposes in which round."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocols.bft.errors import MembershipError


def fault_bound(n: int) -> int:
    """f, the most Byzantine members ``n`` tolerates: the largest f with n >= 3f + 1."""
    if n < 1:
        raise MembershipError("a group needs at least one member")
    return (n - 1) // 3


def quorum(n: int) -> int:
    """Votes that make a quorum: n - f (= 2f + 1 when n = 3f + 1).

    Any two quorums share at least f + 1 members, so at least one honest one:
    that is what makes two conflicting quorums impossible.
    """
    return n - fault_bound(n)


def skip_threshold(n: int) -> int:
    """f + 1: messages of a higher round from this many senders include an honest one."""
    return fault_bound(n) + 1


def proposer(members: Sequence[str], group: str, instance: str, round_: int) -> str:
    """The member that proposes in ``round_`` of an instance.

    Rounds rotate through the sorted members; the starting member is derived
    from the group and instance so that leadership spreads across instances.
    """
    ordered = sorted(members)
    if not ordered:
        raise MembershipError(f"group {group!r} has no members")
    seed = hashlib.sha256(f"{group}/{instance}".encode()).digest()
    offset = int.from_bytes(seed[:8], "big") % len(ordered)
    return ordered[(offset + round_) % len(ordered)]
