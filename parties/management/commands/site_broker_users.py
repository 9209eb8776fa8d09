"""`manage.py site_broker_users --broker-host HOST [--vhost V] [SITE ...]`: on the broker's host,
give each site (every active site, or the named ones) a RabbitMQ user of its own, `site.<name>`,
with a new random password and permissions that reach only its own queue and the reply path
(parties/broker_users.py); print each site's CELERY_BROKER_URL for its environment file.

With `--definitions FILE` it calls no rabbitmqctl: it writes the users, hashed, as RabbitMQ
definitions the broker imports when it starts, with the control plane's own user (as this
process's CELERY_BROKER_URL names it) given every right in the virtual host. With `--urls-in
DIR` each site's URL goes to DIR/<site>/broker-url (mode 0600) instead of the screen."""

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from parties.broker_users import (
    broker_url,
    definitions,
    new_password,
    provision_site_user,
    user_name,
)
from parties.models import Site


class Command(BaseCommand):
    help = "Give each site a RabbitMQ user reaching only its own queue; print its broker URL."

    def add_arguments(self, parser):
        parser.add_argument("sites", nargs="*", help="site names (default: every active site)")
        parser.add_argument("--broker-host", required=True, help="the name sites reach RabbitMQ at")
        parser.add_argument("--port", type=int, default=5672)
        parser.add_argument("--vhost", default="/", help="the deployment's virtual host")
        parser.add_argument(
            "--definitions", type=Path, help="write RabbitMQ definitions here, not rabbitmqctl"
        )
        parser.add_argument(
            "--urls-in", type=Path, help="write each site's URL to <folder>/<site>/broker-url"
        )

    def handle(
        self,
        *args,
        sites: list[str],
        broker_host: str,
        port: int,
        vhost: str,
        definitions: Path | None,
        urls_in: Path | None,
        **options,
    ):
        known = set(Site.objects.filter(active=True).values_list("name", flat=True))
        unknown = sorted(set(sites) - known)
        if unknown:
            raise CommandError(f"Not active sites: {', '.join(unknown)}.")
        passwords = {site: new_password() for site in sorted(sites or known)}
        if definitions is None:
            users = {site: self._provision(site, vhost, pw) for site, pw in passwords.items()}
        else:
            users = {site: user_name(site) for site in passwords}
            self._write_definitions(definitions, vhost, passwords)
        for site, password in passwords.items():
            url = broker_url(
                user=users[site], password=password, host=broker_host, port=port, vhost=vhost
            )
            if urls_in is None:
                self.stdout.write(f"{site}: CELERY_BROKER_URL={url}")
            else:
                (urls_in / site).mkdir(parents=True, exist_ok=True, mode=0o700)
                path = urls_in / site / "broker-url"
                path.unlink(missing_ok=True)
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as file:
                    file.write(url + "\n")
                self.stdout.write(f"{site}: its CELERY_BROKER_URL in {path}")

    def _provision(self, site: str, vhost: str, password: str) -> str:
        try:
            return provision_site_user(site, vhost=vhost, password=password)
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = getattr(exc, "stderr", "") or str(exc)
            raise CommandError(f"rabbitmqctl refused {site}'s user: {reason}") from None

    def _write_definitions(self, path: Path, vhost: str, passwords: dict[str, str]) -> None:
        control = urlsplit(settings.CELERY_BROKER_URL)
        if not control.scheme.startswith("amqp") or not control.username or not control.password:
            raise CommandError("CELERY_BROKER_URL names no RabbitMQ user for the control plane.")
        made = definitions(
            vhost=vhost,
            control_user=unquote(control.username),
            control_password=unquote(control.password),
            site_passwords=passwords,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Read by the broker's own user; it holds the passwords hashed only.
        path.write_text(json.dumps(made, indent=2) + "\n")
        path.chmod(0o644)
        self.stdout.write(f"RabbitMQ definitions: {path}")
