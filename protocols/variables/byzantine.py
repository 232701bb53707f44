"""A Byzantine agreement decision as the gate of a shared-variable change.

For a group declared Byzantine, up to f of its n = 3f + 1 stakeholders may
lie, so a vote count proves nothing: a change is applied only with a
*certificate* (2f + 1 signed precommits, see :mod:`protocols.bft`) that any
process can re-check with the group's public keys, and that is stored with
the value.

Message sequence (``S(phase)`` = ``coord.bft.<group>.<instance>.<phase>``,
``instance`` = :func:`change_instance` of the variable and the version the
change applies on top of, e.g. ``var-lr-v3``)::

    gate    SUB  _INBOX.<x>
    gate    PUB  S(request) reply=_INBOX.<x>   {v, group, instance, timeout, change, nonce[, proposer, sig]}
                 (published again, backing off, until the gate has its answer)
    member  checks the change against its own space (and its own check)
            refuses:  PUB _INBOX.<x>  {v, group, instance, member, nonce, ok: false, reason, sig}
            accepts:  participant.decide(group, change, instance=instance, validate=same checks)
                      (S(proposal), S(prevote), S(precommit), S(decision): the participant's phases)
                      PUB _INBOX.<x>  {v, group, instance, member, nonce, ok: true, certificate, sig}
                      (or ok: false with the reason it did not decide)
    gate    verify_certificate(certificate, directory.members(group))
            approve iff the decided value is exactly the requested change

``request`` is none of the participant's phases, and an instance never starts
with ``_`` (the member processes' control subjects), so the conversations
cannot mix. Answers are signed with the member's key; an answer that does not
verify, or comes from a non-member, is ignored.

Use
===
The proposer's side (keys from the registry, or ``load_key_directory("keys.json")``)::

    gate = ByzantineApproval(nc, RegistryKeyDirectory(registry))
    store = VariableStore(kv, space, gate)  # or AllOf(ConsensusApproval(...), gate)
    await store.propose("lr", 0.5)         # the certificate lands in Change.evidence["bft"]

A member (a worker whose registry entry carries
``key_metadata(signer.public_key, ["variables"])``)::

    participant = Participant(nc, Signer(entry_id, seed), RegistryKeyDirectory(registry))
    async with ByzantineStakeholder(participant, space):
        ...  # answers every request of the group until the block ends

Anyone, later: ``verify_change(await store.current("lr"), directory.members("variables"))``.

Requests are authenticated when the members are given ``proposers``
(``{id: public key}``, e.g. the operator key of ``foundation auth init``):
the gate then signs its request with its ``signer`` and a member refuses,
unanswered, any request whose signature does not verify. Every request
carries a fresh random ``nonce`` that each signed answer repeats, and the
gate counts a refusal only with its own nonce: a refusal signed for an
earlier request of the same instance cannot be replayed against this one.

Invariants (tests/protocols/test_variables_byzantine.py):

* Approval only with a certificate that verifies against the group's keys,
  for this group and instance, whose value is the requested change (name,
  value, version, session and all); it is stored as ``evidence["bft"]`` and
  :func:`verify_change` re-checks a stored change anywhere.
* An honest member never proposes or prevotes a change outside its own
  space, so with at most f members lying such a change is never decided; the
  gate refuses it as soon as f + 1 members have refused (one of them honest),
  each member counted once, or at its timeout.
* A certificate in an answer is checked, never trusted; a bad one is ignored.
* With f members silent, a valid change is still approved.
* Instances are per (variable, version): two changes racing for the same
  version are decided in one instance, so the group settles which one is
  next and the other's gate refuses.
* Requests come from any client: a ``timeout`` that is not a finite number
  is refused, others are kept within ``[MIN_TIMEOUT, max_timeout]``; a
  member takes part in at most ``max_running`` instances at once (more are
  refused as busy) and answers at most :data:`MAX_REPLIES` inboxes per
  instance.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from broker import NATS_ERRORS, Connection, Message, codec, reply_allowed
from protocols.bft import (
    BftError,
    Certificate,
    CertificateError,
    KeyDirectory,
    Participant,
    canonical,
    fault_bound,
    quorum,
    subject,
    verify_certificate,
)
from protocols.bft.keys import Signer, verify
from protocols.bft.messages import normalize
from protocols.variables.approval import VARIABLES_GROUP, ChangeRequest, Verdict
from protocols.variables.space import ParameterSpace, VariableError, VariableValidationError
from protocols.variables.store import Change

log = logging.getLogger("foundation.protocols.variables")

REQUEST = "request"
EVIDENCE_KEY = "bft"
_VERSION = 1
_MAX_BODY = 1 << 20
_REMEMBERED = 1024  # decided instances a member keeps answering from memory
MIN_TIMEOUT = 0.1  # seconds: the shortest decision a request may ask for
MAX_REPLIES = 64  # inboxes answered per instance (a gate re-announces on one inbox)

MemberCheck = Callable[[ChangeRequest], bool]


def change_instance(name: str, version: int) -> str:
    """The instance deciding the change of ``name`` on top of ``version``.

    Variable names never hold ``:``, and the version is the part after the
    last ``-v``, so distinct (name, version) pairs never share an instance.
    """
    return f"var-{name.replace('.', ':')}-v{version}"


def _requests(group: str) -> str:
    """The wildcard subject of every change request to ``group``."""
    # The builder refuses wildcards; build one instance's subject and swap the token.
    head, _instance, phase = subject(group, "_", REQUEST).rsplit(".", 2)
    return f"{head}.*.{phase}"


def _signed(body: dict[str, Any], participant: Participant) -> bytes:
    sig = participant.signer.sign(canonical(body))
    return codec.encode({**body, "sig": base64.b64encode(sig).decode()})


def _open(data: bytes, members: Mapping[str, str]) -> dict[str, Any] | None:
    """A member's answer if it is well formed and its signature verifies, else None."""
    try:
        body = codec.decode(data, _MAX_BODY)
        sig = base64.b64decode(body.pop("sig"), validate=True)
        key = members.get(body["member"])
    except (codec.CodecError, AttributeError, KeyError, TypeError, binascii.Error, ValueError):
        return None
    if key is None or not verify(key, canonical(body), sig):
        return None
    return body


