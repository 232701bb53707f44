"""Children of the supervision tree that are OS processes.

A child has a stable id (a slot, ``echo.0``) and, while it runs, a pid.
``start()`` returns only once the child is *ready*: a worker says so on a
pipe after binding to its consumer; an external command is probed (for
nats-server, its ports file and ``/healthz``). ``stop()`` sends SIGTERM to the
child's process group, waits ``shutdown`` seconds, then SIGKILLs the group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from config.errors import SupervisorError
from supervisor.forkserver import fork_context
from workers.exitcodes import EXIT_HANDLER_IMPORT, describe
from workers.process import ERROR_PREFIX, READY

RESTART_TYPES = ("permanent", "transient", "temporary")


@dataclass(frozen=True)
class ExitInfo:
    """How a child ended. ``code`` < 0 is the signal number, negated."""

    code: int
    reason: str = ""  # why it ended, when known (our own stop, an error line)
    requested: bool = False  # we asked it to stop

    @property
    def normal(self) -> bool:
        return self.code == 0

    @property
    def signal_name(self) -> str | None:
        """``"SIGKILL"`` when a signal ended the child, else None."""
        if self.code >= 0:
            return None
        try:
            return signal.Signals(-self.code).name
        except ValueError:
            return f"signal {-self.code}"

    def describe(self) -> str:
        return describe(self.code) + (f": {self.reason}" if self.reason else "")


class ChildStartError(SupervisorError):
    """A child could not be started.

    Attributes:
        child_id: the child.
        fatal: restarting cannot help (e.g. its handler does not import).
    """

    def __init__(self, child_id: str, why: str, *, fatal: bool = False, exit: ExitInfo | None = None) -> None:
        self.child_id = child_id
        self.fatal = fatal
        self.exit = exit
        super().__init__(f"{child_id} failed to start: {why}")


class Child(Protocol):
    """What the supervisor needs of a child (a process or a nested supervisor)."""

    id: str
    restart: str
    shutdown: float

    async def start(self) -> None: ...
    async def wait(self) -> ExitInfo: ...
    async def stop(self, reason: str = "") -> ExitInfo: ...

    @property
    def running(self) -> bool: ...


Probe = Callable[[int, Callable[[], bool]], None]  # blocking readiness check, run in a thread


class ProcessChild:
    """A child process forked from the fork server.

    Args:
        id: stable slot id.
        target: ``target(*args(), channel)`` runs in the child; it must write
            ``ready`` (or ``error:<why>``) on ``channel`` unless ``probe`` is given.
        args: called at every start, so a restarted child gets fresh arguments.
        restart: ``permanent``, ``transient`` or ``temporary``.
        shutdown: seconds between SIGTERM and SIGKILL.
        start_timeout: seconds the child has to become ready.
        probe: a blocking readiness check ``probe(pid, alive)`` used instead
            of the pipe (external commands).
        on_exit: called with ``(child, pid, ExitInfo)`` for every exit.
    """

    def __init__(
        self,
        id: str,
        target: Callable[..., Any],
        args: Callable[[], tuple[Any, ...]] = tuple,
        *,
        restart: str = "permanent",
        shutdown: float = 10.0,
        start_timeout: float = 30.0,
        probe: Probe | None = None,
        on_exit: Callable[["ProcessChild", int, ExitInfo], None] | None = None,
    ) -> None:
        if restart not in RESTART_TYPES:
            raise SupervisorError(f"{id}: restart must be one of {RESTART_TYPES}, got {restart!r}")
        self.id = id
        self.target = target
        self.args = args
        self.restart = restart
        self.shutdown = shutdown
        self.start_timeout = start_timeout
        self.probe = probe
        self.on_exit = on_exit
        self.proc: Any = None
        self.pid: int | None = None
        self.started_at = 0.0
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._stop_reason: str | None = None

    @property
    def running(self) -> bool:
        return self._exit is not None and not self._exit.done()

    async def start(self) -> None:
        if self.running:
            raise SupervisorError(f"{self.id} is already running (pid {self.pid})")
        loop = asyncio.get_running_loop()
        ctx = fork_context()
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=self.target, args=(*self.args(), writer), name=self.id, daemon=False)
        self._stop_reason = None
        try:
            proc.start()
        finally:
            writer.close()
        self.proc, self.pid, self.started_at = proc, proc.pid, time.monotonic()
        self._exit = loop.create_future()
        loop.add_reader(proc.sentinel, self._on_sentinel, proc)
        try:
            await asyncio.wait_for(self._await_ready(reader), self.start_timeout)
        except asyncio.TimeoutError:
            await self.stop("not ready in time")
            raise ChildStartError(self.id, f"not ready after {self.start_timeout:.0f}s") from None
        finally:
            reader.close()

    async def _await_ready(self, reader: Any) -> None:
        assert self._exit is not None
        if self.probe is not None:
            pid, exit_fut = self.pid, self._exit
            try:
                await asyncio.to_thread(self.probe, pid, lambda: not exit_fut.done())
            except Exception as exc:
                info = await self.stop(f"readiness probe failed: {exc}") if self.running else exit_fut.result()
                raise ChildStartError(self.id, str(exc), exit=info) from exc
            return
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(reader.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(reader.fileno())
        try:
            message = reader.recv_bytes()
        except (EOFError, OSError):
            message = b""  # died before saying anything
        if message == READY:
            return
        why = message[len(ERROR_PREFIX):].decode(errors="replace") if message.startswith(ERROR_PREFIX) else ""
        info = await self.wait()
        raise ChildStartError(
            self.id,
            why or f"exited during start-up ({info.describe()})",
            fatal=info.code == EXIT_HANDLER_IMPORT,
            exit=info,
        )

    def _on_sentinel(self, proc: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(proc.sentinel)
        code = proc.exitcode
        if code is None:  # spurious wake-up; keep watching
            loop.add_reader(proc.sentinel, self._on_sentinel, proc)
            return
        info = ExitInfo(code=code, reason=self._stop_reason or "", requested=self._stop_reason is not None)
        pid = proc.pid
        proc.close()
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(info)
        if self.on_exit is not None:
            self.on_exit(self, pid, info)

    async def wait(self) -> ExitInfo:
        if self._exit is None:
            raise SupervisorError(f"{self.id} was never started")
        return await asyncio.shield(self._exit)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child (not its group)."""
        if self.running and self.pid:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _kill_group(self) -> None:
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.signal(signal.SIGKILL)  # not yet a group leader

    async def stop(self, reason: str = "stopped") -> ExitInfo:
        """SIGTERM, wait ``shutdown`` seconds, then SIGKILL the process group."""
        if not self.running:
            return self._exit.result() if self._exit is not None else ExitInfo(0, reason, True)
        self._stop_reason = reason
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), self.shutdown)
        except asyncio.TimeoutError:
            self._stop_reason = f"{reason}; killed after {self.shutdown:g}s shutdown"
            self._kill_group()
            return await self.wait()

    def kill(self, reason: str = "") -> None:
        """SIGKILL the child's group at once (fault injection, emergencies)."""
        if self.running:
            if reason:
                self._stop_reason = reason
            self._kill_group()


def exec_command(argv: list[str], log_path: str | None, channel: Any) -> None:
    """Fork-server target that becomes an external command (e.g. nats-server)."""
    from broker import die_with_parent

    os.setpgid(0, 0)
    die_with_parent()
    channel.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log_path else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the fork server's pipes stay behind
    os.execv(argv[0], argv)


