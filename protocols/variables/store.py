"""Proposing and applying changes to shared variables in the ``variables`` bucket.

Message sequence (bucket ``variables``; keys ``spec.<name>`` and ``value.<name>``)::

    proposer     validate(name, value) against the space    VariableValidationError before any I/O
    proposer  <- KV   get value.<name>                      current value and revision R
    proposer  -> gate approve(change)                       default: a consensus round among stakeholders
    proposer  -> KV   update value.<name>, last=R           applied only if nothing changed since R
    every view <- KV  watch value.>                         sees the new value live (see view.py)

Invariants (tests/protocols/test_variables.py):

1. A value that fails the type or bounds check is refused with a clear
   error before any gate runs or anything is written.
2. A change is written only after its gate approved it, and only on top of
   the version the gate saw (CAS on R): two changes approved concurrently
   cannot both apply; the loser gets :class:`VariableConflictError`.
3. Every applied change is kept in the key's history (bucket history of
   ``HISTORY`` revisions) with its proposer, reason, version and the gate's
   evidence (the consensus decision).
4. Any client can write the bucket, so :meth:`Change.from_entry` and
   :func:`load_space` parse strictly: a value record of the wrong shape
   (``version`` not a non-negative integer below 2**53, a non-finite ``at``,
   fields of the wrong type) raises :class:`InvalidRecordError` naming the
   key, and a malformed definition is skipped with a warning, never raised
   into a worker's start.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from broker import (
    NATS_ERRORS,
    JetStream,
    KeyDeletedError,
    KeyNotFoundError,
    KeyValueBucket,
    NoKeysError,
    WrongRevisionError,
    catalog,
    codec,
    streams,
    subjects,
)
from protocols.variables.approval import Approval, ChangeRejectedError, ChangeRequest
from protocols.variables.space import (
    ParameterSpace,
    Variable,
    VariableError,
    VariableValidationError,
    variable_from_dict,
    variable_to_dict,
)

log = logging.getLogger("foundation.protocols.variables")

HISTORY = catalog.VARIABLES_HISTORY  # the most revisions a NATS KV bucket keeps per key
_VERSION = 1
MAX_VERSION = 2**53  # versions above this cannot round-trip through every JSON reader


class InvalidRecordError(VariableError):
    """A record in the variables bucket is not of the documented shape."""


class VariableConflictError(VariableError):
    """The variable changed while this change was being approved; propose again."""


@dataclass(frozen=True)
class Change:
    """One applied value of a variable, as stored in ``value.<name>``."""

    name: str
    value: Any
    version: int
    proposer: str = ""
    reason: str = ""
    session: str = ""
    approval: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # wall clock, seconds since the epoch (informational)
    revision: int = 0  # KV revision it was read at

    @classmethod
    def from_entry(cls, data: bytes, revision: int) -> Change:
        """Parse a ``value.<name>`` record strictly.

        Raises:
            InvalidRecordError: not JSON, or a field of the wrong type or range.
        """
        try:
            body = codec.decode(data)
        except codec.CodecError as exc:
            raise InvalidRecordError(f"value record at revision {revision} is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRecordError(f"value record at revision {revision} is not a JSON object")
        version = body.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
            raise InvalidRecordError(f"value record at revision {revision}: version {version!r} is not an integer "
                                     f"in [0, {MAX_VERSION}]")
        at = body.get("at", 0.0)
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            raise InvalidRecordError(f"value record at revision {revision}: at {at!r} is not a finite number")
        fields: dict[str, Any] = {}
        for name in ("name", "proposer", "reason", "session", "approval"):
            text = body.get(name, "")
            if not isinstance(text, str):
                raise InvalidRecordError(f"value record at revision {revision}: {name} must be a string")
            fields[name] = text
        evidence = body.get("evidence", {})
        if not isinstance(evidence, dict):
            raise InvalidRecordError(f"value record at revision {revision}: evidence must be an object")
        return cls(value=body.get("value"), version=version, evidence=evidence, at=float(at), revision=revision,
                   **fields)


def value_key(name: str) -> str:
    return f"value.{name}"


def spec_key(name: str) -> str:
    return f"spec.{name}"


async def open_variables_bucket(js: JetStream, bucket: str = subjects.VARIABLES_BUCKET) -> KeyValueBucket:
    """Open (creating if needed) the ``variables`` bucket, keeping ``HISTORY`` revisions per key."""
    return await streams.key_value(js, bucket, history=HISTORY)


async def load_space(kv: KeyValueBucket) -> ParameterSpace:
    """The parameter space as declared in the bucket (for tools without the code's definitions)."""
    # The keys come from the stream's own subject list, in one request. A key
    # watch (``kv.keys()``) can report "caught up" before the keys it should
    # list have arrived (its first-marker check races the server's delivery),
    # and a space loaded empty would refuse every proposal as unknown.
    prefix = f"{kv._pre}spec."  # nats-py keeps the bucket's subject prefix and stream private
    try:
        info = await kv._js.stream_info(kv._stream, subjects_filter=f"{prefix}>")
    except NATS_ERRORS as exc:
        raise VariableError(f"cannot list the declared variables: {exc!r}; is NATS reachable?") from exc
    specs = []
    for subject in sorted((info.state.subjects or {})):
        key = subject.removeprefix(kv._pre)
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):  # deleted by hand: no longer declared
            continue
        spec = parse_spec(key, entry.value)
        if spec is not None:
            specs.append(spec)
    return ParameterSpace(specs)


