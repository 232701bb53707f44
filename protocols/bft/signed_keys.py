"""Group membership from a key file signed by the operator: the default source of members' keys.

Why not the registry: with the permissions of ``foundation auth init``
every worker writes its own registry entry, so an entry's advertised key
says only what that worker claims. A :class:`RegistryKeyDirectory` is
sound only where nodes alone write the registry. A signed key file is sound
everywhere: its members and keys are the operator's word, and a process
that loads it checks the operator's signature against the operator public
key it was given (``operator.pub`` from ``foundation auth init``).

File format (JSON)::

    {"keys": {id: "U…"}, "groups": {group: [id, …]},    # or the {id: key} shape of keygen
     "signed_by": "U… (the operator's public key)", "sig": "<base64 Ed25519 over the canonical rest>"}

``foundation auth sign-keys KEYS.json`` writes it with the operator's seed.

Invariants (tests/protocols/bft/test_signed_keys.py): a file loads only if
its signature verifies under one of the trusted keys; changing any member,
key or group, or signing with another key, makes it refuse to load.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from protocols.bft.errors import MembershipError
from protocols.bft.keys import Signer, StaticKeyDirectory, verify
from protocols.bft.messages import canonical
from protocols.bft.registry_keys import load_key_directory, read_key_file

_SIGNATURE_FIELDS = ("signed_by", "sig")


def sign_key_file(document: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """``document`` (a key directory in either shape) with the operator's signature added.

    Raises:
        MembershipError: the document is no key directory.
    """
    body = {k: v for k, v in document.items() if k not in _SIGNATURE_FIELDS}
    load_key_directory(body)  # refuse to sign what would not load
    sig = signer.sign(canonical({**body, "signed_by": signer.public_key}))
    return {**body, "signed_by": signer.public_key, "sig": base64.b64encode(sig).decode()}


def load_signed_key_directory(source: Mapping[str, Any] | str | Path, trusted: Iterable[str]) -> StaticKeyDirectory:
    """The key directory of a signed key file, if one of ``trusted`` signed it.

    Args:
        source: the file, or its parsed content.
        trusted: operator public keys (``U…``) whose signature is accepted.

    Raises:
        MembershipError: unreadable, unsigned, signed by an untrusted key, or the signature does not verify.
    """
    source = read_key_file(source)
    signed_by = source.get("signed_by")
    if signed_by not in set(trusted):
        raise MembershipError(
            f"key file signed by {signed_by!r}, not by a trusted operator key; sign it with `foundation auth sign-keys`"
        )
    body = {k: v for k, v in source.items() if k != "sig"}
    try:
        sig = base64.b64decode(source.get("sig", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        sig = b""
    if not sig or not verify(str(signed_by), canonical(body), sig):
        raise MembershipError("the key file's signature does not verify: it was changed after signing, or is forged")
    return load_key_directory({k: v for k, v in body.items() if k != "signed_by"})


def operator_public_key(auth_dir: str | Path) -> str:
    """The operator public key ``foundation auth init`` wrote to ``<dir>/operator.pub``.

    Raises:
        MembershipError: the file is missing.
    """
    path = Path(auth_dir) / "operator.pub"
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise MembershipError(f"cannot read the operator public key {path}: {exc.strerror}; run `foundation auth init`") from exc
