"""Hosts on one machine: each a Linux network namespace with one address, linked to a router (a
namespace of its own) through a veth pair, and the router's packet filter (nftables), which the
hosts cannot reach or change. Used by the MPC tests (parties on separate hosts) and by the
multi-host test bed (tests/bed/sites.py), which also links the machine's own namespace, where
the control plane runs, to the router.

Addresses: the router is 10.<net>.<i>.1 on host i's link and the host 10.<net>.<i>.2; the
machine's own namespace, when linked, is 10.<net>.0.2 (the control plane's address)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def ip(*arguments: str) -> None:
    subprocess.run([IP, *arguments], check=True, capture_output=True, text=True, timeout=30)


def nft(namespace: str, ruleset: str) -> None:
    subprocess.run(
        [IP, "netns", "exec", namespace, NFT, "-f", "-"],
        input=ruleset,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str

    def command(self, *argv: str, uid: int | None = None, gid: int | None = None) -> list[str]:
        """`argv` run in this host's namespace, as the given OS user (no other groups) if any."""
        user = (
            [] if uid is None else [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        )
        return [IP, "netns", "exec", self.namespace, *user, *argv]


def free_network() -> int:
    """A second octet no address or route of this machine's namespace uses (10.<net>.0.0/16)."""
    used = (
        subprocess.run(
            [IP, "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
        ).stdout
        + subprocess.run([IP, "-4", "addr"], capture_output=True, text=True).stdout
    )
    start = os.getpid() % 50
    for offset in range(50):
        net = 200 + (start + offset) % 50
        if f"10.{net}." not in used:
            return net
    raise RuntimeError("no free 10.200-249.0.0/16 network on this machine")


@dataclass
class Network:
    """Hosts behind one router, made with `add`; `close` removes every namespace and link (and,
    with them, their filters). Skips the test without the privileges to make namespaces."""

    prefix: str = field(default_factory=lambda: f"crnet{os.getpid()}")
    net: int = 213
    hosts: dict[str, Host] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _machine_link: str = ""

    def __post_init__(self) -> None:
        self.router = f"{self.prefix}-r"
        try:
            ip("netns", "add", self.router)
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = getattr(exc, "stderr", "") or str(exc)
            pytest.skip(f"Cannot make network namespaces here (needs root/CAP_SYS_ADMIN): {reason}")
        self._namespaces.append(self.router)
        ip("-n", self.router, "link", "set", "lo", "up")
        subprocess.run(
            [IP, "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
        )

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        namespace, address = f"{self.prefix}-{name}", f"10.{self.net}.{index}.2"
        ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        port = f"h{index}"
        ip("link", "add", port, "netns", self.router, "type", "veth", "peer", "name", "eth0",
           "netns", namespace)  # fmt: skip
        ip("-n", self.router, "addr", "add", f"10.{self.net}.{index}.1/24", "dev", port)
        ip("-n", self.router, "link", "set", port, "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "route", "add", "default", "via", f"10.{self.net}.{index}.1")
        self.hosts[name] = host = Host(name, namespace, address)
        return host

    def link_machine(self, link: str) -> str:
        """Link this machine's own namespace to the router through `link` (a name unique on
        this machine, at most 15 characters); returns the machine's address there."""
        self._machine_link = link
        ip("link", "add", self._machine_link, "type", "veth", "peer", "name", "m0", "netns",
           self.router)  # fmt: skip
        ip("-n", self.router, "addr", "add", f"10.{self.net}.0.1/24", "dev", "m0")
        ip("-n", self.router, "link", "set", "m0", "up")
        ip("addr", "add", f"10.{self.net}.0.2/24", "dev", self._machine_link)
        ip("link", "set", self._machine_link, "up")
        ip("route", "add", f"10.{self.net}.0.0/16", "via", f"10.{self.net}.0.1")
        return f"10.{self.net}.0.2"

    def filter(self, ruleset: str) -> None:
        """Load an nftables ruleset into the router (replacing the table it names)."""
        assert shutil.which(NFT), "nft is missing: ./manage.py test installs Debian's nftables"
        nft(self.router, ruleset)

    def close(self) -> None:
        if self._machine_link:
            # Its route goes with it.
            subprocess.run([IP, "link", "delete", self._machine_link], capture_output=True)
        for namespace in reversed(self._namespaces):
            subprocess.run([IP, "netns", "delete", namespace], capture_output=True)
        self._namespaces.clear()


def allow(sources: Iterable[str], destinations: Iterable[str], ports: str) -> str:
    """An nftables rule accepting new TCP connections from any of `sources` to any of
    `destinations` on `ports` (a port, a range a-b, or a set {a, b})."""
    return (
        f"ip saddr {{ {', '.join(sources)} }} ip daddr {{ {', '.join(destinations)} }} "
        f"tcp dport {ports} accept"
    )


def forward_filter(rules: Iterable[str]) -> str:
    """The router's ruleset: what `rules` accept passes, with the replies of what they accepted;
    anything else is refused as administratively prohibited (a connect() fails at once with
    'No route to host', which nothing else in the bed causes)."""
    body = "\n".join(f"    {rule}" for rule in rules)
    return f"""
table inet bed
delete table inet bed
table inet bed {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
{body}
    reject with icmpx type admin-prohibited
  }}
}}
"""
