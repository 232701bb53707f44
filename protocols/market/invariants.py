"""Checks of the Contract Net invariants on recorded conversations.

Used by the tests and usable by the chaos suite on any recorded run. Each
function returns human-readable violations; an empty list means the record
satisfies the invariants listed in :mod:`protocols.market.initiator`.

Only the first answer (propose or refuse) of each sender counts; records
noted ``duplicate``, ``malformed`` or ``unexpected`` are not part of the
protocol and are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from protocols.market import messages as m

_IGNORED = frozenset({"duplicate", "malformed", "unexpected"})


def violations(conv: m.Conversation) -> list[str]:
    """Violations of the per-round invariants in one conversation."""
    cid = conv.conversation_id
    found: list[str] = []
    records = [r for r in conv.records if r.note not in _IGNORED]
    if len(conv.sent(m.CFP)) != 1:
        found.append(f"{cid}: {len(conv.sent(m.CFP))} cfp sent, expected exactly 1")
    first: dict[str, m.Record] = {}
    for r in records:
        if r.direction == "in" and r.performative in (m.PROPOSE, m.REFUSE):
            first.setdefault(r.peer, r)
    proposers = {peer for peer, r in first.items() if r.performative == m.PROPOSE}
    answers = [r for r in records if r.direction == "out" and r.performative in (m.ACCEPT, m.REJECT)]
    counts = Counter(r.peer for r in answers)
    for peer in sorted(proposers):
        if counts[peer] != 1:
            found.append(f"{cid}: proposer {peer} got {counts[peer]} accept/reject, expected exactly 1")
    for peer in sorted(set(counts) - proposers):
        found.append(f"{cid}: {peer} got an accept/reject without having proposed")
    accepts = [r for r in answers if r.performative == m.ACCEPT]
    if len(accepts) > 1:
        found.append(f"{cid}: {len(accepts)} proposals accepted, expected at most 1")
    for accept in accepts:
        proposal = first.get(accept.peer)
        if proposal is None:
            continue  # already reported as an answer without a proposal
        if proposal.note or proposal.at >= conv.deadline:
            found.append(f"{cid}: accepted a {proposal.note or 'late'} proposal of {accept.peer} at {proposal.at:.4f}s")
        found.extend(_ending_violations(conv, records, accept))
    valid = [r for r in first.values() if r.performative == m.PROPOSE and not r.note]
    reasons = {r.peer: r.body.get("reason") for r in answers if r.performative == m.REJECT}
    # Without an accept, every valid proposal must have been found invalid by the scorer.
    if valid and not accepts and any(reasons.get(r.peer) != m.INVALID for r in valid):
        found.append(f"{cid}: {len(valid)} valid on-time proposal(s) but none accepted")
    if not accepts and conv.outcome != m.NO_PROPOSALS:
        found.append(f"{cid}: nothing accepted but the outcome is {conv.outcome!r}")
    return found


def _ending_violations(conv: m.Conversation, records: list[m.Record], accept: m.Record) -> list[str]:
    cid, peer = conv.conversation_id, accept.peer
    endings = [r for r in records if r.direction == "in" and r.peer == peer and r.performative in m.ENDINGS]
    cancels = [r for r in records if r.direction == "out" and r.peer == peer and r.performative == m.CANCEL]
    found = []
    if len(endings) + len(cancels) != 1:
        found.append(
            f"{cid}: winner {peer} has {len(endings)} ending(s) and {len(cancels)} cancel(s), expected exactly one"
        )
    for r in endings + cancels:
        if r.at < accept.at:
            found.append(f"{cid}: {r.performative} at {r.at:.4f}s precedes the accept at {accept.at:.4f}s")
    expected = {m.INFORM_DONE: m.DONE, m.INFORM_RESULT: m.RESULT, m.FAILURE: m.FAILED}
    if endings and conv.outcome != expected[endings[0].performative]:
        found.append(f"{cid}: ended with {endings[0].performative} but the outcome is {conv.outcome!r}")
    if cancels and conv.outcome != m.TIMEOUT:
        found.append(f"{cid}: winner cancelled but the outcome is {conv.outcome!r}")
    return found


def run_violations(conversations: Sequence[m.Conversation]) -> list[str]:
    """Violations across the rounds of one run: per-round checks plus re-offer rules.

    A round follows another only when the previous winner failed or went
    silent; the re-offer addresses nobody who failed the task before; rounds
    are numbered 1, 2, … with fresh conversation ids and one task id.
    """
    found = [v for conv in conversations for v in violations(conv)]
    failed: set[str] = set()
    ids = [c.conversation_id for c in conversations]
    if len(set(ids)) != len(ids):
        found.append("a conversation id was reused across rounds")
    if len({c.task_id for c in conversations}) > 1:
        found.append("rounds of one run offer different task ids")
    for index, conv in enumerate(conversations):
        if conv.round != index + 1:
            found.append(f"{conv.conversation_id}: round {conv.round} at position {index + 1}")
        readdressed = failed.intersection(conv.addressed)
        if readdressed:
            found.append(f"{conv.conversation_id}: re-offered to {sorted(readdressed)}, who failed this task before")
        last = index == len(conversations) - 1
        if not last and conv.outcome not in (m.FAILED, m.TIMEOUT):
            found.append(f"{conv.conversation_id}: followed by a re-offer although its outcome is {conv.outcome!r}")
        if conv.outcome in (m.FAILED, m.TIMEOUT) and conv.winner:
            failed.add(conv.winner)
    return found