def parse_spec(key: str, data: bytes | None) -> Variable | None:
    """The definition stored under ``spec.<name>``, or None (logged with the key) if malformed."""
    try:
        body = codec.decode(data or b"")
        if not isinstance(body, dict):
            raise VariableValidationError("a definition is a JSON object")
        return variable_from_dict(key.removeprefix("spec."), body)
    except (codec.CodecError, VariableValidationError, TypeError, ValueError) as exc:
        log.warning("variables: skipping the definition under key %r: %s", key, exc)
        return None


class VariableStore:
    """Reads, proposes and applies changes of one parameter space.

    Args:
        kv: the variables bucket (see :func:`open_variables_bucket`).
        space: the variables' definitions.
        approval: the gate every change must pass.
    """

    def __init__(self, kv: KeyValueBucket, space: ParameterSpace, approval: Approval) -> None:
        self.kv = kv
        self.space = space
        self.approval = approval

    async def declare(self) -> None:
        """Write each definition, and each default where no value exists yet. Safe to repeat."""
        try:
            for var in self.space:
                await self.kv.put(spec_key(var.name), codec.encode(variable_to_dict(var)))
                initial = Change(var.name, var.default, 0, proposer="declare", reason="default", at=time.time())
                try:
                    await self.kv.create(value_key(var.name), _encode(initial))
                except WrongRevisionError:
                    pass  # already has a value: declaring never overwrites one
        except NATS_ERRORS as exc:
            raise VariableError(f"cannot declare variables: {exc!r}; is NATS reachable?") from exc

    async def current(self, name: str) -> Change:
        """The applied value of ``name`` (its default, version 0, if never written)."""
        var = self.space[name]
        try:
            entry = await self.kv.get(value_key(name))
        except KeyNotFoundError:
            return Change(name, var.default, 0)
        except NATS_ERRORS as exc:
            raise VariableError(f"cannot read variable {name!r}: {exc!r}") from exc
        try:
            return Change.from_entry(entry.value or b"{}", entry.revision or 0)
        except InvalidRecordError as exc:
            # Written by hand: treat it as no value, so the next change overwrites it (by CAS).
            log.warning("variables: the record under %r is malformed (%s); reading the default", value_key(name), exc)
            return Change(name, var.default, 0, revision=entry.revision or 0)

    async def get(self, name: str) -> Any:
        return (await self.current(name)).value

    async def propose(self, name: str, value: Any, *, proposer: str = "", reason: str = "") -> Change:
        """Validate, get approval, then apply a new value.

        Returns:
            the applied change.

        Raises:
            VariableValidationError: unknown variable, wrong type or out of bounds.
            ChangeRejectedError: the gate refused it (``.verdict`` says why).
            VariableConflictError: another change was applied meanwhile.
        """
        value = self.space.validate(name, value)
        now = await self.current(name)
        change = ChangeRequest(name, value, now.value, now.version, proposer, reason, uuid.uuid4().hex[:16])
        verdict = await self.approval.approve(change)
        if not verdict.approved:
            raise ChangeRejectedError(change, verdict)
        applied = Change(
            name, value, min(now.version + 1, MAX_VERSION), proposer=proposer, reason=reason, session=change.session,
            approval=verdict.reason, evidence=verdict.evidence, at=time.time(),
        )
        try:
            if now.revision:
                revision = await self.kv.update(value_key(name), _encode(applied), last=now.revision)
            else:
                revision = await self.kv.create(value_key(name), _encode(applied))
        except WrongRevisionError as exc:
            raise VariableConflictError(
                f"variable {name!r} changed while this change was approved; read it again and propose again"
            ) from exc
        except NATS_ERRORS as exc:
            raise VariableError(f"cannot apply the change of {name!r}: {exc!r}") from exc
        return Change(**{**applied.__dict__, "revision": revision})

    async def history(self, name: str) -> list[Change]:
        """Applied values of ``name``, oldest first (at most ``HISTORY``)."""
        self.space[name]
        try:
            entries = await self.kv.history(value_key(name))
        except NoKeysError:
            return []
        changes = []
        for e in entries:
            if not e.value:
                continue
            try:
                changes.append(Change.from_entry(e.value, e.revision or 0))
            except InvalidRecordError as exc:
                log.warning("variables: skipping a record of %r in its history: %s", name, exc)
        return changes


def _encode(change: Change) -> bytes:
    body = {"v": _VERSION, **change.__dict__}
    body.pop("revision")
    return codec.encode(body)
