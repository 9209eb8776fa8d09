"""`manage.py site_broker_users` on the machine's RabbitMQ: the URL it prints opens the site's own
queue and no other's; a site that is not active gets no user."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from io import StringIO
from urllib.parse import unquote, urlsplit

import amqp
import pytest
from django.core.management import CommandError, call_command

from parties.broker_users import remove_site_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def vhost():
    name = f"cleanroom-broker-users-{os.getpid()}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield name
    with contextlib.suppress(subprocess.CalledProcessError):
        remove_site_user("eu-frankfurt")
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], check=True, capture_output=True)


def consume(url: str, queue: str) -> str:
    parts = urlsplit(url)
    with amqp.Connection(
        f"{parts.hostname}:{parts.port}",
        userid=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        virtual_host=unquote(parts.path[1:]),
    ) as connection:
        channel = connection.channel()
        try:
            channel.basic_consume(queue, callback=lambda message: None)
        except amqp.exceptions.AccessRefused as refusal:
            return f"{refusal.code} {refusal.reply_text}"
        return "consuming"


def imported(users: list[str], vhost: str, timeout: float = 30) -> None:
    """Wait until the broker has each user's permissions (it imports definitions in the
    background)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_permissions", "-p", vhost],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if set(users) <= set(listed):
            return
        assert time.monotonic() < deadline, f"{users} not imported in {timeout} s"
        time.sleep(0.2)


def test_the_printed_url_opens_the_sites_own_queue_and_no_other(vhost):
    with amqp.Connection("127.0.0.1:5672", virtual_host=vhost) as control:
        for queue in ("site.eu-frankfurt", "site.ch-zurich"):
            control.channel().queue_declare(queue, durable=True, auto_delete=False)
    out = StringIO()

    call_command(
        "site_broker_users", "eu-frankfurt", "--broker-host", "127.0.0.1", "--vhost", vhost,
        stdout=out,
    )  # fmt: skip

    site, url = out.getvalue().strip().split(": CELERY_BROKER_URL=")
    assert site == "eu-frankfurt"
    assert urlsplit(url).username == "site.eu-frankfurt"
    assert consume(url, "site.eu-frankfurt") == "consuming"
    assert consume(url, "site.ch-zurich").startswith("403 ACCESS_REFUSED")


def test_a_site_that_is_not_active_gets_no_user():
    with pytest.raises(CommandError, match="Not active sites: no-oslo"):
        call_command("site_broker_users", "no-oslo", "--broker-host", "127.0.0.1")


def test_the_definitions_the_broker_imports_open_each_site_s_own_queue_alone(
    vhost, tmp_path, settings
):
    """The compose file's broker: `--definitions` writes what RabbitMQ imports when it starts;
    imported here, each site's URL opens its own queue and no other's, and the control plane's
    user (from its CELERY_BROKER_URL) every queue."""
    control_user = f"cleanroom-definitions-{os.getpid()}"
    control_url = f"amqp://{control_user}:control-secret@127.0.0.1:5672/{vhost}"
    settings.CELERY_BROKER_URL = control_url
    definitions, urls = tmp_path / "definitions.json", tmp_path / "sites"

    call_command(
        "site_broker_users", "eu-frankfurt", "ch-zurich", "--broker-host", "127.0.0.1",
        "--vhost", vhost, "--definitions", str(definitions), "--urls-in", str(urls),
        stdout=StringIO(),
    )  # fmt: skip

    url = (urls / "eu-frankfurt" / "broker-url").read_text().strip()
    assert (urls / "eu-frankfurt" / "broker-url").stat().st_mode & 0o077 == 0
    assert urlsplit(url).username == "site.eu-frankfurt"
    # The passwords are in the definitions hashed only.
    assert unquote(urlsplit(url).password or "") not in definitions.read_text()
    assert "control-secret" not in definitions.read_text()
    # On its standard input: the broker's own user does not enter the test's folder.
    subprocess.run(
        ["rabbitmqctl", "-q", "import_definitions", "--format", "json"],
        input=definitions.read_text(),
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        imported(["site.eu-frankfurt", "site.ch-zurich"], vhost)
        with amqp.Connection("127.0.0.1:5672", virtual_host=vhost) as control:
            for queue in ("site.eu-frankfurt", "site.ch-zurich"):
                control.channel().queue_declare(queue, durable=True, auto_delete=False)
        assert consume(url, "site.eu-frankfurt") == "consuming"
        assert consume(url, "site.ch-zurich").startswith("403 ACCESS_REFUSED")
        assert consume(control_url, "site.ch-zurich") == "consuming"
    finally:
        for user in (control_user, "site.ch-zurich"):
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)
