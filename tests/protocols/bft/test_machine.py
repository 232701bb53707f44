"""The pure state machine: what it refuses and why, and the rules it follows."""

from __future__ import annotations

from dataclasses import replace

from protocols.bft import Timeout, build_certificate, digest
from protocols.bft.machine import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSE
from protocols.bft.messages import DECISION, PRECOMMIT, PREVOTE, PROPOSAL, decode
from tests.protocols.bft.helpers import machine, resigned, signed

V = "value-p2"


def _sent(fx, kind: str) -> list:
    return [decode(s.data) for s in fx.sends if s.phase == kind]


def test_honest_round_locks_precommits_and_decides_with_a_certificate() -> None:
    m = machine("p0")
    m.start()
    fx = m.receive(signed(PROPOSAL, "p2", value=V, valid_round=-1).encode())
    assert [v.digest for v in _sent(fx, PREVOTE)] == [digest(V)]
    m.receive(signed(PREVOTE, "p1", value=None, d=digest(V)).encode())
    fx = m.receive(signed(PREVOTE, "p3", d=digest(V)).encode())
    assert [v.digest for v in _sent(fx, PRECOMMIT)] == [digest(V)] and m.step == STEP_PRECOMMIT
    m.receive(signed(PRECOMMIT, "p1", d=digest(V)).encode())
    fx = m.receive(signed(PRECOMMIT, "p3", d=digest(V)).encode())
    assert fx.decision is not None and fx.decision.value == V
    cert = fx.decision.certificate
    assert (cert.round, len(cert.precommits)) == (0, 3)
    decision = _sent(fx, DECISION)[0]
    # The value travels once: as the message's value, not again inside the certificate.
    assert decision.value == V and decision.certificate == {k: v for k, v in cert.to_dict().items() if k != "value"}


def test_each_refusal_is_counted_under_its_reason() -> None:
    m = machine("p0")
    m.start()
    vote = signed(PREVOTE, "p1", d=digest(V))
    cases = [
        (b"{not json", "malformed"),
        (resigned(vote, "p1", group="h").encode(), "wrong-group"),
        (resigned(vote, "p1", instance="i9").encode(), "wrong-instance"),
        (resigned(vote, "p1", sender="ghost").encode(), "unknown-sender"),
        (replace(vote, sig=b"").encode(), "unsigned"),
        (resigned(vote, "p3").encode(), "forged"),  # claims p1, signed by p3
        (signed(PROPOSAL, "p1", value=V, valid_round=-1).encode(), "not-proposer"),
        (signed(PROPOSAL, "p2", value=V, d=digest("other"), valid_round=-1).encode(), "wrong-digest"),
        (signed(PREVOTE, "p3", round_=500, d=None).encode(), "future-round"),
    ]
    for data, reason in cases:
        before = m.rejected[reason]
        m.receive(data)
        assert m.rejected[reason] == before + 1, reason
    m.receive(vote.encode())
    m.receive(vote.encode())
    assert m.rejected["replayed"] == 1
    m.receive(resigned(vote, "p1", digest=None).encode())  # p1 changes its mind: equivocation
    assert m.rejected["equivocation"] == 1


def test_a_sender_counts_once_however_many_signed_copies_it_sends() -> None:
    m = machine("p0")
    m.start()
    m.receive(signed(PROPOSAL, "p2", value=V, valid_round=-1).encode())
    vote = signed(PREVOTE, "p1", d=digest(V))
    m.receive(vote.encode())
    m.receive(resigned(vote, "p1", extra={"again": 1}).encode())
    m.receive(resigned(vote, "p1", extra={"again": 2}).encode())
    assert m.step == STEP_PREVOTE  # p0 + p1 only: no quorum of 3, no precommit
    assert m.rejected["equivocation"] == 2


def test_stale_round_proposals_and_prevotes_are_refused_but_precommits_kept() -> None:
    m = machine("p0")
    m.start()
    # f+1 = 2 members speaking in round 3: jump there.
    m.receive(signed(PREVOTE, "p1", round_=3, d=None).encode())
    m.receive(signed(PREVOTE, "p3", round_=3, d=None).encode())
    assert m.round == 3
    m.receive(signed(PREVOTE, "p2", round_=0, d=digest(V)).encode())
    m.receive(signed(PROPOSAL, "p2", round_=0, value=V, valid_round=-1).encode())
    assert m.rejected["stale-round"] == 2
    # A quorum of round-0 precommits still decides, and the stale proposal
    # taught the value of its digest.
    m.receive(signed(PRECOMMIT, "p1", d=digest(V)).encode())
    m.receive(signed(PRECOMMIT, "p2", d=digest(V)).encode())
    fx = m.receive(signed(PRECOMMIT, "p3", d=digest(V)).encode())
    assert fx.decision is not None and fx.decision.value == V and fx.decision.certificate.round == 0


