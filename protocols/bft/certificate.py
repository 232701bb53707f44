"""Decision certificates: 2f+1 signed precommits for one value in one round.

A certificate proves a decision to anyone who knows the group's public keys,
without trusting whoever hands it over: every precommit inside is checked
against its sender's key, senders count once, and the value must hash to the
digest they signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.bft import keys
from protocols.bft.errors import CertificateError, MalformedMessageError
from protocols.bft.messages import PRECOMMIT, Message, digest, from_wire
from protocols.bft.quorum import quorum


@dataclass(frozen=True)
class Certificate:
    """The proof of a decision.

    Attributes:
        group, instance: what was decided.
        round: the round whose precommits decided it.
        digest: SHA-256 of the canonical value.
        value: the decided value.
        precommits: the signed precommits, in wire form.
    """

    group: str
    instance: str
    round: int
    digest: str
    value: Any
    precommits: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "instance": self.instance, "round": self.round,
            "digest": self.digest, "value": self.value, "precommits": list(self.precommits),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Certificate:
        """Raises: CertificateError: a field is missing or of the wrong type."""
        try:
            return cls(
                group=str(obj["group"]), instance=str(obj["instance"]), round=int(obj["round"]),
                digest=str(obj["digest"]), value=obj["value"], precommits=tuple(obj["precommits"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CertificateError(f"certificate is missing or mistypes a field: {exc!r}") from exc


def build_certificate(group: str, instance: str, round_: int, value: Any, precommits: Iterable[Message]) -> Certificate:
    """Package already-verified precommits into a :class:`Certificate`."""
    return Certificate(
        group=group, instance=instance, round=round_, digest=digest(value), value=value,
        precommits=tuple(m.to_wire() for m in precommits),
    )


def verify_certificate(cert: Certificate | Mapping[str, Any], public_keys: Mapping[str, str]) -> Any:
    """Check a certificate against the group's public keys.

    Args:
        cert: a :class:`Certificate` or its ``to_dict()`` form (as received).
        public_keys: participant id -> nkeys public key of *every* member of
            the group; its size fixes n and so the quorum n - f.

    Returns:
        The decided value of ``(cert.group, cert.instance)``; checking that
        these are the group and instance the caller asked about is the
        caller's part.

    Raises:
        CertificateError: fewer than a quorum of distinct members signed a
            precommit for this group, instance, round and digest, or the value
            does not hash to the digest.
    """
    if not isinstance(cert, Certificate):
        cert = Certificate.from_dict(cert)
    try:
        if digest(cert.value) != cert.digest:
            raise CertificateError("certificate value does not hash to its digest: the value was altered")
    except TypeError as exc:
        raise CertificateError(f"certificate value is not JSON: {exc}") from exc
    need = quorum(len(public_keys))
    signers: set[str] = set()
    for wire in cert.precommits:
        try:
            msg = from_wire(wire)
        except MalformedMessageError as exc:
            raise CertificateError(f"certificate holds a malformed precommit: {exc}") from exc
        what = (msg.kind, msg.group, msg.instance, msg.round, msg.digest)
        if what != (PRECOMMIT, cert.group, cert.instance, cert.round, cert.digest):
            raise CertificateError(f"precommit by {msg.sender!r} is for {what[1:]}, not this decision")
        key = public_keys.get(msg.sender)
        if key is None:
            raise CertificateError(f"precommit signed by {msg.sender!r}, who is not a member of the group")
        if not keys.verify(key, msg.signing_bytes(), msg.sig):
            raise CertificateError(f"precommit signature of {msg.sender!r} does not verify: forged or altered")
        signers.add(msg.sender)
    if len(signers) < need:
        raise CertificateError(
            f"certificate has precommits from {len(signers)} distinct members; a quorum of {need} "
            f"of {len(public_keys)} is required"
        )
    return cert.value
