"""Shared fixtures-in-code: deterministic members and signed messages for unit tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocols.bft import Message, Tendermint, TimeoutPolicy, digest
from protocols.bft.sim import public_keys, signer_for

GROUP, INSTANCE = "g", "i0"
KEYS = public_keys(4)  # p0..p3; p2 proposes round 0 of g/i0, p3 round 1
FAST = TimeoutPolicy(propose=1.0, prevote=1.0, precommit=1.0, increment=0.5)


def machine(me: str = "p0", proposal: Any = "value-p0", **kw: Any) -> Tendermint:
    return Tendermint(group=GROUP, instance=INSTANCE, signer=signer_for(me), members=KEYS, proposal=proposal,
                      timeouts=FAST, **kw)


def signed(kind: str, sender: str, round_: int = 0, value: Any = None, d: str | None = "auto", **kw: Any) -> Message:
    """A message by ``sender``, signed with its own key."""
    if d == "auto":
        d = digest(value) if value is not None else None
    fields = dict(kind=kind, group=GROUP, instance=INSTANCE, round=round_, sender=sender, digest=d, value=value)
    fields.update(kw)
    return Message(**fields).signed(signer_for(sender))


def resigned(msg: Message, by: str, **changes: Any) -> Message:
    return replace(msg, **changes).signed(signer_for(by))
