"""Where a group's public keys come from: the agent registry, or configuration.

Registry
========
A member advertises itself in its registry entry's metadata, under ``bft``::

    "metadata": {"bft": {"key": "UABC…", "groups": ["variables", "pricing"]}}

* ``key``: the member's nkeys public key (``U…``), i.e. ``Signer.public_key``;
* ``groups``: the Byzantine groups it belongs to.

Its participant id is its registry id (the slot id, e.g. ``tuner.2``), which
is what its :class:`~protocols.bft.keys.Signer` must be named.
:func:`key_metadata` builds the fragment to put into ``Entry.metadata``.
:class:`RegistryKeyDirectory` answers ``members(group)`` from the registry's
local cache (a dict scan, no I/O), so membership follows the registry live:
an agent that exits or whose node is lost drops out of the group.

Every process reads the same bucket, so all of them exclude the same
entries: an entry whose ``bft`` metadata is malformed or whose key is not a
valid nkeys public key is left out (and logged), never counted as a member.
Membership must be stable while an instance runs (each member reads it once
when it joins); register a group's members before the first decision, and
keep a certificate's verifying keys (``members(group)`` at the time) if it
must be re-checked after the group changes.

Configuration
=============
:func:`load_key_directory` builds a :class:`~protocols.bft.keys.StaticKeyDirectory`
from the ``keys.json`` that ``python -m protocols.bft keygen`` writes
(``{id: key}``: every id is a member of every group), or from a
config-shaped mapping ``{"keys": {id: key}, "groups": {group: [id, ...]}}``
for groups that are subsets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from protocols.bft.errors import InvalidKeyError, MembershipError
from protocols.bft.keys import KeyDirectory, StaticKeyDirectory, public_key
from protocols.registry import Entry

log = logging.getLogger("foundation.protocols.bft")

METADATA_KEY = "bft"
"""The ``Entry.metadata`` key under which a member advertises its key and groups."""


class _EntrySource(Protocol):
    """What the directory needs of a registry: its cached entries (``Registry`` has both)."""

    def entries(self) -> list[Entry]: ...

    def find(self, *, capability: str | None = None) -> list[Entry]: ...


def key_metadata(public: str, groups: Iterable[str]) -> dict[str, Any]:
    """The metadata fragment advertising a member: merge it into ``Entry.metadata``.

    Args:
        public: the member's nkeys public key (``Signer.public_key``).
        groups: the Byzantine groups it belongs to.

    Raises:
        InvalidKeyError: ``public`` is not an nkeys public key.
    """
    public_key(public)  # refuse at registration, not on every reader's first look-up
    return {METADATA_KEY: {"key": public, "groups": sorted(set(groups))}}


def _advertised(entry: Entry) -> tuple[str, list[str]] | None:
    """(key, groups) an entry advertises, or None if it advertises nothing usable."""
    info = entry.metadata.get(METADATA_KEY)
    if info is None:
        return None
    key = info.get("key") if isinstance(info, Mapping) else None
    groups = info.get("groups") if isinstance(info, Mapping) else None
    if not isinstance(key, str) or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        log.warning("registry entry %r: metadata.%s must be {'key': 'U…', 'groups': [...]}; left out",
                    entry.id, METADATA_KEY)
        return None
    try:
        public_key(key)
    except InvalidKeyError as exc:
        log.warning("registry entry %r advertises an unusable key; left out: %s", entry.id, exc)
        return None
    return key, groups


class RegistryKeyDirectory:
    """A :class:`~protocols.bft.keys.KeyDirectory` read from registry entries' metadata.

    Args:
        registry: an open :class:`~protocols.registry.Registry` (its cache is read).
        capability: only entries with this capability count (``None``: all).
        min_members: fewer advertised members than this is an error rather
            than a smaller group (guards against deciding before the group
            has assembled, with a quorum of a partial membership).
        signed: the operator-signed directory (:mod:`protocols.bft.signed_keys`)
            whose keys alone are trusted: an entry counts only if it advertises
            the very key the file gives its id for the group. Where agents
            write their own entries (the permissions of ``foundation auth
            init``) an advertised key is only the agent's word; with ``signed``
            the registry says who is live and the operator's file which key is
            theirs.
    """

    def __init__(self, registry: _EntrySource, *, capability: str | None = None, min_members: int = 1,
                 signed: KeyDirectory | None = None) -> None:
        self.registry = registry
        self.capability = capability
        self.min_members = min_members
        self.signed = signed

    def members(self, group: str) -> Mapping[str, str]:
        """Registry id -> public key of every live entry advertising ``group``.

        Raises:
            MembershipError: fewer than ``min_members`` entries advertise the group.
        """
        entries = self.registry.entries() if self.capability is None else self.registry.find(capability=self.capability)
        trusted = self.signed.members(group) if self.signed is not None else None
        out: dict[str, str] = {}
        for entry in entries:
            advertised = _advertised(entry)
            if advertised is None or group not in advertised[1]:
                continue
            if trusted is not None and trusted.get(entry.id) != advertised[0]:
                log.warning("bft: %s advertises a key for %r that the signed key file does not give it; left out",
                            entry.id, group)
                continue
            out[entry.id] = advertised[0]
        if len(out) < max(self.min_members, 1):
            where = f" with capability {self.capability!r}" if self.capability else ""
            raise MembershipError(
                f"group {group!r} has {len(out)} members in the registry{where}, at least {max(self.min_members, 1)} "
                f"needed; members advertise metadata.{METADATA_KEY} = {{'key': 'U…', 'groups': [{group!r}]}}"
            )
        return dict(sorted(out.items()))


def read_key_file(source: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """The JSON object of a key file (or ``source`` itself when it is already one).

    Raises:
        MembershipError: the file cannot be read or holds no JSON object.
    """
    if isinstance(source, (str, Path)):
        try:
            source = orjson.loads(Path(source).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise MembershipError(f"cannot read the key file {str(source)!r}: {exc}") from exc
    if not isinstance(source, Mapping):
        raise MembershipError(f"a key directory must be a JSON object, got {type(source).__name__}")
    return source


def load_key_directory(source: Mapping[str, Any] | str | Path) -> StaticKeyDirectory:
    """A static directory from a keys file or a config-shaped mapping.

    Args:
        source: a path to a JSON file, or its content: either ``{id: key}``
            (every id in every group, as ``keygen`` writes it) or
            ``{"keys": {id: key}, "groups": {group: [id, ...]}}``.

    Raises:
        MembershipError: the file cannot be read, or the mapping has neither shape.
        InvalidKeyError: a key is not an nkeys public key.
    """
    source = read_key_file(source)
    keys: Any = source
    groups: Any = None
    if isinstance(source.get("keys"), Mapping):
        keys, groups = source["keys"], source.get("groups")
        if groups is not None and not (
            isinstance(groups, Mapping) and all(isinstance(ids, list) for ids in groups.values())
        ):
            raise MembershipError("'groups' must map each group to a list of member ids")
    bad = sorted(str(pid) for pid, key in keys.items() if not isinstance(key, str))
    if bad:
        raise MembershipError(
            f"member ids {bad} do not map to a public key string; use {{id: 'U…'}} "
            "or {'keys': {id: 'U…'}, 'groups': {group: [id, ...]}}"
        )
    return StaticKeyDirectory(keys, groups)
