"""Protocol messages: fields, canonical signing bytes, wire form.

Every message is a JSON object. Its *body* is every field but ``sig``; the
signature is Ed25519 over the body serialized by orjson with sorted keys
(:func:`canonical`), so any re-encoding of the same body verifies, and the
signature binds the group, instance, round, kind and sender: a message cannot
be replayed into another group, instance or round, or claimed by another
sender, without failing verification.

Unknown body fields are kept and signed (so newer senders stay verifiable) but
otherwise ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from protocols.bft.errors import MalformedMessageError
from protocols.bft.keys import Signer

VERSION = 1

PROPOSAL = "proposal"
PREVOTE = "prevote"
PRECOMMIT = "precommit"
DECISION = "decision"
KINDS = (PROPOSAL, PREVOTE, PRECOMMIT, DECISION)

# Larger bodies are refused before parsing: a proposal carries at most its
# value and 2f+1 prevotes, a decision its value (once) and 2f+1 precommits.
MAX_MESSAGE_BYTES = 1 << 20
# The largest value (canonical JSON bytes) the protocol accepts: a proposal
# with a bigger one is prevoted nil, so no such value is ever decided. The
# rest of MAX_MESSAGE_BYTES is room for the signed votes of a proof or a
# certificate (about 400 bytes each), so every accepted value also reaches a
# late member inside a decision.
MAX_VALUE_BYTES = 768 * 1024

_DIGEST_LEN = 64


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (orjson, sorted keys).

    Raises:
        TypeError: the value is not JSON-serializable with string keys.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"value is not canonical JSON: {exc}") from None


def value_size(value: Any) -> int:
    """Bytes of the canonical form of ``value`` (what :data:`MAX_VALUE_BYTES` bounds)."""
    return len(canonical(value))


def digest(value: Any) -> str:
    """Hex SHA-256 of the canonical bytes of ``value``: what votes refer to."""
    return hashlib.sha256(canonical(value)).hexdigest()


def normalize(value: Any) -> Any:
    """``value`` as every receiver will see it after a JSON round trip."""
    return orjson.loads(canonical(value))


@dataclass(frozen=True, slots=True)
class Message:
    """One signed protocol message.

    ``digest`` is ``None`` for a nil vote. ``value`` travels only in proposals
    and decisions; ``valid_round`` and ``proof`` (the 2f+1 signed prevotes that
    justify re-proposing a value from an earlier round) only in proposals;
    ``certificate`` only in decisions.
    """

    kind: str
    group: str
    instance: str
    round: int
    sender: str
    digest: str | None = None
    value: Any = None
    valid_round: int = -1
    proof: tuple[dict[str, Any], ...] = ()
    certificate: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        """Every signed field, as it goes on the wire."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            v=VERSION, kind=self.kind, group=self.group, instance=self.instance,
            round=self.round, sender=self.sender, digest=self.digest,
        )
        if self.kind in (PROPOSAL, DECISION):
            out["value"] = self.value
        if self.kind == PROPOSAL:
            out["valid_round"] = self.valid_round
            out["proof"] = list(self.proof)
        if self.kind == DECISION:
            out["certificate"] = self.certificate
        return out

    def signing_bytes(self) -> bytes:
        return canonical(self.body())

    def signed(self, signer: Signer) -> Message:
        """A copy carrying ``signer``'s signature (the sender must be the signer)."""
        return replace(self, sig=signer.sign(self.signing_bytes()))

    def to_wire(self) -> dict[str, Any]:
        out = self.body()
        out["sig"] = base64.b64encode(self.sig).decode() if self.sig else None
        return out

    def encode(self) -> bytes:
        return orjson.dumps(self.to_wire())


def decode(data: bytes) -> Message:
    """Parse wire bytes into a :class:`Message` (its signature is *not* checked).

    Raises:
        MalformedMessageError: not JSON, too large, or a field of the wrong shape.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"message is not JSON: {exc}") from None
    return from_wire(obj)


def from_wire(obj: Any) -> Message:
    """Build a :class:`Message` from its decoded JSON object.

    Raises:
        MalformedMessageError: a field is missing or of the wrong shape.
    """
    if not isinstance(obj, dict):
        raise MalformedMessageError("message is not a JSON object")
    obj = dict(obj)
    sig_text = obj.pop("sig", None)
    if obj.get("v") != VERSION:
        raise MalformedMessageError(f"unsupported message version {obj.get('v')!r}; expected {VERSION}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise MalformedMessageError(f"unknown message kind {kind!r}")
    for name in ("group", "instance", "sender"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise MalformedMessageError(f"{name} must be a non-empty string")
    rnd = obj.get("round")
    if type(rnd) is not int or rnd < 0:
        raise MalformedMessageError(f"round must be a non-negative integer, got {rnd!r}")
    dig = obj.get("digest")
    if dig is not None and (not isinstance(dig, str) or len(dig) != _DIGEST_LEN):
        raise MalformedMessageError("digest must be null or a 64-character hex SHA-256")
    if kind in (PROPOSAL, DECISION) and dig is None:
        raise MalformedMessageError(f"a {kind} must name the digest of its value")
    valid_round = obj.get("valid_round", -1)
    proof = obj.get("proof", [])
    if kind == PROPOSAL:
        if type(valid_round) is not int or not -1 <= valid_round < rnd:
            raise MalformedMessageError(f"valid_round must be an integer in [-1, round), got {valid_round!r}")
        if not isinstance(proof, list) or not all(isinstance(p, dict) for p in proof):
            raise MalformedMessageError("proof must be a list of signed prevotes")
    cert = obj.get("certificate")
    if kind == DECISION and not isinstance(cert, dict):
        raise MalformedMessageError("a decision must carry its certificate")
    sig = b""
    if sig_text is not None:
        try:
            sig = base64.b64decode(sig_text, validate=True) if isinstance(sig_text, str) else b""
        except (binascii.Error, ValueError):
            sig = b""
        # An undecodable or empty signature still counts as *presented*: it is
        # judged forged by verification rather than silently treated as absent.
        sig = sig or b"\0"
    known = {"v", "kind", "group", "instance", "round", "sender", "digest", "value", "valid_round", "proof",
             "certificate"}
    return Message(
        kind=kind, group=obj["group"], instance=obj["instance"], round=rnd, sender=obj["sender"], digest=dig,
        value=obj.get("value"), valid_round=valid_round if kind == PROPOSAL else -1,
        proof=tuple(proof) if kind == PROPOSAL else (), certificate=cert if kind == DECISION else None,
        extra={k: v for k, v in obj.items() if k not in known}, sig=sig,
    )
