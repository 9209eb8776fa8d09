"""Each site's own RabbitMQ user, whose permissions reach only its own queue and the reply path
of Celery's remote control, so a site cannot consume, publish to or declare another site's
queue, nor send commands to other workers.

What a Celery worker consuming the one queue `site.<name>` needs, found by trying (RabbitMQ's
permissions: configure to declare or delete a queue or an exchange, write to publish to an
exchange or bind a queue, read to consume from a queue or bind from an exchange):

    site.<name>                      queue and exchange (Celery declares both, and binds them):
                                     configure, write, read
    <name>@<host>.celery.pidbox      the worker's remote-control queue (`celery inspect ping -d
                                     <name>@<host>` answers through it): configure, write, read
    celery.pidbox                    the control plane's broadcast exchange: configure (the
                                     worker declares it) and read (binds its queue to it); no
                                     write, so a site cannot broadcast commands to other workers
    reply.celery.pidbox              where the worker answers: configure, write

The worker runs with `--without-mingle --without-gossip --without-heartbeat` (SITE_WORKER_OPTIONS):
mingle would broadcast to every worker and gossip and heartbeats would publish events that
other workers read, each needing rights on exchanges shared by all sites. A site's worker
publishes nothing else; the next steps of a job are sent by the control plane (the outbox).

Provisioned with rabbitmqctl on the broker's host (`manage.py site_broker_users`,
deploy/README.md "Broker users"), or written as RabbitMQ definitions that the broker imports
when it starts (`definitions`: deploy/compose.yaml's broker)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

USER_PREFIX = "site."
# Besides these, a site's worker is named `<site>@<host>` (its remote-control queue's name).
SITE_WORKER_OPTIONS = ("--without-mingle", "--without-gossip", "--without-heartbeat")


@dataclass(frozen=True)
class Permissions:
    """RabbitMQ's three regular expressions over resource names, in one virtual host."""

    configure: str
    write: str
    read: str


def user_name(site: str) -> str:
    return f"{USER_PREFIX}{site}"


def site_permissions(site: str) -> Permissions:
    queue = re.escape(f"site.{site}")
    pidbox = rf"{re.escape(site)}@[^@]*\.celery\.pidbox"
    return Permissions(
        configure=rf"^({queue}|{pidbox}|celery\.pidbox|reply\.celery\.pidbox)$",
        write=rf"^({queue}|{pidbox}|reply\.celery\.pidbox)$",
        read=rf"^({queue}|{pidbox}|celery\.pidbox)$",
    )


def _rabbitmqctl(*arguments: str, secret: str | None = None) -> None:
    program = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run(  # noqa: S603 - a fixed program; names and regexes of our own making
        [program, "-q", *arguments], input=secret, check=True, capture_output=True, text=True
    )


def provision_site_user(site: str, *, vhost: str, password: str, user: str = "") -> str:
    """Make (or update) the site's broker user with `password`, given its site's permissions
    in `vhost`; returns the user's name. The password goes to rabbitmqctl on
    its standard input, never on a command line another process could read."""
    name = user or user_name(site)
    try:
        _rabbitmqctl("add_user", name, secret=password)
    except subprocess.CalledProcessError as exc:
        if "already exists" not in exc.stderr:
            raise
        _rabbitmqctl("change_password", name, secret=password)
    permissions = site_permissions(site)
    _rabbitmqctl(
        "set_permissions",
        "-p",
        vhost,
        name,
        permissions.configure,
        permissions.write,
        permissions.read,
    )
    return name


def remove_site_user(site: str, *, user: str = "") -> None:
    _rabbitmqctl("delete_user", user or user_name(site))


def new_password() -> str:
    return secrets.token_urlsafe(24)


def broker_url(*, user: str, password: str, host: str, port: int, vhost: str) -> str:
    """The site's CELERY_BROKER_URL."""
    return (
        f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(vhost, safe='')}"
    )


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form of a password (`rabbit_password_hashing_sha256`): base64 of a
    4-byte salt followed by SHA-256 over the salt and the password."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(
    *, vhost: str, control_user: str, control_password: str, site_passwords: dict[str, str]
) -> dict[str, Any]:
    """RabbitMQ definitions for the deployment's virtual host: the control plane's user with
    every right in it, and each site's user with its site's permissions alone; the passwords
    stored hashed only."""

    def user(name: str, password: str, tags: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "password_hash": password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        }

    users = [user(control_user, control_password, ["administrator"])]
    permissions = [
        {"user": control_user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    ]
    for site, password in sorted(site_passwords.items()):
        users.append(user(user_name(site), password, []))
        allowed = site_permissions(site)
        permissions.append(
            {
                "user": user_name(site),
                "vhost": vhost,
                "configure": allowed.configure,
                "write": allowed.write,
                "read": allowed.read,
            }
        )
    return {"users": users, "vhosts": [{"name": vhost}], "permissions": permissions}
