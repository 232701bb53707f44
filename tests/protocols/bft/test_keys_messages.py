"""Identities, canonical bytes and wire parsing."""

from __future__ import annotations

import orjson
import pytest

from protocols.bft import (
    InvalidKeyError,
    MalformedMessageError,
    MembershipError,
    Signer,
    StaticKeyDirectory,
    Tendermint,
    canonical,
    digest,
    keys,
    new_seed,
)
from protocols.bft.messages import PREVOTE, PROPOSAL, decode
from tests.protocols.bft.helpers import GROUP, INSTANCE, KEYS, signed


def test_signature_verifies_under_the_public_key_only() -> None:
    signer = Signer("a", new_seed())
    sig = signer.sign(b"payload")
    assert keys.verify(signer.public_key, b"payload", sig)
    assert not keys.verify(signer.public_key, b"payload!", sig)
    assert not keys.verify(Signer("b", new_seed()).public_key, b"payload", sig)


def test_bad_seed_and_bad_public_key_are_named() -> None:
    with pytest.raises(InvalidKeyError, match="not a valid nkeys seed"):
        Signer("a", b"SUNOTASEED")
    good = Signer("a", new_seed()).public_key
    broken = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    with pytest.raises(InvalidKeyError, match="checksum|prefix"):
        keys.public_key(broken)
    with pytest.raises(InvalidKeyError, match="base32"):
        keys.public_key("not base32 !")
    assert not keys.verify(broken, b"x", b"\0" * 64)


def test_directory_checks_keys_and_group_membership() -> None:
    directory = StaticKeyDirectory(KEYS, groups={"pair": ["p0", "p1"]})
    assert directory.members("anything") == KEYS
    assert set(directory.members("pair")) == {"p0", "p1"}
    with pytest.raises(MembershipError, match="without a public key"):
        StaticKeyDirectory(KEYS, groups={"bad": ["p0", "ghost"]})
    with pytest.raises(InvalidKeyError):
        StaticKeyDirectory({"p0": "UNOTAKEY"})


def test_machine_refuses_a_signer_whose_key_the_group_does_not_hold() -> None:
    with pytest.raises(MembershipError, match="not a member"):
        Tendermint(group=GROUP, instance=INSTANCE, signer=Signer("p0", new_seed()), members=KEYS, proposal=1)


def test_canonical_bytes_do_not_depend_on_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"y": 2, "x": 1}]}) == canonical({"a": [1, {"x": 1, "y": 2}], "b": 1})
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    with pytest.raises(TypeError):
        canonical({1: "non-string key"})


def test_wire_round_trip_keeps_the_signature_valid() -> None:
    msg = signed(PROPOSAL, "p2", value={"k": [1, 2.5, "x"]}, valid_round=-1)
    back = decode(msg.encode())
    assert back == msg
    assert keys.verify(KEYS["p2"], back.signing_bytes(), back.sig)
    # Re-encoded with another key order, the body still verifies.
    shuffled = orjson.dumps(dict(reversed(list(orjson.loads(msg.encode()).items()))))
    again = decode(shuffled)
    assert keys.verify(KEYS["p2"], again.signing_bytes(), again.sig)


def test_unknown_fields_are_signed_and_kept() -> None:
    msg = signed(PREVOTE, "p1", d=digest("v"), extra={"future": 1})
    back = decode(msg.encode())
    assert back.extra == {"future": 1}
    assert keys.verify(KEYS["p1"], back.signing_bytes(), back.sig)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2], "not a JSON object"),
        ({"v": 2}, "unsupported message version"),
        ({"v": 1, "kind": "commit"}, "unknown message kind"),
        ({"v": 1, "kind": "prevote", "group": "", "instance": "i", "sender": "s", "round": 0}, "group"),
        ({"v": 1, "kind": "prevote", "group": "g", "instance": "i", "sender": "s", "round": -1}, "round"),
        ({"v": 1, "kind": "prevote", "group": "g", "instance": "i", "sender": "s", "round": 0, "digest": "ab"},
         "digest"),
        ({"v": 1, "kind": "proposal", "group": "g", "instance": "i", "sender": "s", "round": 0, "digest": None},
         "must name the digest"),
        ({"v": 1, "kind": "proposal", "group": "g", "instance": "i", "sender": "s", "round": 0,
          "digest": "0" * 64, "valid_round": 0}, "valid_round"),
        ({"v": 1, "kind": "decision", "group": "g", "instance": "i", "sender": "s", "round": 0,
          "digest": "0" * 64}, "certificate"),
    ],
)
def test_malformed_messages_are_named(obj: object, match: str) -> None:
    with pytest.raises(MalformedMessageError, match=match):
        decode(orjson.dumps(obj))


def test_not_json_and_oversized_are_malformed() -> None:
    with pytest.raises(MalformedMessageError, match="not JSON"):
        decode(b"{nope")
    with pytest.raises(MalformedMessageError, match="exceeds"):
        decode(b" " * (1 << 20 + 1))
