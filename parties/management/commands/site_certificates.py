"""`manage.py site_certificates --server-name HOST [--storage CODE=HOST ...] [SITE ...]`: make the
deployment's site API CA, the site API's server certificate and each site's client certificate
(every active site, or the named ones) under SITE_API_CREDENTIALS_DIR, where missing; with
`--storage`, also each named jurisdiction's storage receiver certificate and the web tier's
storage writer certificate (parties/site_certificates.py)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from parties.models import Site
from parties.site_certificates import ensure_site_certificates, ensure_storage_certificates


class Command(BaseCommand):
    help = "Make the site API CA, its server certificate and the sites' client certificates."

    def add_arguments(self, parser):
        parser.add_argument("sites", nargs="*", help="site names (default: every active site)")
        parser.add_argument(
            "--server-name",
            action="append",
            required=True,
            help="a DNS name the site API is reached at (repeat for several)",
        )
        parser.add_argument(
            "--storage",
            action="append",
            default=[],
            metavar="CODE=HOST",
            help="a jurisdiction's storage receiver and a DNS name it is reached at (repeat)",
        )

    def handle(
        self, *args, sites: list[str], server_name: list[str], storage: list[str], **options
    ):
        known = set(Site.objects.filter(active=True).values_list("name", flat=True))
        unknown = sorted(set(sites) - known)
        if unknown:
            raise CommandError(f"Not active sites: {', '.join(unknown)}.")
        root = Path(settings.SITE_API_CREDENTIALS_DIR)
        receivers: dict[str, list[str]] = {}
        for item in storage:
            code, _, host = item.partition("=")
            if not code or not host:
                raise CommandError(f"--storage {item}: give CODE=HOST, e.g. EU=storage.eu.example")
            receivers.setdefault(code.upper(), []).append(host)
        try:
            made = ensure_site_certificates(root, sorted(sites or known), server_name)
            if receivers:
                made += ensure_storage_certificates(root, receivers)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Site API CA: {root / 'ca.crt'}")
        for name in made:
            self.stdout.write(f"Made: {name}")
        if not made:
            self.stdout.write("Every certificate was already there.")
