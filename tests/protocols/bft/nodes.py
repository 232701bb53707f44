"""Member processes for integration tests: ``python -m protocols.bft run`` children."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from protocols.bft import Signer, new_seed

REPO = Path(__file__).resolve().parents[3]


def write_keys(directory: Path, ids: list[str]) -> Path:
    """Seeds and a keys.json for ``ids``; the path of keys.json."""
    keys = {}
    for member in ids:
        seed = new_seed()
        (directory / f"{member}.seed").write_bytes(seed)
        keys[member] = Signer(member, seed).public_key
    path = directory / "keys.json"
    path.write_bytes(orjson.dumps(keys))
    return path


class Node:
    """One member process; its stdout events arrive on a queue."""

    def __init__(self, member: str, proc: asyncio.subprocess.Process) -> None:
        self.id = member
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.controls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # answers to command()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, member: str, *, url: str, keys: Path, group: str, instance: str, timeout: float = 30.0,
                    extra: tuple[str, ...] = ("--wait-start",)) -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "protocols.bft", "run", "--url", url, "--id", member,
            "--seed-file", str(keys.parent / f"{member}.seed"), "--keys", str(keys), "--group", group,
            "--instance", instance, "--proposal", orjson.dumps(f"from-{member}").decode(),
            "--timeout", str(timeout), "--die-with-parent", *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
        )
        return cls(member, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = orjson.loads(line)
            await (self.controls if event["event"] == "control" else self.events).put(event)

    async def expect(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event of this kind (earlier ones of other kinds are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                got = await self.events.get()
                if got["event"] == event:
                    return got
                if got["event"] == "error":
                    raise AssertionError(f"{self.id} failed: {got['error']}")

    async def command(self, cmd: str) -> dict[str, Any]:
        """Send a control command on the node's stdin; its answer line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd}) + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(10):
            while True:
                got = await self.controls.get()
                if got["cmd"] == cmd:
                    return got

    def kill(self) -> None:
        """SIGKILL: no goodbye, no last message."""
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the node's cue to leave
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


async def verify_in_process(keys: Path, certificate: dict[str, Any], workdir: Path) -> tuple[int, bytes, bytes]:
    """``python -m protocols.bft verify``: (exit code, stdout, stderr)."""
    path = workdir / "certificate.json"
    path.write_bytes(orjson.dumps(certificate))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "protocols.bft", "verify", "--keys", str(keys), str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out, err
