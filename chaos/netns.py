"""Network namespaces on one bridge, and partitions between them with nftables.

Each member gets a namespace of its own with one veth leg on a bridge in
the caller's namespace, and an address of a /24 the network picks among
``10.231.0.0/16`` subnets no route or address of this machine already uses.
The caller (the chaos run, its clients, the node) reaches every member
through the bridge; members reach each other through it too.

A partition installs, in each member's namespace, an nftables table
``inet foundation_chaos`` dropping packets to and from the members on the
other side; healing deletes those tables. Nothing outside the namespaces
this object made is touched, and :meth:`Network.close` deletes them all
(with the bridge).

Needs root, ``ip`` (iproute2) and ``nft``: :func:`unavailable` says what is
missing, for a scenario to skip with that reason.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from chaos.errors import ChaosError, NemesisUnavailable

TABLE = "foundation_chaos"
_LOCK = "/tmp/foundation-chaos-netns.lock"


def unavailable() -> str:
    """Why namespaces and nftables cannot be used here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces and nftables need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / nftables)"
    return ""


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise ChaosError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show", "table", "all").stdout
    nets = []
    for word in out.split():
        if "/" in word and word[0].isdigit():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return nets


class Network:
    """A bridge and one namespace per member name; a context manager that removes them.

    Args:
        members: names of the members (``n1``…); each gets ``address(name)``.
    """

    def __init__(self, members: Sequence[str]) -> None:
        why = unavailable()
        if why:
            raise NemesisUnavailable(why)
        self.members = list(members)
        self.tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.bridge = f"fcb{self.tag}"
        self._made: list[str] = []
        self.partitioned: list[tuple[frozenset[str], frozenset[str]]] = []

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        used = _used_networks()
        candidates = list(range(256))
        random.shuffle(candidates)
        for third in candidates:
            net = ipaddress.ip_network(f"10.231.{third}.0/24")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                return net
        raise NemesisUnavailable("no free /24 in 10.231.0.0/16 for the chaos network")

    def namespace(self, member: str) -> str:
        return f"fcn{self.tag}{self.members.index(member)}"

    def address(self, member: str) -> str:
        return self._addresses[member]

    def exec_prefix(self, member: str) -> list[str]:
        """The argv prefix that runs a command inside ``member``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(member)]

    # -- lifecycle --------------------------------------------------------

    def open(self) -> "Network":
        try:
            # Two runs at once must not pick the same subnet: pick and claim it under a lock.
            with open(_LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.subnet = self._pick_subnet()
                hosts = list(self.subnet.hosts())
                self.gateway = str(hosts[0])
                self._addresses = {m: str(hosts[10 + i]) for i, m in enumerate(self.members)}
                _run("ip", "link", "add", self.bridge, "type", "bridge")
                self._made.append(f"link:{self.bridge}")
                _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i, member in enumerate(self.members):
                ns, leg = self.namespace(member), f"fcv{self.tag}{i}"
                _run("ip", "netns", "add", ns)
                self._made.append(f"netns:{ns}")
                _run("ip", "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._made.append(f"link:{leg}")
                _run("ip", "link", "set", leg, "master", self.bridge, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.address(member)}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete every namespace and link this network made (a namespace's rules go with it)."""
        for item in reversed(self._made):
            kind, name = item.split(":", 1)
            if kind == "netns":
                _run("ip", "netns", "del", name, check=False)
            else:
                _run("ip", "link", "del", name, check=False)
        self._made.clear()
        self.partitioned.clear()

    def __enter__(self) -> "Network":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- partitions -------------------------------------------------------

    def partition(self, *sides: Iterable[str]) -> None:
        """Cut every member of one side off from every member of the others.

        ``partition({"n1"}, {"n2", "n3"})`` isolates n1. Members named on no
        side keep talking to everyone (a bridge: ``partition({"n1"}, {"n3"})``
        leaves n2 seeing both).
        """
        groups = [frozenset(s) for s in sides]
        blocked: dict[str, set[str]] = {m: set() for m in self.members}
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    blocked[x] |= b
                for y in b:
                    blocked[y] |= a
        for member, others in blocked.items():
            if others:
                self._block(member, sorted(others))
        self.partitioned.extend((a, b) for i, a in enumerate(groups) for b in groups[i + 1 :])

    def _block(self, member: str, others: list[str]) -> None:
        addrs = ", ".join(self.address(o) for o in others)
        rules = (
            f"table inet {TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {addrs} }} drop; }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {addrs} }} drop; }}\n"
            "}\n"
        )
        self.heal_member(member)
        _run(*self.exec_prefix(member), "nft", "-f", "-", stdin=rules)

    def heal_member(self, member: str) -> None:
        _run(*self.exec_prefix(member), "nft", "delete", "table", "inet", TABLE, check=False)

    def heal(self) -> None:
        """Remove every partition rule."""
        for member in self.members:
            self.heal_member(member)
        self.partitioned.clear()

    def rules(self, member: str) -> str:
        """The chaos table in ``member``'s namespace, as nft lists it ("" when none)."""
        proc = _run(*self.exec_prefix(member), "nft", "list", "table", "inet", TABLE, check=False)
        return proc.stdout if proc.returncode == 0 else ""