def test_timeouts_move_through_nil_votes_to_the_next_round() -> None:
    m = machine("p0")
    fx = m.start()
    assert fx.timeouts == [Timeout(STEP_PROPOSE, 0, 1.0)]
    fx = m.on_timeout(fx.timeouts[0])
    assert [v.digest for v in _sent(fx, PREVOTE)] == [None]
    m.receive(signed(PREVOTE, "p1", d=None).encode())
    fx = m.receive(signed(PREVOTE, "p3", d=None).encode())
    assert [v.digest for v in _sent(fx, PRECOMMIT)] == [None]  # 2f+1 nil prevotes
    m.receive(signed(PRECOMMIT, "p1", d=None).encode())
    fx = m.receive(signed(PRECOMMIT, "p3", d=None).encode())
    assert fx.timeouts == [Timeout(STEP_PRECOMMIT, 0, 1.0)]
    fx = m.on_timeout(fx.timeouts[0])
    assert m.round == 1
    assert fx.timeouts == [Timeout(STEP_PROPOSE, 1, 1.5)]  # grows with the round
    assert m.on_timeout(Timeout(STEP_PROPOSE, 0, 1.0)).sends == []  # stale timer: ignored


def test_locked_member_refuses_a_new_value_without_proof() -> None:
    m = machine("p0")
    m.start()
    m.receive(signed(PROPOSAL, "p2", value=V, valid_round=-1).encode())
    m.receive(signed(PREVOTE, "p1", d=digest(V)).encode())
    m.receive(signed(PREVOTE, "p3", d=digest(V)).encode())  # locked on V in round 0
    m.receive(signed(PRECOMMIT, "p1", d=None).encode())
    fx = m.receive(signed(PRECOMMIT, "p3", d=None).encode())
    m.on_timeout(fx.timeouts[-1])
    assert m.round == 1
    fx = m.receive(signed(PROPOSAL, "p3", round_=1, value="value-p3", valid_round=-1).encode())
    assert [v.digest for v in _sent(fx, PREVOTE)] == [None]


def test_reproposal_needs_a_valid_proof_of_its_valid_round() -> None:
    m = machine("p0")
    m.start()
    m.receive(signed(PREVOTE, "p1", round_=1, d=None).encode())
    m.receive(signed(PREVOTE, "p2", round_=1, d=None).encode())
    assert m.round == 1
    proof = tuple(signed(PREVOTE, s, 0, d=digest("w")).to_wire() for s in ("p1", "p2", "p3"))
    short = signed(PROPOSAL, "p3", round_=1, value="w", valid_round=0, proof=proof[:2])
    m.receive(short.encode())
    assert m.rejected["bad-proof"] == 1
    fx = m.receive(resigned(short, "p3", proof=proof).encode())
    assert [v.digest for v in _sent(fx, PREVOTE)] == [digest("w")]


def test_a_valid_certificate_decides_a_member_that_missed_the_votes() -> None:
    late = machine("p1")
    late.start()
    votes = [signed(PRECOMMIT, s, 4, d=digest(V)) for s in ("p0", "p2", "p3")]
    cert = build_certificate("g", "i0", 4, V, votes)
    forged = signed(DECISION, "p0", 4, value="w", d=digest("w"), certificate={**cert.to_dict(), "value": "w",
                                                                            "digest": digest("w")})
    assert late.receive(forged.encode()).decision is None
    assert late.rejected["bad-certificate"] == 1
    fx = late.receive(signed(DECISION, "p0", 4, value=V, certificate=cert.to_dict()).encode())
    assert fx.decision is not None and fx.decision.value == V
    # Integrity: nothing decides it again, and it answers voters with its decision.
    fx = late.receive(signed(PREVOTE, "p3", 5, d=None).encode())
    assert fx.decision is None and [m.kind for m in map(decode, (s.data for s in fx.sends))] == [DECISION]


def test_rebroadcast_relays_the_round_as_held_with_signatures_intact() -> None:
    m = machine("p0")
    m.start()
    prop = signed(PROPOSAL, "p2", value=V, valid_round=-1)
    vote = signed(PREVOTE, "p1", d=digest(V))
    m.receive(prop.encode())
    m.receive(vote.encode())
    relayed = {s.data for s in m.rebroadcast().sends}
    assert prop.encode() in relayed and vote.encode() in relayed
    assert len(relayed) == 3  # and our own prevote


def test_validation_hook_turns_a_proposal_into_a_nil_prevote() -> None:
    m = machine("p0", validate=lambda v: v != "bad")
    m.start()
    fx = m.receive(signed(PROPOSAL, "p2", value="bad", valid_round=-1).encode())
    assert [v.digest for v in _sent(fx, PREVOTE)] == [None]
