"""The multi-host test bed on one machine (#17): the control plane and the sites as separate hosts
on one network, each site reaching only what it must.

    control plane   this machine's own namespace, where PostgreSQL, RabbitMQ (and, when a test
                    serves it, the web tier) run on 127.0.0.1; the bed reaches them at
                    10.<net>.0.2 through a relay (tests/bed/relay.py)
    eu, ch, uk      a namespace per jurisdiction's site host: its owners' worker and TEE host,
                    as an OS user of the jurisdiction's own, whose storage root (0700) only
                    that user reads
    <party site>    a namespace per MPC compute party (eu-paris-mpc, ch-geneva-mpc,
                    uk-manchester-mpc)

The router between them (tests/bed/network.py) lets every site open connections only to
RabbitMQ and the site API at the control plane, and each MPC party to the other parties' MPC
ports, and the owners' sites to each party's share inbox; it refuses anything else,
PostgreSQL included: every site process reports through the site API. `Bed.open_to_control`
opens hosts to more of the control plane's ports while a test runs (the owners' key services,
on ports known only then).

RabbitMQ: a virtual host of the bed's own, where each site has its own user whose permissions
reach only its own queue and the reply path (parties/broker_users.py); the control plane uses
`guest`, with every right there."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from parties.broker_users import broker_url, new_password, provision_site_user, remove_site_user
from tests.bed.network import Host, Network, allow, forward_filter, free_network, ip

POSTGRES, RABBITMQ = 5432, 5672
# A jurisdiction's site host and the sites it runs (the demo's).
SITE_HOSTS = {
    "eu": ("eu-frankfurt", "eu-frankfurt-tee"),
    "ch": ("ch-zurich", "ch-zurich-tee"),
    "uk": ("uk-london", "uk-london-tee"),
}
PARTIES = ("eu-paris-mpc", "ch-geneva-mpc", "uk-manchester-mpc")
CONTROL_USER = "guest"

# Run in a host's namespace: connect to ADDRESS PORT, and say whether it could, or why not.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
    print("connected")
except OSError as exc:
    print(exc.strerror)
"""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass
class Bed:
    network: Network
    control: str  # the control plane's address
    api_port: int  # the site API's port at the control plane
    mpc_ports: tuple[int, int]  # the first and last port MPC parties listen on
    vhost: str
    accounts: dict[str, Account] = field(default_factory=dict)  # by jurisdiction
    storage: dict[str, Path] = field(default_factory=dict)  # by jurisdiction
    passwords: dict[str, str] = field(default_factory=dict)  # by site
    users: dict[str, str] = field(default_factory=dict)  # by site: its broker user
    rules: list[str] = field(default_factory=list)  # what the router lets through

    @contextmanager
    def open_to_control(self, hosts: list[str], ports: list[int]) -> Iterator[None]:
        """While it lasts, let `hosts` (and no other) reach the control plane on `ports` too,
        relayed to 127.0.0.1: for services a test starts on ports known only then, such as the
        owners' key services."""
        opened = allow([self.host(h).address for h in hosts], [self.control], _ports(ports))
        self.network.filter(forward_filter([*self.rules, opened]))
        try:
            with _relay(self.control, ports):
                yield
        finally:
            self.network.filter(forward_filter(self.rules))

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def link(self, name: str, up: bool) -> None:
        """Bring the host's one link (its end of the veth pair to the router) down or up; up,
        its default route comes back too (the kernel drops it with the link)."""
        host = self.host(name)
        ip("-n", host.namespace, "link", "set", "eth0", "up" if up else "down")
        if up:
            router = host.address.rsplit(".", 1)[0] + ".1"
            ip("-n", host.namespace, "route", "replace", "default", "via", router)

    def site_host(self, site: str) -> Host:
        """The namespace a site runs in: its jurisdiction's, or a party's own."""
        for name, sites in SITE_HOSTS.items():
            if site in sites:
                return self.host(name)
        return self.host(site)

    def inbox_address(self, party: str) -> str:
        """Where a party's share inbox listens: its host, on a port past the MPC rounds'."""
        return f"{self.site_host(party).address}:{self.mpc_ports[1] + 1 + PARTIES.index(party)}"

    def broker_url(self, site: str) -> str:
        """The site's CELERY_BROKER_URL, at the control plane's address."""
        return broker_url(
            user=self.users[site],
            password=self.passwords[site],
            host=self.control,
            port=RABBITMQ,
            vhost=self.vhost,
        )

    def run(
        self, host: Host, *argv: str, account: Account | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        uid, gid = (account.uid, account.gid) if account else (None, None)
        return subprocess.run(
            host.command(*argv, uid=uid, gid=gid),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports(ports: list[int]) -> str:
    return f"{{ {', '.join(map(str, ports))} }}"


def _rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True)


def _account(name: str, comment: str) -> Account:
    """A system user without home or login, as a site host's operator makes for its worker."""
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", comment, name],
        check=True, capture_output=True,
    )  # fmt: skip
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def _remove_account(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)


