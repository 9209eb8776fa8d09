"""`manage.py mpc_credentials [SITE ...]`: make the deployment's MPC CA, the TLS and sealing keys
of every MPC party site and the sender certificate of every worker site (the owners' input
steps, which deliver shares to the parties' inboxes), or of the named sites, under
MPC_CREDENTIALS_DIR, where missing."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.engines.mpc.certificates import ensure_credentials, ensure_sender_credentials
from parties.models import Site


class Command(BaseCommand):
    help = "Make the MPC CA, party credentials and worker sender certificates where missing."

    def add_arguments(self, parser):
        parser.add_argument(
            "sites", nargs="*", help="site names (default: every MPC party and worker site)"
        )

    def handle(self, *args, sites: list[str], **options):
        parties = set(Site.objects.filter(kind=Site.Kind.MPC_PARTY).values_list("name", flat=True))
        senders = set(Site.objects.filter(kind=Site.Kind.WORKER).values_list("name", flat=True))
        unknown = sorted(set(sites) - parties - senders)
        if unknown:
            raise CommandError(f"Neither MPC party nor worker sites: {', '.join(unknown)}.")
        chosen = set(sites) or parties | senders
        root = Path(settings.MPC_CREDENTIALS_DIR)
        made = ensure_credentials(root, sorted(chosen & parties))
        sent = ensure_sender_credentials(root, sorted(chosen & senders))
        self.stdout.write(f"MPC CA: {root / 'ca.crt'}")
        for site in made:
            self.stdout.write(f"Credentials made for {site}: {root / 'parties' / site}")
        for site in sent:
            self.stdout.write(f"Sender certificate made for {site}: {root / 'senders' / site}")
        if not made and not sent:
            self.stdout.write("Every site already had its credentials.")
