"""The calls the nemeses make to a toxiproxy API (ours or a real one), over plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from chaos.errors import ChaosError


class ToxiproxyClient:
    """A toxiproxy API at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "User-Agent": "foundation-chaos"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ChaosError(f"toxiproxy {method} {path}: {exc.code} {exc.read().decode(errors='replace').strip()}") from exc
        except OSError as exc:
            raise ChaosError(f"toxiproxy at {self.url} unreachable: {exc}") from exc
        return json.loads(raw) if raw else None

    def create(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        """Create a proxy; returns it (``listen`` names the port picked)."""
        return self._call("POST", "/proxies", {"name": name, "upstream": upstream, "listen": listen})

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, toxic_type: str, *, stream: str = "downstream", name: str = "",
                  toxicity: float = 1.0, **attributes: int) -> dict[str, Any]:
        return self._call("POST", f"/proxies/{proxy}/toxics", {
            "name": name or f"{toxic_type}_{stream}", "type": toxic_type, "stream": stream,
            "toxicity": toxicity, "attributes": attributes,
        })

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def reset(self) -> None:
        self._call("POST", "/reset")
