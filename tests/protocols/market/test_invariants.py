"""The invariant checker itself: it must flag each kind of broken conversation."""

from __future__ import annotations

from protocols.market import Conversation, Record, run_violations, violations
from protocols.market import messages as m


def out(at: float, performative: str, peer: str, **body: object) -> Record:
    return Record(at, "out", performative, peer, dict(body))


def into(at: float, performative: str, peer: str, note: str = "", **body: object) -> Record:
    return Record(at, "in", performative, peer, dict(body), note)


def clean(cid: str = "c1", round: int = 1, addressed: tuple[str, ...] = ("a", "b", "r")) -> Conversation:
    return Conversation(
        cid,
        "t",
        round,
        addressed,
        deadline=1.0,
        records=[
            out(0.0, m.CFP, "*"),
            into(0.1, m.PROPOSE, "a", price=1),
            into(0.2, m.PROPOSE, "b", price=2),
            into(0.3, m.REFUSE, "r"),
            out(0.4, m.ACCEPT, "a"),
            out(0.4, m.REJECT, "b", reason=m.OUTBID),
            into(0.5, m.INFORM_DONE, "a"),
        ],
        outcome=m.DONE,
        winner="a",
    )


def test_a_correct_conversation_has_no_violations() -> None:
    assert violations(clean()) == []
    assert run_violations([clean()]) == []


def test_each_broken_invariant_is_reported() -> None:
    cases = {
        "cfp sent": lambda c: c.records.append(out(0.01, m.CFP, "*")),
        "proposer b got 0": lambda c: c.records.remove(c.records[5]),
        "proposer b got 2": lambda c: c.records.append(out(0.45, m.REJECT, "b", reason=m.OUTBID)),
        "without having proposed": lambda c: c.records.append(out(0.45, m.REJECT, "r", reason=m.OUTBID)),
        "proposals accepted": lambda c: c.records.append(out(0.45, m.ACCEPT, "b")),
        "ending(s)": lambda c: c.records.pop(),
        "precedes the accept": lambda c: c.records.insert(4, into(0.35, m.INFORM_DONE, "a")) or c.records.pop(),
        "outcome is": lambda c: setattr(c, "outcome", m.FAILED),
    }
    for expected, breaks in cases.items():
        conv = clean()
        breaks(conv)
        found = violations(conv)
        assert any(expected in v for v in found), f"{expected!r} not reported; got {found}"


def test_accepting_a_late_proposal_is_reported() -> None:
    conv = clean()
    conv.records[1] = into(1.2, m.PROPOSE, "a", note="late", price=1)
    assert any("late proposal of a" in v for v in violations(conv))


def test_no_award_despite_valid_proposals_is_reported() -> None:
    conv = clean()
    conv.records[4] = out(0.4, m.REJECT, "a", reason=m.OUTBID)
    conv.records.pop()
    conv.outcome, conv.winner = m.NO_PROPOSALS, None
    assert any("none accepted" in v for v in violations(conv))


def test_re_offer_rules_are_checked_across_rounds() -> None:
    failed = clean("c1")
    failed.records[-1] = into(0.5, m.FAILURE, "a", reason="x")
    failed.outcome = m.FAILED
    readdressed = clean("c2", round=2)
    assert any("who failed this task before" in v for v in run_violations([failed, readdressed]))
    assert any("followed by a re-offer" in v for v in run_violations([clean("c1"), clean("c2", round=2)]))
    assert any("reused" in v for v in run_violations([failed, clean("c1", round=2, addressed=("b",))]))
