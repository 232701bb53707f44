"""Certificates verify on their own, and every way of faking one fails."""

from __future__ import annotations

import pytest

from protocols.bft import (
    Certificate,
    CertificateError,
    Signer,
    build_certificate,
    new_seed,
    verify_certificate,
)
from protocols.bft.messages import PRECOMMIT, PREVOTE, digest
from tests.protocols.bft.helpers import GROUP, INSTANCE, KEYS, resigned, signed


def _cert(senders: list[str], value: object = "v", round_: int = 2) -> Certificate:
    votes = [signed(PRECOMMIT, s, round_, d=digest(value)) for s in senders]
    return build_certificate(GROUP, INSTANCE, round_, value, votes)


def test_a_quorum_of_precommits_proves_the_value() -> None:
    cert = _cert(["p0", "p1", "p3"], value={"x": 1})
    assert verify_certificate(cert, KEYS) == {"x": 1}
    assert verify_certificate(cert.to_dict(), KEYS) == {"x": 1}  # as received over the wire


def test_altered_value_is_refused() -> None:
    cert = _cert(["p0", "p1", "p3"]).to_dict()
    cert["value"] = "w"
    with pytest.raises(CertificateError, match="does not hash"):
        verify_certificate(cert, KEYS)


def test_too_few_distinct_signers_is_refused() -> None:
    with pytest.raises(CertificateError, match="2 distinct members; a quorum of 3"):
        verify_certificate(_cert(["p0", "p1"]), KEYS)
    # The same member twice (a second, re-signed copy) still counts once.
    cert = _cert(["p0", "p1"])
    extra = resigned(signed(PRECOMMIT, "p1", 2, d=digest("v")), "p1", extra={"again": 1}).to_wire()
    doubled = Certificate(**{**cert.__dict__, "precommits": cert.precommits + (extra,)})
    with pytest.raises(CertificateError, match="2 distinct members"):
        verify_certificate(doubled, KEYS)


def test_votes_for_something_else_are_refused() -> None:
    cert = _cert(["p0", "p1"])
    for stray in (
        signed(PRECOMMIT, "p3", 1, d=digest("v")),  # another round
        signed(PRECOMMIT, "p3", 2, d=digest("w")),  # another value
        signed(PREVOTE, "p3", 2, d=digest("v")),  # not a precommit
        signed(PRECOMMIT, "p3", 2, d=digest("v"), instance="other"),  # another instance
    ):
        bad = Certificate(**{**cert.__dict__, "precommits": cert.precommits + (stray.to_wire(),)})
        with pytest.raises(CertificateError, match="not this decision"):
            verify_certificate(bad, KEYS)


def test_forged_or_foreign_signatures_are_refused() -> None:
    cert = _cert(["p0", "p1"])
    forged = resigned(signed(PRECOMMIT, "p3", 2, d=digest("v")), "p0")  # p3's vote, p0's signature
    bad = Certificate(**{**cert.__dict__, "precommits": cert.precommits + (forged.to_wire(),)})
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate(bad, KEYS)
    with pytest.raises(CertificateError, match="not a member"):
        verify_certificate(_cert(["p0", "p1", "p3"]), {k: v for k, v in KEYS.items() if k != "p3"})
    # The same ids under other keys (another deployment): nothing verifies.
    other = {k: Signer(k, new_seed()).public_key for k in KEYS}
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate(_cert(["p0", "p1", "p3"]), other)


def test_missing_fields_are_refused() -> None:
    with pytest.raises(CertificateError, match="missing or mistypes"):
        verify_certificate({"group": GROUP}, KEYS)
    with pytest.raises(CertificateError, match="malformed precommit"):
        verify_certificate({**_cert(["p0"]).to_dict(), "precommits": [{"v": 9}]}, KEYS)
