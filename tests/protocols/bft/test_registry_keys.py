"""Public keys from the registry (entries' metadata) and from config files, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import os

import orjson
import pytest

from broker import connect
from protocols.bft import (
    METADATA_KEY,
    CertificateError,
    InvalidKeyError,
    MembershipError,
    Participant,
    RegistryKeyDirectory,
    Signer,
    key_metadata,
    load_key_directory,
    new_seed,
    verify_certificate,
)
from protocols.bft.__main__ import main as bft_main
from protocols.registry import Entry, open_registry

IDS = ["vote.0", "vote.1", "vote.2", "vote.3"]


def _entry(id: str, metadata: dict, capabilities: tuple[str, ...] = ("vote",)) -> Entry:
    return Entry.new(id, pool=id.split(".")[0], node="n1", pid=os.getpid(), capabilities=capabilities,
                     metadata=metadata)


def test_metadata_fragment_names_key_and_groups() -> None:
    signer = Signer("vote.0", new_seed())
    assert key_metadata(signer.public_key, ["pricing", "variables", "pricing"]) == {
        METADATA_KEY: {"key": signer.public_key, "groups": ["pricing", "variables"]}
    }
    with pytest.raises(InvalidKeyError, match="is not base32|not an nkeys public key|checksum"):
        key_metadata("UNOTAKEY", ["g"])


async def test_members_come_from_entries_that_advertise_the_group(nc, nats_url) -> None:
    signers = {pid: Signer(pid, new_seed()) for pid in IDS}
    other = Signer("audit.0", new_seed())
    reader_nc = await connect(nats_url, name="reader")
    async with open_registry(nc) as writer, open_registry(reader_nc) as reader:
        for pid, s in signers.items():
            await writer.register(_entry(pid, {**key_metadata(s.public_key, ["g"]), "gpu": True}))
        await writer.register(_entry("audit.0", key_metadata(other.public_key, ["audit"]), ("audit",)))
        await writer.register(_entry("plain.0", {"gpu": False}))
        await writer.register(_entry("broken.0", {METADATA_KEY: {"key": "UBROKEN", "groups": ["g"]}}))
        await writer.register(_entry("shapeless.0", {METADATA_KEY: ["g"]}))
        await reader.wait_for(lambda cache: len(cache) == 8, 5.0)

        directory = RegistryKeyDirectory(reader)
        assert directory.members("g") == {pid: s.public_key for pid, s in signers.items()}
        assert directory.members("audit") == {"audit.0": other.public_key}
        assert RegistryKeyDirectory(reader, capability="audit").members("audit") == {"audit.0": other.public_key}
        with pytest.raises(MembershipError, match="group 'g' has 0 members in the registry with capability 'audit'"):
            RegistryKeyDirectory(reader, capability="audit").members("g")
        with pytest.raises(MembershipError, match=r"group 'nobody' has 0 members.*metadata.bft"):
            directory.members("nobody")
        with pytest.raises(MembershipError, match="has 4 members in the registry, at least 5 needed"):
            RegistryKeyDirectory(reader, min_members=5).members("g")

        # Membership follows the registry live: an agent that leaves drops out.
        await writer.unregister("vote.3")
        await reader.wait_for(lambda cache: "vote.3" not in cache, 5.0)
        assert sorted(directory.members("g")) == ["vote.0", "vote.1", "vote.2"]
    await reader_nc.close()


@contextlib.asynccontextmanager
async def _registered_members(nats_url: str, seeds: dict[str, bytes]):
    """One connection, registry and participant per member, keys advertised through the registry."""
    registries, parts = [], []
    async with contextlib.AsyncExitStack() as stack:
        for pid, seed in seeds.items():
            conn = await connect(nats_url, name=f"bft-{pid}")
            stack.push_async_callback(conn.close)
            registry = await stack.enter_async_context(open_registry(conn))
            signer = Signer(pid, seed)
            await registry.register(_entry(pid, key_metadata(signer.public_key, ["g"])))
            part = Participant(conn, signer, RegistryKeyDirectory(registry), rebroadcast_interval=0.05)
            stack.push_async_callback(part.close)
            registries.append(registry)
            parts.append(part)
        # Every member must see the whole group before deciding: n fixes the quorum.
        for registry in registries:
            await registry.wait_for(lambda cache: all(pid in cache for pid in seeds), 5.0)
        yield parts


async def test_members_resolved_from_the_registry_decide_and_a_fresh_reader_verifies(nats_url, nc) -> None:
    seeds = {pid: new_seed() for pid in IDS}
    async with _registered_members(nats_url, seeds) as parts:
        results = await asyncio.gather(*(p.decide("g", {"from": p.id}, 10, instance="k1") for p in parts))
        assert len({orjson.dumps(v) for v, _ in results}) == 1
        cert = results[0][1].to_dict()
        async with open_registry(nc) as fresh:
            keys = RegistryKeyDirectory(fresh).members("g")
            assert verify_certificate(cert, keys) == results[0][0]
            # The same certificate against another group's keys proves nothing.
            impostors = {pid: Signer(pid, new_seed()).public_key for pid in IDS}
            with pytest.raises(CertificateError, match="does not verify"):
                verify_certificate(cert, impostors)


def test_keys_file_written_by_keygen_loads_as_a_directory(tmp_path, capsys) -> None:
    assert bft_main(["keygen", *IDS, "--out", str(tmp_path)]) == 0
    written = orjson.loads((tmp_path / "keys.json").read_bytes())
    directory = load_key_directory(tmp_path / "keys.json")
    assert directory.members("any") == written and sorted(written) == IDS
    seed = (tmp_path / "vote.2.seed").read_bytes()
    assert Signer("vote.2", seed).public_key == directory.members("g")["vote.2"]


def test_config_shaped_mapping_with_groups() -> None:
    keys = {pid: Signer(pid, new_seed()).public_key for pid in IDS}
    directory = load_key_directory({"keys": keys, "groups": {"small": ["vote.0", "vote.1"]}})
    assert directory.members("small") == {p: keys[p] for p in ("vote.0", "vote.1")}
    assert directory.members("variables") == keys


def test_bad_key_sources_are_refused_clearly(tmp_path) -> None:
    keys = {pid: Signer(pid, new_seed()).public_key for pid in IDS}
    with pytest.raises(MembershipError, match="cannot read the key file"):
        load_key_directory(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MembershipError, match="cannot read the key file"):
        load_key_directory(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(MembershipError, match="must be a JSON object, got list"):
        load_key_directory(str(tmp_path / "list.json"))
    with pytest.raises(MembershipError, match=r"member ids \['vote.9'\] do not map to a public key string"):
        load_key_directory({**keys, "vote.9": 42})
    with pytest.raises(InvalidKeyError):
        load_key_directory({**keys, "vote.9": "UNOTAKEY"})
    with pytest.raises(MembershipError, match="'groups' must map each group to a list"):
        load_key_directory({"keys": keys, "groups": {"g": "vote.0"}})
    with pytest.raises(MembershipError, match=r"group 'g' names ids without a public key: \['ghost'\]"):
        load_key_directory({"keys": keys, "groups": {"g": ["vote.0", "ghost"]}})
