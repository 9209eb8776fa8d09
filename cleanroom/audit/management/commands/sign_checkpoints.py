"""`manage.py sign_checkpoints [--log NAME]`: sign every log whose size moved."""

from django.core.management.base import BaseCommand

from cleanroom.audit.checkpoints import sign_all


class Command(BaseCommand):
    help = "Sign a checkpoint of every audit log (or the named ones) that grew since its last."

    def add_arguments(self, parser):
        parser.add_argument("--log", action="append", dest="logs", metavar="NAME")

    def handle(self, *args, logs: list[str] | None, **options):
        for checkpoint in sign_all(logs):
            self.stdout.write(f"{checkpoint.log.name}: signed at size {checkpoint.size}")