class ByzantineApproval:
    """The gate: a change passes only with a verified decision of the group.

    Args:
        nc: the NATS connection the request goes out on.
        directory: the group's public keys (static, from config, or
            :class:`~protocols.bft.RegistryKeyDirectory`).
        group: the Byzantine group of stakeholders.
        timeout: seconds to wait for the decision (members decide within it).
        reannounce: the longest pause between re-publications of the request
            (core NATS is at-most-once; late members still hear it).
        signer: signs each request, for members that accept only requests of
            known proposers (their ``proposers``).

    Attributes:
        ignored: answers not counted, by reason (bad-signature: malformed, from a
            non-member or not signed by its key; wrong-instance; bad-certificate).
    """

    def __init__(
        self, nc: Connection, directory: KeyDirectory, *, group: str = VARIABLES_GROUP, timeout: float = 10.0,
        reannounce: float = 1.0, signer: Signer | None = None,
    ) -> None:
        self.nc = nc
        self.signer = signer
        self.directory = directory
        self.group = group
        self.timeout = timeout
        self.reannounce = reannounce
        self.ignored: Counter[str] = Counter()

    async def approve(self, change: ChangeRequest) -> Verdict:
        """Ask the group to decide ``change``; approved only with a matching certificate.

        Raises:
            MembershipError: the directory knows no members of the group.
            VariableError: NATS refused the request.
        """
        members = self.directory.members(self.group)
        n = len(members)
        instance = change_instance(change.name, change.version)
        wanted = normalize(change.to_dict())
        nonce = os.urandom(12).hex()  # answers name it: none signed for another request counts
        request = {
            "v": _VERSION, "group": self.group, "instance": instance, "timeout": self.timeout, "change": wanted,
            "nonce": nonce,
        }
        if self.signer is not None:
            request["proposer"] = self.signer.id
            request["sig"] = base64.b64encode(self.signer.sign(canonical(request))).decode()
        body = codec.encode(request)
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def collect(msg: Message) -> None:
            answers.put_nowait(msg.data)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        inbox = self.nc.new_inbox()
        try:
            sub = await self.nc.subscribe(inbox, cb=collect)
        except NATS_ERRORS as exc:
            raise VariableError(f"cannot ask group {self.group!r} to decide {change.name!r}: {exc!r}") from exc
        refused: dict[str, str] = {}
        pause = self.reannounce / 4
        next_announce = loop.time() + pause
        try:
            try:
                await self.nc.publish(subject(self.group, instance, REQUEST), body, reply=inbox)
                await self.nc.flush()
            except (*NATS_ERRORS, asyncio.TimeoutError) as exc:
                raise VariableError(f"cannot ask group {self.group!r} to decide {change.name!r}: {exc!r}") from exc
            while (now := loop.time()) < deadline:
                if now >= next_announce:
                    with contextlib.suppress(*NATS_ERRORS):
                        await self.nc.publish(subject(self.group, instance, REQUEST), body, reply=inbox)
                    pause = min(pause * 2, self.reannounce)
                    next_announce = now + pause
                try:
                    data = await asyncio.wait_for(answers.get(), min(deadline, next_announce) - now)
                except asyncio.TimeoutError:
                    continue
                verdict = self._judge(data, members, instance, wanted, change, refused, nonce)
                if verdict is not None:
                    return verdict
            while not answers.empty():  # answers that came in with the deadline still count
                verdict = self._judge(answers.get_nowait(), members, instance, wanted, change, refused, nonce)
                if verdict is not None:
                    return verdict
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        return Verdict(False, (
            f"no Byzantine decision on {change.name}={change.value!r} in {self.group}/{instance} within "
            f"{self.timeout:g}s: {len(refused)} of {n} members refused"
            + (f" ({_listing(refused)})" if refused else "")
            + f"; a decision needs {quorum(n)} members running and accepting the change"
        ))

    def _judge(
        self, data: bytes, members: Mapping[str, str], instance: str, wanted: Any, change: ChangeRequest,
        refused: dict[str, str], nonce: str,
    ) -> Verdict | None:
        """The verdict this answer settles, or None to keep waiting."""
        answer = _open(data, members)
        if answer is None:
            self.ignored["bad-signature"] += 1
            return None
        if answer.get("group") != self.group or answer.get("instance") != instance:
            self.ignored["wrong-instance"] += 1
            return None
        if not answer.get("ok"):
            if answer.get("nonce") != nonce:
                # Signed, but for another request: a replayed refusal.
                self.ignored["other-request"] += 1
                return None
            refused.setdefault(answer["member"], str(answer.get("reason", "")))
            n = len(members)
            if len(refused) > fault_bound(n):
                # f + 1 refusals include an honest member, and honest members
                # share the space: the change cannot gather a quorum.
                return Verdict(False, (
                    f"{len(refused)} of {n} members of {self.group!r} refused {change.name}={change.value!r}: "
                    f"{_listing(refused)}"
                ))
            return None
        try:
            cert = Certificate.from_dict(answer.get("certificate") or {})
            value = verify_certificate(cert, members)
        except CertificateError as exc:
            log.warning("gate %s/%s: certificate from %r ignored: %s", self.group, instance, answer["member"], exc)
            self.ignored["bad-certificate"] += 1
            return None
        if (cert.group, cert.instance) != (self.group, instance):
            self.ignored["bad-certificate"] += 1
            return None
        if value != wanted:
            other = value if isinstance(value, dict) else {}
            return Verdict(False, (
                f"group {self.group!r} decided another change for {change.name!r} version {change.version}: "
                f"{other.get('value')!r} proposed by {other.get('proposer')!r} (session {other.get('session')!r})"
            ))
        evidence = {EVIDENCE_KEY: {"group": self.group, "instance": instance, "certificate": cert.to_dict()}}
        reason = (
            f"Byzantine decision in {self.group}/{instance}, round {cert.round}: "
            f"{len(cert.precommits)} signed precommits of {len(members)} members"
        )
        return Verdict(True, reason, evidence)


