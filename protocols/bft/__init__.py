"""Byzantine agreement among agents: Tendermint over signed NATS messages.

Choice
======
Tendermint (Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus"),
one decision per *instance*: rounds of PROPOSAL, PREVOTE, PRECOMMIT with
locks, a valid value carried across rounds, round changes on timeout, and a
jump to a higher round on f + 1 messages from it. Chosen over PBFT because its
view change is not a separate sub-protocol: a new round *is* the view change,
and locks alone keep it safe.

Group arithmetic
================
n members (from a :class:`KeyDirectory`), f = floor((n - 1) / 3) Byzantine
tolerated, so n = 3f + 1 at best.

* quorum = n - f (2f + 1 for n = 3f + 1): any two quorums share f + 1
  members, one of them honest;
* round skip = f + 1 senders of a higher round (at least one honest).

Message sequence (round r, proposer = :func:`proposer` rotating per round)
==========================================================================
Subjects are ``coord.bft.<group>.<instance>.<phase>``; every member has its
own subscription (never a queue group).

1. ``proposal``: the proposer sends PROPOSAL(r, v, vr). v is its valid value
   if it has one (vr = the round it became valid, plus the 2f + 1 signed
   prevotes proving it), else its own proposal (vr = -1). Others start a
   propose timer.
2. ``prevote``: on the proposal, a member prevotes id(v) if v passes
   validation and it is not locked on another value since vr; otherwise nil.
   Propose timer expired: prevote nil.
3. ``precommit``: on the proposal and 2f + 1 prevotes for id(v), a member
   locks v (lockedRound = r), precommits id(v), and remembers v as valid; on
   2f + 1 nil prevotes it precommits nil; on 2f + 1 prevotes of any kind it
   starts a prevote timer, whose expiry precommits nil.
4. decide: 2f + 1 precommits for id(v) in any round, with v known, decide v.
   The certificate is those 2f + 1 signed precommits. 2f + 1 precommits of
   any kind start a precommit timer, whose expiry starts round r + 1.
5. ``decision``: a decided member publishes DECISION(v, certificate) and
   answers members still voting with it; a valid certificate decides v.

Any message from f + 1 members in a round above ours: jump to that round.
Timeouts are ``base + increment * r``: once the network behaves again, some
round lasts long enough to decide. Core NATS is at-most-once, so members
re-publish their current-round messages on a tick until they decide.

Authentication
==============
Every message is signed with Ed25519 (nkeys user keys) over its canonical
body (orjson, sorted keys), which names group, instance, round, kind and
sender. Refused, and counted by reason: malformed, wrong-group,
wrong-instance, unknown-sender, unsigned, forged, replayed (a signature
already seen), wrong-digest (value does not hash to the digest), stale-round
(a proposal or prevote below our round), future-round (too far ahead),
not-proposer, equivocation (a second, different message of the same kind and
round from one sender: the first stands, so each sender counts at most once
per quorum), bad-proof, bad-certificate.

Invariants (checked by the simulation on every schedule)
========================================================
* agreement: no two honest members decide different values;
* validity: a decided value was proposed and passes validation;
* integrity: a member decides at most once per instance;
* termination: after the network heals, every honest member decides;
* certificates: every decision's certificate verifies on its own.

With f + 1 Byzantine members agreement can be broken, and the tests show the
simulation finds such a schedule, so that its passing runs mean something.

Modules
=======
messages (wire form, canonical bytes), keys (identities, :class:`KeyDirectory`),
registry_keys (keys from registry entries' metadata or a keys file), quorum,
auth (per-message checks), votelog, machine (the pure state machine), certificate,
participant (NATS transport), node (a member as an OS process),
sim (the deterministic simulation bus, Byzantine behaviours, invariants).
"""

from __future__ import annotations

from protocols.bft.certificate import Certificate, build_certificate, verify_certificate
from protocols.bft.errors import (
    BftError,
    CertificateError,
    DecisionTimeoutError,
    InvalidInstanceError,
    InvalidKeyError,
    InvalidProposalError,
    MalformedMessageError,
    MembershipError,
    TransportUnavailableError,
)
from protocols.bft.keys import KeyDirectory, Signer, StaticKeyDirectory, new_seed, seed_from_bytes
from protocols.bft.machine import Decision, Effects, Send, Tendermint, Timeout, TimeoutPolicy
from protocols.bft.messages import Message, canonical, digest
from protocols.bft.participant import NATS_TIMEOUTS, Participant, subject
from protocols.bft.quorum import fault_bound, proposer, quorum, skip_threshold
from protocols.bft.registry_keys import METADATA_KEY, RegistryKeyDirectory, key_metadata, load_key_directory
from protocols.bft.signed_keys import load_signed_key_directory, operator_public_key, sign_key_file

__all__ = [
    "METADATA_KEY", "NATS_TIMEOUTS", "BftError", "Certificate", "CertificateError", "Decision",
    "DecisionTimeoutError", "Effects", "InvalidInstanceError", "InvalidKeyError", "InvalidProposalError",
    "KeyDirectory", "MalformedMessageError", "MembershipError", "Message", "Participant", "RegistryKeyDirectory",
    "Send", "Signer", "StaticKeyDirectory", "Tendermint", "Timeout", "TimeoutPolicy", "TransportUnavailableError",
    "load_signed_key_directory", "operator_public_key", "sign_key_file",
    "build_certificate", "canonical", "digest", "fault_bound", "key_metadata", "load_key_directory", "new_seed",
    "proposer", "quorum", "seed_from_bytes", "skip_threshold", "subject", "verify_certificate",
]
