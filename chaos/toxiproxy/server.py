"""Running a toxiproxy: ours in a thread, a real ``toxiproxy-server``, or one already up.

:func:`open_toxiproxy` is what the chaos suite uses: ``TOXIPROXY_URL`` when
set (a toxiproxy someone runs), else a ``toxiproxy-server`` from ``PATH``
started on a free port, else :class:`ToxiproxyServer` (this package's
server, in a thread of its own so its timing does not depend on the
caller's event loop). Each yields the API's base URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

from chaos.errors import ChaosError
from chaos.toxiproxy.api import Api, serve_http
from chaos.toxiproxy.proxy import split_address


class ToxiproxyServer:
    """This package's toxiproxy server on ``listen`` (``host:port``; port 0 picks one)."""

    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        self.listen = listen
        self.api = Api()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    async def serve(self) -> asyncio.Server:
        """Start listening on the running loop; returns the server (``url`` is set)."""
        host, port = split_address(self.listen)
        self._server = await asyncio.start_server(
            lambda r, w: serve_http(self.api, r, w), host, port, reuse_address=True
        )
        name = self._server.sockets[0].getsockname()
        self.url = f"http://{name[0]}:{name[1]}"
        return self._server

    def start(self) -> "ToxiproxyServer":
        """Run in a thread of its own; returns once it listens."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve())
            except BaseException as exc:  # reported to start() below
                failed.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._close())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="toxiproxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise ChaosError(f"toxiproxy could not listen on {self.listen}: {failed[0]}")
        return self

    async def _close(self) -> None:
        for proxy in list(self.api.proxies.by_name.values()):
            await proxy.stop()
        if self._server is not None:
            self._server.close()
        # Clients keeping connections alive leave their handlers waiting: end them here.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "ToxiproxyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChaosError(f"toxiproxy-server exited ({proc.returncode}) before it answered on {url}")
        try:
            with urllib.request.urlopen(f"{url}/version", timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling an external process: no event to wait on
    raise ChaosError(f"toxiproxy-server did not answer on {url} within {timeout:g}s")


@contextlib.contextmanager
def open_toxiproxy(timeout: float = 15.0) -> Iterator[str]:
    """The base URL of a toxiproxy API to use, for the duration of the block (see module doc)."""
    if os.environ.get("TOXIPROXY_URL"):
        yield os.environ["TOXIPROXY_URL"].rstrip("/")
        return
    binary = shutil.which("toxiproxy-server")
    if binary:
        port = _free_port()
        proc = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_up(url, timeout, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
        return
    with ToxiproxyServer() as server:
        yield server.url
