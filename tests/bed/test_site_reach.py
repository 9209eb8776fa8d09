"""Each site reaches only what it must, tried from the site's own host in the multi-host test bed
(tests/bed/sites.py), with no allowance: it cannot connect to PostgreSQL, its broker user
cannot consume another site's queue, and its OS user cannot read another jurisdiction's
storage root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import amqp
import pytest
from django.conf import settings

from tests.bed.sites import CONNECT, CONTROL_USER, POSTGRES, RABBITMQ, Bed, site_bed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with site_bed(mpc_port_base=settings.MPC_PORT_BASE) as made:
        yield made


def psql(host: str) -> list[str]:
    dsn = f"host={host} port={POSTGRES} user=postgres dbname=postgres connect_timeout=10"
    return ["psql", dsn, "-tAc", "SELECT 1"]


def test_no_site_can_connect_to_postgresql(bed):
    # The control plane's PostgreSQL answers at its address on the bed's network...
    here = subprocess.run(psql(bed.control), capture_output=True, text=True, timeout=30)
    assert here.stdout.strip() == "1", here.stderr

    # ...but not to a site host nor an MPC party: the router refuses the connection.
    for name, account in (("eu", bed.accounts["eu"]), ("ch-geneva-mpc", None)):
        tried = bed.run(bed.host(name), *psql(bed.control), account=account)
        assert tried.returncode != 0
        assert "No route to host" in tried.stderr, tried.stderr


# Run in a site's namespace with its broker user's credentials: consume each queue named, on a
# channel of its own (a refusal closes the channel), and say what the broker answered.
CONSUME = """
import json, sys
import amqp
host, user, password, vhost, *queues = sys.argv[1:]
answers = {}
with amqp.Connection(host, userid=user, password=password, virtual_host=vhost) as connection:
    for queue in queues:
        channel = connection.channel()
        try:
            channel.basic_consume(queue, callback=lambda message: None)
            answers[queue] = "consuming"
            channel.close()
        except amqp.exceptions.AccessRefused as refusal:
            answers[queue] = f"{refusal.code} {refusal.reply_text}"
print(json.dumps(answers))
"""


def test_a_site_consumes_its_own_queue_and_not_another_sites(bed):
    with amqp.Connection(
        f"127.0.0.1:{RABBITMQ}", userid=CONTROL_USER, password="guest", virtual_host=bed.vhost
    ) as control:
        channel = control.channel()
        for queue in ("site.eu-frankfurt", "site.ch-zurich", "site.eu-paris-mpc"):
            channel.queue_declare(queue, durable=True, auto_delete=False)

    tried = bed.run(
        bed.host("eu"),
        sys.executable,
        "-c",
        CONSUME,
        f"{bed.control}:{RABBITMQ}",
        bed.users["eu-frankfurt"],
        bed.passwords["eu-frankfurt"],
        bed.vhost,
        "site.eu-frankfurt",
        "site.ch-zurich",
        "site.eu-paris-mpc",
    )

    assert tried.returncode == 0, tried.stderr
    answers = json.loads(tried.stdout)
    assert answers["site.eu-frankfurt"] == "consuming"
    for queue in ("site.ch-zurich", "site.eu-paris-mpc"):
        assert answers[queue].startswith("403 ACCESS_REFUSED - access to queue"), answers


def test_a_site_cannot_read_another_jurisdictions_storage(bed):
    for jurisdiction, root in bed.storage.items():
        dataset = root / "dataset.bin"
        dataset.write_bytes(f"ciphertext of {jurisdiction}".encode())
        account = bed.accounts[jurisdiction]
        dataset.chmod(0o600)
        os.chown(dataset, account.uid, account.gid)

    ch = bed.accounts["ch"]
    own = bed.run(bed.host("ch"), "cat", str(bed.storage["ch"] / "dataset.bin"), account=ch)
    assert own.stdout == "ciphertext of ch", own.stderr

    for other in ("eu", "uk"):
        read = bed.run(bed.host("ch"), "cat", str(bed.storage[other] / "dataset.bin"), account=ch)
        listed = bed.run(bed.host("ch"), "ls", str(bed.storage[other]), account=ch)
        assert read.returncode != 0 and "Permission denied" in read.stderr, read
        assert listed.returncode != 0 and "Permission denied" in listed.stderr, listed


LISTEN = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""


def test_only_the_other_mpc_parties_reach_a_partys_port(bed):
    geneva = bed.host("ch-geneva-mpc")
    port = str(bed.mpc_ports[0] + 9)
    party = subprocess.Popen(
        geneva.command(sys.executable, "-c", LISTEN, geneva.address, port),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert party.stdout is not None and party.stdout.readline().strip() == "ready"
        tried = {
            name: bed.run(bed.host(name), sys.executable, "-c", CONNECT, geneva.address, port)
            for name in ("eu-paris-mpc", "uk-manchester-mpc", "eu", "ch")
        }
    finally:
        party.kill()
        party.wait()
        if party.stdout:
            party.stdout.close()

    said = {name: done.stdout.strip() for name, done in tried.items()}
    assert said == {
        "eu-paris-mpc": "connected",
        "uk-manchester-mpc": "connected",
        "eu": "No route to host",
        "ch": "No route to host",
    }