def _listing(refused: Mapping[str, str]) -> str:
    return "; ".join(f"{member}: {reason}" for member, reason in sorted(refused.items()))


def verify_change(change: Change, public_keys: Mapping[str, str], *, group: str = VARIABLES_GROUP) -> Certificate:
    """Re-check a stored change's certificate, trusting nobody who handed it over.

    Args:
        change: an applied change (from ``VariableStore.current`` or ``history``).
        public_keys: every member's public key in ``group``.
        group: the Byzantine group that must have decided it.

    Returns:
        The verified certificate.

    Raises:
        CertificateError: no certificate, one that does not verify, or one
            that decided another change than this one.
    """
    evidence = change.evidence.get(EVIDENCE_KEY)
    if not isinstance(evidence, Mapping) or "certificate" not in evidence:
        raise CertificateError(f"change {change.name!r} v{change.version} carries no Byzantine certificate")
    cert = Certificate.from_dict(evidence["certificate"])
    value = verify_certificate(cert, public_keys)
    instance = change_instance(change.name, change.version - 1)
    if (cert.group, cert.instance) != (group, instance):
        raise CertificateError(
            f"certificate decides {cert.group}/{cert.instance}, not {group}/{instance} "
            f"(the change of {change.name!r} to version {change.version})"
        )
    decided = value if isinstance(value, dict) else {}
    mine = {"name": change.name, "value": change.value, "version": change.version - 1, "session": change.session}
    if {k: decided.get(k) for k in mine} != normalize(mine):
        raise CertificateError(f"certificate decided {decided!r}, not the stored change {mine!r}")
    return cert


