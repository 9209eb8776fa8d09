"""`manage.py audit_keys`: the log's verification keys, one signed-note vkey a line.

Redirect it into the trust file a regulator keeps: `./manage.py audit_keys > trust.txt`.
The owners' approval credentials are `manage.py export_owner_credentials`.
"""

from django.core.management.base import BaseCommand

from cleanroom.audit.checkpoints import current_log_key, log_vkeys
from cleanroom.audit.witness import witness_vkeys


class Command(BaseCommand):
    help = "Print the audit log's verifier keys (signed-note vkey format), for trust files."

    def add_arguments(self, parser):
        parser.add_argument(
            "--witnesses",
            action="store_true",
            help="Also print the member organisations' witness keys, as 'witness <vkey>' lines.",
        )

    def handle(self, *args, witnesses: bool, **options):
        current_log_key()  # made on first use, so a trust file can be written before any event
        for vkey in log_vkeys():
            self.stdout.write(vkey)
        if witnesses:
            for vkey in witness_vkeys():
                self.stdout.write(f"witness {vkey}")
