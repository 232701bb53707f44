"""``python -m protocols.bft``: keys, a member process, certificate checks.

* ``keygen ID... --out DIR`` writes ``DIR/keys.json`` (id -> public key, the
  config mapping) and one ``DIR/<id>.seed`` per member (mode 0600).
* ``run ...`` runs one member (see :mod:`protocols.bft.node`).
* ``verify --keys keys.json CERT`` checks a certificate (a JSON file, ``-``
  for stdin) without trusting its source; prints the value, exit 0, or says
  why it fails, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import orjson

from protocols.bft import node
from protocols.bft.certificate import verify_certificate
from protocols.bft.errors import CertificateError
from protocols.bft.keys import Signer, new_seed

EXIT_OK = 0
EXIT_INVALID = 1


def _keygen(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    keys = {}
    for member in args.ids:
        seed = new_seed()
        path = args.out / f"{member}.seed"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(seed)
        keys[member] = Signer(member, seed).public_key
    (args.out / "keys.json").write_bytes(orjson.dumps(keys, option=orjson.OPT_INDENT_2))
    print(args.out / "keys.json")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    keys = orjson.loads(args.keys.read_bytes())
    raw = sys.stdin.buffer.read() if args.certificate == "-" else Path(args.certificate).read_bytes()
    try:
        value = verify_certificate(orjson.loads(raw), keys)
    except (CertificateError, orjson.JSONDecodeError) as exc:
        print(f"certificate rejected: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(orjson.dumps(value).decode())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocols.bft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="create member keys")
    keygen.add_argument("ids", nargs="+")
    keygen.add_argument("--out", type=Path, required=True)
    node.add_arguments(sub.add_parser("run", help="run one member"))
    verify = sub.add_parser("verify", help="check a certificate")
    verify.add_argument("--keys", type=Path, required=True, help="JSON object: member id -> public key")
    verify.add_argument("certificate", help="certificate JSON file, or - for stdin")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "verify":
        return _verify(args)
    return asyncio.run(node.run(args))


if __name__ == "__main__":
    sys.exit(main())