class ByzantineStakeholder:
    """The member side: checks announced changes and takes part in their decision.

    Args:
        participant: this member's endpoint (its own signer, connection and
            key directory naming the group).
        space: this member's own copy of the parameter space.
        group: the Byzantine group.
        check: an extra synchronous predicate on the change; it must give the
            same answer on every honest member (it also judges other members'
            proposals inside the decision).
        max_timeout: the longest a member keeps deciding, whatever the request says.
        proposers: ``{id: public key}`` of who may request changes; when given,
            a request must be signed by one of them (others get no answer).

    Attributes:
        stats: requests by outcome (decided, refused, failed, malformed).

    Use ``async with ByzantineStakeholder(...)``, or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self, participant: Participant, space: ParameterSpace, *, group: str = VARIABLES_GROUP,
        check: MemberCheck | None = None, max_timeout: float = 30.0, proposers: Mapping[str, str] | None = None,
        max_running: int = 16,
    ) -> None:
        self.proposers = dict(proposers) if proposers is not None else None
        self.participant = participant
        self.space = space
        self.group = group
        self.check = check
        self.max_timeout = max_timeout
        self.max_running = max_running
        self.stats: Counter[str] = Counter()
        self._sub: Any = None
        self._pending: dict[str, dict[str, str]] = {}  # instance -> {reply: nonce}
        self._decided: OrderedDict[str, Certificate] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def id(self) -> str:
        return self.participant.id

    async def start(self) -> None:
        """Subscribe to the group's requests; returns once the server knows it."""
        nc = self.participant.nc
        self._sub = await nc.subscribe(_requests(self.group), cb=self._on_request)
        await nc.flush()

    async def stop(self) -> None:
        """Stop answering (the participant itself belongs to the caller)."""
        if self._sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ByzantineStakeholder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def problem(self, value: Any, name: str, version: int) -> str | None:
        """Why this member would not accept ``value`` as the change of ``name`` at ``version``; None if it would."""
        if not isinstance(value, dict):
            return f"a change request must be an object, got {type(value).__name__}"
        try:
            change = ChangeRequest.from_dict(value)
        except TypeError as exc:
            return f"malformed change request: {exc}"
        if change.name != name or type(change.version) is not int or change.version != version:
            return f"request is for {change.name!r} version {change.version!r}, not {name!r} version {version}"
        try:
            self.space.validate(change.name, change.value)
        except VariableValidationError as exc:
            return str(exc)
        if self.check is not None and not self.check(change):
            return f"refused by {self.id}'s check"
        return None

    async def _on_request(self, msg: Message) -> None:
        try:
            body = codec.decode(msg.data, _MAX_BODY)
            instance, timeout, value = str(body["instance"]), float(body["timeout"]), body["change"]
            name, version = value["name"], value["version"]
            nonce = body.get("nonce", "")
            if not isinstance(nonce, str) or len(nonce) > 64:
                raise ValueError("nonce")
        except (codec.CodecError, KeyError, TypeError, ValueError):
            self.stats["malformed"] += 1
            log.warning("stakeholder %s: malformed request on %s ignored", self.id, msg.subject)
            return
        if self.proposers is not None and not self._authentic(body):
            self.stats["unauthenticated"] += 1
            log.warning("stakeholder %s: request on %s not signed by a known proposer; ignored", self.id, msg.subject)
            return
        if not math.isfinite(timeout):
            self.stats["malformed"] += 1
            log.warning("stakeholder %s: request on %s ignored: timeout %r", self.id, msg.subject, timeout)
            return
        timeout = min(max(timeout, MIN_TIMEOUT), self.max_timeout)
        reason = None
        if msg.subject.split(".")[2:4] != [self.group, instance] or body.get("group") != self.group:
            reason = f"request on {msg.subject} names group {body.get('group')!r} and instance {instance!r}"
        elif not isinstance(name, str) or instance != change_instance(name, version):
            reason = f"instance {instance!r} is not the one of {name!r} version {version!r}"
        else:
            reason = self.problem(value, name, version)
        if reason is not None:
            self.stats["refused"] += 1
            await self._answer({msg.reply: nonce}, instance, {"ok": False, "reason": reason})
            return
        if instance in self._decided:
            await self._answer({msg.reply: nonce}, instance, {"ok": True, "certificate": self._decided[instance].to_dict()})
            return
        if instance in self._pending:
            if len(self._pending[instance]) < MAX_REPLIES:
                self._pending[instance][msg.reply] = nonce  # a repeat: answered when the running decision ends
            return
        if len(self._pending) >= self.max_running:
            self.stats["busy"] += 1
            log.warning("stakeholder %s: %d decisions running; request on %s refused", self.id,
                        len(self._pending), msg.subject)
            await self._answer({msg.reply: nonce}, instance, {"ok": False, "reason": "busy: too many decisions running"})
            return
        self._pending[instance] = {msg.reply: nonce}
        task = asyncio.get_running_loop().create_task(
            self._take_part(instance, value, name, version, timeout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_part(self, instance: str, value: Any, name: str, version: int, timeout: float) -> None:
        try:
            _, cert = await self.participant.decide(
                self.group, value, timeout, instance=instance,
                validate=lambda v: self.problem(v, name, version) is None,
            )
        except BftError as exc:
            self.stats["failed"] += 1
            answer: dict[str, Any] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        else:
            self.stats["decided"] += 1
            self._decided[instance] = cert
            while len(self._decided) > _REMEMBERED:
                self._decided.popitem(last=False)
            answer = {"ok": True, "certificate": cert.to_dict()}
        await self._answer(self._pending.pop(instance, {}), instance, answer)

    def _authentic(self, body: dict[str, Any]) -> bool:
        """The request is signed by one of ``proposers`` (over every field but ``sig``)."""
        assert self.proposers is not None
        fields = dict(body)
        try:
            sig = base64.b64decode(fields.pop("sig"), validate=True)
            key = self.proposers.get(fields.get("proposer"))  # type: ignore[arg-type]
        except (KeyError, TypeError, binascii.Error, ValueError):
            return False
        return key is not None and verify(key, canonical(fields), sig)

    async def _answer(self, replies: Mapping[str, str], instance: str, fields: dict[str, Any]) -> None:
        for reply, nonce in replies.items():
            if not reply_allowed(reply, f"change request {instance}"):
                continue  # a request without an inbox still gets our part in the decision
            body = {"v": _VERSION, "group": self.group, "instance": instance, "member": self.id, "nonce": nonce, **fields}
            data = _signed(body, self.participant)
            try:
                await self.participant.nc.publish(reply, data)
            except NATS_ERRORS as exc:
                # The gate re-announces; the next answer goes out then.
                log.debug("stakeholder %s: answer to %s failed: %s", self.id, instance, exc)
