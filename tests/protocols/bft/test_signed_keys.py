"""Byzantine membership from an operator-signed key file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from broker import init_auth
from protocols.bft import (
    MembershipError,
    Signer,
    load_signed_key_directory,
    new_seed,
    operator_public_key,
    sign_key_file,
)
from supervisor.harness import FOUNDATION, REPO

MEMBERS = {f"p{i}": Signer(f"p{i}", new_seed()).public_key for i in range(4)}
OPERATOR = Signer("operator", new_seed())


def test_a_signed_file_loads_only_under_a_trusted_key_and_unchanged() -> None:
    doc = sign_key_file({"keys": MEMBERS, "groups": {"variables": ["p0", "p1", "p2", "p3"]}}, OPERATOR)
    directory = load_signed_key_directory(doc, [OPERATOR.public_key])
    assert directory.members("variables") == MEMBERS
    with pytest.raises(MembershipError, match="not by a trusted operator key"):
        load_signed_key_directory(doc, [Signer("other", new_seed()).public_key])
    with pytest.raises(MembershipError, match="not by a trusted operator key"):
        load_signed_key_directory({"keys": MEMBERS}, [OPERATOR.public_key])  # unsigned
    swapped = {**doc, "keys": {**MEMBERS, "p3": Signer("p3", new_seed()).public_key}}  # a member's key replaced
    with pytest.raises(MembershipError, match="does not verify"):
        load_signed_key_directory(swapped, [OPERATOR.public_key])
    widened = {**doc, "groups": {"variables": ["p0", "p1", "p2", "p3", "p4"]}}
    with pytest.raises(MembershipError, match="does not verify"):
        load_signed_key_directory(widened, [OPERATOR.public_key])
    impostor = Signer("operator", new_seed())
    resigned = {**sign_key_file(doc, impostor), "signed_by": OPERATOR.public_key}  # claims the operator
    with pytest.raises(MembershipError, match="does not verify"):
        load_signed_key_directory(resigned, [OPERATOR.public_key])


def test_auth_sign_keys_signs_with_the_operator_seed_of_auth_init(tmp_path: Path) -> None:
    init_auth(tmp_path / "auth", ["n1"], [])
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(MEMBERS))
    done = subprocess.run(
        [FOUNDATION, "auth", "sign-keys", str(keys), "--dir", str(tmp_path / "auth")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    signed = tmp_path / "keys.signed.json"
    directory = load_signed_key_directory(signed, [operator_public_key(tmp_path / "auth")])
    assert directory.members("anything") == MEMBERS


class _Entries:
    """The registry's cache as RegistryKeyDirectory reads it."""

    def __init__(self, entries: list) -> None:
        self._entries = entries

    def entries(self) -> list:
        return list(self._entries)

    def find(self, *, capability: str | None = None) -> list:
        return [e for e in self._entries if capability is None or capability in e.capabilities]


def test_registry_members_count_only_with_the_key_the_signed_file_gives_them() -> None:
    import os as _os

    from protocols.bft import RegistryKeyDirectory, key_metadata
    from protocols.registry import Entry

    def entry(pid: str, key: str) -> Entry:
        return Entry.new(pid, pool="p", node="n1", pid=_os.getpid(), capabilities=["p"],
                         metadata=key_metadata(key, ["variables"]))

    signed = load_signed_key_directory(sign_key_file({"keys": MEMBERS}, OPERATOR), [OPERATOR.public_key])
    impostor = Signer("p3", new_seed()).public_key  # p3's entry, rewritten by p3 itself with a key of its choosing
    live = _Entries([entry("p0", MEMBERS["p0"]), entry("p1", MEMBERS["p1"]), entry("p2", MEMBERS["p2"]),
                     entry("p3", impostor), entry("p9", Signer("p9", new_seed()).public_key)])
    assert RegistryKeyDirectory(live).members("variables")["p3"] == impostor  # the registry alone trusts the entry
    trusted = RegistryKeyDirectory(live, signed=signed).members("variables")
    assert trusted == {p: MEMBERS[p] for p in ("p0", "p1", "p2")}  # the impostor key and the stranger left out
