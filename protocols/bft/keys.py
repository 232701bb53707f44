"""Ed25519 identities through ``nkeys``: signing keys, public keys, the key directory.

A participant signs with an nkeys *user* seed (``SU…``); everyone else knows it
by its public key (``U…``). ``nkeys`` 0.2.1 builds key pairs only from seeds,
so a public-key-only verifier decodes the ``U…`` string itself (prefix byte and
CRC-16 checked with ``nkeys``'s own helpers) and verifies with the Ed25519 key
of PyNaCl, the library ``nkeys`` signs with.

Where public keys come from is pluggable (:class:`KeyDirectory`): config today,
the agent registry later.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Protocol

import nacl.exceptions
import nacl.signing
import nkeys

from protocols.bft.errors import InvalidKeyError, MembershipError


class KeyDirectory(Protocol):
    """Who may take part in a group, and their public keys."""

    def members(self, group: str) -> Mapping[str, str]:
        """Participant id -> nkeys public key (``U…``) for every member of ``group``.

        Raises:
            MembershipError: the group is unknown.
        """
        ...


class StaticKeyDirectory:
    """A :class:`KeyDirectory` fixed by configuration.

    Args:
        keys: participant id -> public key; the members of every group not
            named in ``groups``.
        groups: optional group -> list of ids, for groups that are a subset.
    """

    def __init__(self, keys: Mapping[str, str], groups: Mapping[str, list[str]] | None = None) -> None:
        for key in keys.values():
            public_key(key)  # fail at configuration time, not on the first message
        self._keys = dict(keys)
        self._groups = {g: list(ids) for g, ids in (groups or {}).items()}
        for group, ids in self._groups.items():
            unknown = set(ids) - set(self._keys)
            if unknown:
                raise MembershipError(f"group {group!r} names ids without a public key: {sorted(unknown)}")

    def members(self, group: str) -> Mapping[str, str]:
        ids = self._groups.get(group)
        if ids is None:
            return dict(self._keys)
        return {pid: self._keys[pid] for pid in ids}


class Signer:
    """A participant's signing identity.

    Args:
        pid: participant id, as the key directory names it.
        seed: nkeys user seed (``SU…``) as bytes or str.

    Raises:
        InvalidKeyError: the seed is not a valid nkeys seed.
    """

    def __init__(self, pid: str, seed: bytes | str) -> None:
        raw = seed.encode() if isinstance(seed, str) else bytes(seed)
        try:
            self._pair = nkeys.from_seed(bytearray(raw))
            self.public_key: str = self._pair.public_key.decode()
        except (nkeys.NkeysError, binascii.Error, ValueError) as exc:
            raise InvalidKeyError(f"seed for {pid!r} is not a valid nkeys seed: {exc}") from exc
        self.id = pid

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._pair.sign(data)


def new_seed() -> bytes:
    """A fresh random nkeys user seed (``SU…``)."""
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def seed_from_bytes(raw32: bytes) -> bytes:
    """A user seed from 32 given bytes: deterministic identities for simulations."""
    return nkeys.encode_seed(raw32, nkeys.PREFIX_BYTE_USER)


@lru_cache(maxsize=4096)
def public_key(encoded: str) -> nacl.signing.VerifyKey:
    """Decode an nkeys public key (``U…``) into an Ed25519 verifying key.

    Raises:
        InvalidKeyError: bad base32, bad prefix byte or bad checksum.
    """
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidKeyError(f"public key {encoded!r} is not base32: {exc}") from exc
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise InvalidKeyError(f"public key {encoded!r} is not an nkeys public key (prefix or length)")
    if nkeys.crc16(raw[:33]).to_bytes(2, "little") != raw[33:]:
        raise InvalidKeyError(f"public key {encoded!r} fails its checksum; was it copied whole?")
    return nacl.signing.VerifyKey(raw[1:33])


def verify(encoded_key: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``encoded_key``'s Ed25519 signature of ``data``."""
    try:
        public_key(encoded_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    except InvalidKeyError:
        return False
    return True
