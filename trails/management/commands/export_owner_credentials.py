"""`manage.py export_owner_credentials`: the credentials each owner organisation approves with
(its members' passkeys and its machine keys), one trust-file line each, for the regulator's
trust file: `./manage.py export_owner_credentials >> trust.txt`.

What the platform says an organisation's credentials are is only the platform's word: a regulator
confirms each line with the organisation (its key service's config.json pins the same ones)
before trusting it. verify.pyz then accepts only approvals made by a pinned credential.
"""

from django.core.management.base import BaseCommand

from parties.models import Organization
from parties.selectors import pinned_approvers


class Command(BaseCommand):
    help = "Print the owners' approval credentials as trust-file lines (passkey, machine-key)."

    def add_arguments(self, parser):
        parser.add_argument(
            "organizations", nargs="*", help="Organisation slugs (default: every organisation)."
        )

    def handle(self, *args, organizations: list[str], **options):
        chosen = Organization.objects.order_by("pk")
        if organizations:
            chosen = chosen.filter(slug__in=organizations)
        for organization in chosen:
            credentials = pinned_approvers(organization)
            if credentials:
                self.stdout.write(f"# {organization.name} ({organization.slug})")
            for credential in credentials:
                self.stdout.write(credential.trust_line())
