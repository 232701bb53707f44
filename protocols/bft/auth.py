"""Authentication of incoming bytes: shape, addressing, sender, signature, replay.

Everything here is decided from the message alone (plus what this instance has
already accepted); round-dependent checks live in :mod:`protocols.bft.votelog`.
Every rejection is counted under its reason so tests and metrics can see *why*
traffic was refused.

Memory: only messages the vote log *accepted* are remembered (signature and
wire bytes), and the vote log holds at most one message per (kind, round,
sender) within its round window. A validly signed message that is then
refused (an equivocation, a stale or far-future round) is not kept; only its
signature goes into a bounded set (:data:`REFUSED_MEMORY`), so its repeats are
dropped without verifying again. A Byzantine member therefore cannot grow
another member's memory by signing ever new messages.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping

from protocols.bft import keys
from protocols.bft.errors import MalformedMessageError
from protocols.metrics import BFT_REJECTED
from protocols.bft.messages import DECISION, PROPOSAL, PREVOTE, Message, decode, digest, from_wire

# Rejection reasons, as counted in ``Authenticator.rejected``.
MALFORMED = "malformed"
WRONG_GROUP = "wrong-group"
WRONG_INSTANCE = "wrong-instance"
UNKNOWN_SENDER = "unknown-sender"
UNSIGNED = "unsigned"
REPLAYED = "replayed"
FORGED = "forged"
WRONG_DIGEST = "wrong-digest"
STALE_ROUND = "stale-round"
FUTURE_ROUND = "future-round"
NOT_PROPOSER = "not-proposer"
EQUIVOCATION = "equivocation"
BAD_PROOF = "bad-proof"
BAD_CERTIFICATE = "bad-certificate"
REASONS = (
    MALFORMED, WRONG_GROUP, WRONG_INSTANCE, UNKNOWN_SENDER, UNSIGNED, REPLAYED, FORGED, WRONG_DIGEST,
    STALE_ROUND, FUTURE_ROUND, NOT_PROPOSER, EQUIVOCATION, BAD_PROOF, BAD_CERTIFICATE,
)

REFUSED_MEMORY = 1024  # signatures of verified but refused messages remembered


class Authenticator:
    """Turns wire bytes into authenticated :class:`Message` objects for one instance.

    Args:
        group, instance: the only addressing accepted.
        members: participant id -> public key.
    """

    def __init__(self, group: str, instance: str, members: Mapping[str, str]) -> None:
        self.group = group
        self.instance = instance
        self.members = dict(members)
        self.rejected: Counter[str] = Counter()
        # Signatures already accepted. Ed25519 is deterministic, so a signature
        # seen before means the very same body: a re-broadcast or a replay,
        # dropped without paying for verification again.
        self._seen: set[bytes] = set()
        # Wire bytes of accepted messages, by signature: re-broadcast copies
        # are byte-identical and are dropped before even parsing them.
        self._raw: dict[bytes, bytes] = {}
        self._raw_seen: set[bytes] = set()
        self._refused: OrderedDict[bytes, None] = OrderedDict()

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        BFT_REJECTED.labels(reason).inc()

    def remember(self, msg: Message) -> bytes:
        """Mark our own message as seen (its echo is then a replay); its wire bytes."""
        data = msg.encode()
        self._seen.add(msg.sig)
        self._raw[msg.sig] = data
        self._raw_seen.add(data)
        return data

    def wire(self, msg: Message) -> bytes:
        """The bytes ``msg`` arrived as (or was sent as), for relaying it unchanged."""
        data = self._raw.get(msg.sig)
        return data if data is not None else msg.encode()

    def check(self, data: bytes) -> Message | None:
        """The authenticated message in ``data``, or ``None`` (the reason is counted)."""
        if data in self._raw_seen:
            return self._no(REPLAYED)
        try:
            msg = decode(data)
        except MalformedMessageError:
            return self._no(MALFORMED)
        if msg.group != self.group:
            return self._no(WRONG_GROUP)
        if msg.instance != self.instance:
            return self._no(WRONG_INSTANCE)
        if msg.sender not in self.members:
            return self._no(UNKNOWN_SENDER)
        if not msg.sig:
            return self._no(UNSIGNED)
        if msg.sig in self._seen or msg.sig in self._refused:
            return self._no(REPLAYED)
        if not keys.verify(self.members[msg.sender], msg.signing_bytes(), msg.sig):
            return self._no(FORGED)
        # Only a verified signature is remembered (by accepted() or refused()):
        # otherwise a forger who saw a signature first could attach it to
        # another body and get the genuine message dropped as a replay.
        if msg.kind in (PROPOSAL, DECISION) and not _digest_matches(msg):
            self.refused(msg)
            return self._no(WRONG_DIGEST)
        return msg

    def accepted(self, msg: Message, data: bytes) -> None:
        """Remember a message the vote log kept: its repeats are dropped unparsed."""
        self._seen.add(msg.sig)
        self._raw[msg.sig] = data
        self._raw_seen.add(data)

    def refused(self, msg: Message) -> None:
        """Remember (boundedly) the signature of a verified message that was refused."""
        self._refused[msg.sig] = None
        while len(self._refused) > REFUSED_MEMORY:
            self._refused.popitem(last=False)

    def justified(self, msg: Message, quorum_size: int) -> bool:
        """Whether a proposal's ``proof`` holds a quorum of valid prevotes for it.

        The proof must contain prevotes for ``(valid_round, digest)`` of this
        instance from ``quorum_size`` distinct members, each correctly signed.
        """
        signers: set[str] = set()
        for wire in msg.proof:
            try:
                vote = from_wire(wire)
            except MalformedMessageError:
                return False
            what = (vote.kind, vote.group, vote.instance, vote.round, vote.digest)
            if what != (PREVOTE, self.group, self.instance, msg.valid_round, msg.digest):
                return False
            key = self.members.get(vote.sender)
            if key is None or vote.sender in signers:
                continue
            if not keys.verify(key, vote.signing_bytes(), vote.sig):
                return False
            signers.add(vote.sender)
        return len(signers) >= quorum_size

    def _no(self, reason: str) -> None:
        self.rejected[reason] += 1
        BFT_REJECTED.labels(reason).inc()
        return None


def _digest_matches(msg: Message) -> bool:
    try:
        return digest(msg.value) == msg.digest
    except TypeError:
        return False
