"""`manage.py mpc_credentials [SITE ...]`: make the deployment's MPC CA and the TLS and sealing
keys of every MPC party site (or of the named sites) under MPC_CREDENTIALS_DIR, where missing."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.engines.mpc.certificates import ensure_credentials
from parties.models import Site


class Command(BaseCommand):
    help = "Make the MPC CA and the MPC party sites' credentials where missing."

    def add_arguments(self, parser):
        parser.add_argument("sites", nargs="*", help="site names (default: every MPC party site)")

    def handle(self, *args, sites: list[str], **options):
        known = set(Site.objects.filter(kind=Site.Kind.MPC_PARTY).values_list("name", flat=True))
        unknown = sorted(set(sites) - known)
        if unknown:
            raise CommandError(f"Not MPC party sites: {', '.join(unknown)}.")
        root = Path(settings.MPC_CREDENTIALS_DIR)
        made = ensure_credentials(root, sorted(sites or known))
        self.stdout.write(f"MPC CA: {root / 'ca.crt'}")
        for site in made:
            self.stdout.write(f"Credentials made for {site}: {root / 'parties' / site}")
        if not made:
            self.stdout.write("Every party site already had its credentials.")
