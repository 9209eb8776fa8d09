"""`manage.py site_broker_users` on the machine's RabbitMQ: the URL it prints opens the site's own
queue and no other's; a site that is not active gets no user."""

from __future__ import annotations

import contextlib
import os
import subprocess
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
