"""Identity and TLS keys of the config, and what an Identity shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import Identity, IdentityError, identity_from_config
from broker.identity import read_password
from config import ConfigError, NatsConfig, TlsConfig, build_config


def test_a_password_in_the_config_is_refused_with_where_to_put_it() -> None:
    with pytest.raises(ConfigError, match="nats.password.*FOUNDATION_NATS_PASSWORD.*password_file"):
        build_config({"nats": {"user": "u", "password": "p"}})


@pytest.mark.parametrize(("nats", "key"), [
    ({"creds": "a.creds", "nkey_seed_file": "a.nk"}, "nats.nkey_seed_file"),
    ({"password_file": "pw"}, "nats.password_file"),
    ({"tls": {"cert": "c.pem"}}, "nats.tls.cert"),
])
def test_conflicting_identity_keys_are_refused(nats: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"nats": nats})
    assert err.value.key == key


def test_the_password_comes_from_the_environment_or_a_file_and_is_never_shown(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    cfg = NatsConfig(user="u", password_file=str(tmp_path / "pw"))
    assert read_password(cfg, {}) == "from-file"
    assert read_password(cfg, {"FOUNDATION_NATS_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(IdentityError, match="needs a password"):
        read_password(NatsConfig(user="u"), {})
    identity = identity_from_config(cfg, {})
    assert identity.connect_options() == {"user": "u", "password": "from-file"}
    assert "from-file" not in repr(identity) and identity.describe() == "user u"


def test_an_nkey_identity_reads_replies_under_its_own_prefix(tmp_path: Path) -> None:
    from broker import init_auth

    users = init_auth(tmp_path / "a", [], [])
    opts = Identity(nkey_seed_file=str(tmp_path / "a" / "client.nk"), tls=TlsConfig()).connect_options()
    assert opts["inbox_prefix"] == f"_INBOX.{users[0].public_key}"
    with pytest.raises(IdentityError, match="does not exist; run `foundation auth init`"):
        Identity(nkey_seed_file=str(tmp_path / "missing.nk")).connect_options()
