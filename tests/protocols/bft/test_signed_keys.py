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