@contextmanager
def _relay(address: str, ports: list[int]) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bed.relay", address, *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", f"the relay did not start: {line!r}"
        yield
    finally:
        process.kill()
        process.wait()
        if process.stdout:
            process.stdout.close()


@contextmanager
def site_bed(*, mpc_port_base: int) -> Iterator[Bed]:
    """Make the bed; take it all down afterwards, whatever happened: namespaces, links, the
    filter (in the router's namespace), the relay, the OS users, the storage roots, the
    virtual host and the broker users."""
    with ExitStack() as stack:
        net = free_network()
        network = Network(prefix=f"crbed{os.getpid()}-{net}", net=net)
        stack.callback(network.close)
        control = network.link_machine(f"crbed{net}")
        for name in (*SITE_HOSTS, *PARTIES):
            network.add(name)
        bed = Bed(
            network=network,
            control=control,
            api_port=_free_port(),
            mpc_ports=(mpc_port_base, mpc_port_base + 8191),
            vhost=f"crbed-{os.getpid()}-{net}",
        )

        sites = [network.hosts[name].address for name in (*SITE_HOSTS, *PARTIES)]
        parties = [network.hosts[name].address for name in PARTIES]
        owners = [network.hosts[name].address for name in SITE_HOSTS]
        inboxes = f"{bed.mpc_ports[1] + 1}-{bed.mpc_ports[1] + len(PARTIES)}"
        bed.rules = rules = [
            allow(sites, [control], _ports([RABBITMQ, bed.api_port])),
            allow(parties, parties, f"{bed.mpc_ports[0]}-{bed.mpc_ports[1]}"),
            # The owners' input steps send each party its shares at its share inbox.
            allow(owners, parties, inboxes),
        ]
        network.filter(forward_filter(rules))
        stack.enter_context(_relay(control, [POSTGRES, RABBITMQ, bed.api_port]))

        folder = Path(tempfile.mkdtemp(prefix="crbed-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        folder.chmod(0o711)  # each user may pass through to its own root, and list nothing
        for jurisdiction in SITE_HOSTS:
            name = f"crbed{os.getpid()}-{net}-{jurisdiction}"
            _remove_account(name)  # left by a run that was killed
            stack.callback(_remove_account, name)
            account = bed.accounts[jurisdiction] = _account(name, f"test bed site {jurisdiction}")
            root = bed.storage[jurisdiction] = folder / jurisdiction
            root.mkdir(mode=0o700)
            os.chown(root, account.uid, account.gid)

        _rabbitmqctl("add_vhost", bed.vhost)
        stack.callback(_rabbitmqctl, "delete_vhost", bed.vhost)
        _rabbitmqctl("set_permissions", "-p", bed.vhost, CONTROL_USER, ".*", ".*", ".*")
        every_site = [*(site for names in SITE_HOSTS.values() for site in names), *PARTIES]
        bed.passwords = {site: new_password() for site in every_site}
        stack.callback(_remove_users, bed.users)
        # rabbitmqctl takes most of a second a call: the sites' users are made side by side.
        with ThreadPoolExecutor(len(every_site)) as pool:
            list(pool.map(lambda site: _provision(bed, net, site), every_site))
        yield bed


def _provision(bed: Bed, net: int, site: str) -> None:
    user = f"crbed{os.getpid()}-{net}.{site}"
    provision_site_user(site, vhost=bed.vhost, password=bed.passwords[site], user=user)
    bed.users[site] = user


def _remove_users(users: dict[str, str]) -> None:
    with ThreadPoolExecutor(max(len(users), 1)) as pool:
        list(pool.map(lambda item: remove_site_user(item[0], user=item[1]), users.items()))
