"""`manage.py export_bundle --room <slug> --output <file.zip>`, or `--all --output <dir>`; each
bundle carries its offline verifier, `verify.pyz`."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from cleanroom.audit.bundles import BundleError, bundle_filename, export_bundle
from cleanroom.audit.log import room_log_name
from cleanroom.audit.models import AuditEvent
from jobs.models import Room


class Command(BaseCommand):
    help = (
        "Export the audit bundle (cleanroom-bundle/v1) of a room, or of every room. A regulator "
        "verifies one offline with the verify.pyz inside: python3 -m zipfile -e BUNDLE.zip "
        "bundle/ && python3 bundle/verify.pyz BUNDLE.zip --trust TRUSTFILE (see its README.txt)."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--room", help="the room's slug")
        which.add_argument(
            "--all", dest="every_room", action="store_true", help="every room with audit events"
        )
        parser.add_argument(
            "--output", required=True, help="the zip to write (with --all: a directory)"
        )

    def handle(self, *args, room: str | None, every_room: bool, output: str, **options):
        if every_room:
            directory = Path(output)
            directory.mkdir(parents=True, exist_ok=True)
            logged = set(
                AuditEvent.objects.values_list("log__name", flat=True).order_by().distinct()
            )
            rooms = [r for r in Room.objects.order_by("slug") if room_log_name(r.pk) in logged]
            targets = [(r, directory / bundle_filename(r)) for r in rooms]
        else:
            found = Room.objects.filter(slug=room).first()
            if found is None:
                raise CommandError(f"No room {room!r}.")
            targets = [(found, Path(output))]
        for target, path in targets:
            try:
                bundle = export_bundle(room=target, output=path)
            except BundleError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{bundle.origin}: {bundle.tree_size} events -> {path}")
