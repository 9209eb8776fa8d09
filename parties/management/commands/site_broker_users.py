"""`manage.py site_broker_users --broker-host HOST [--vhost V] [SITE ...]`: on the broker's host,
give each site (every active site, or the named ones) a RabbitMQ user of its own, `site.<name>`,
with a new random password and permissions that reach only its own queue and the reply path
(parties/broker_users.py); print each site's CELERY_BROKER_URL for its environment file."""

import subprocess

from django.core.management.base import BaseCommand, CommandError

from parties.broker_users import broker_url, new_password, provision_site_user
from parties.models import Site


class Command(BaseCommand):
    help = "Give each site a RabbitMQ user reaching only its own queue; print its broker URL."

    def add_arguments(self, parser):
        parser.add_argument("sites", nargs="*", help="site names (default: every active site)")
        parser.add_argument("--broker-host", required=True, help="the name sites reach RabbitMQ at")
        parser.add_argument("--port", type=int, default=5672)
        parser.add_argument("--vhost", default="/", help="the deployment's virtual host")

    def handle(self, *args, sites: list[str], broker_host: str, port: int, vhost: str, **options):
        known = set(Site.objects.filter(active=True).values_list("name", flat=True))
        unknown = sorted(set(sites) - known)
        if unknown:
            raise CommandError(f"Not active sites: {', '.join(unknown)}.")
        for site in sorted(sites or known):
            password = new_password()
            try:
                user = provision_site_user(site, vhost=vhost, password=password)
            except (OSError, subprocess.CalledProcessError) as exc:
                reason = getattr(exc, "stderr", "") or str(exc)
                raise CommandError(f"rabbitmqctl refused {site}'s user: {reason}") from None
            url = broker_url(user=user, password=password, host=broker_host, port=port, vhost=vhost)
            self.stdout.write(f"{site}: CELERY_BROKER_URL={url}")
