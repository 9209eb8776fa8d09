"""`./manage.py demo`: migrate, seed the demo collaboration once, print the logins, serve the UI."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from jobs import demo


class Command(BaseCommand):
    help = "Set up the demo collaboration on the embedded default and start the web UI."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Set up, then stop.")
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument(
            "--patients", type=int, default=4000, help="Generated patients per hospital."
        )

    def handle(self, *args, no_serve: bool, addrport: str, patients: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        if demo.is_seeded():
            self.stdout.write(
                "The demo collaboration is already set up (delete var/ to start over)."
            )
        else:
            self.stdout.write("Setting up the demo collaboration…")
            demo.seed(patients_per_hospital=patients)
        self._report(addrport)
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)

    def _report(self, addrport: str) -> None:
        out = self.stdout.write
        out("")
        out(self.style.SUCCESS("Clean room demo"))
        out("  Two hospitals share inpatient data in one room without moving it:")
        out("  Charité Berlin (EU) and University Hospital Zurich (CH), each dataset")
        out("  encrypted under its own jurisdiction's storage root; NovaPharm (US) analyses.")
        out("  Datasets are stored under " + str(settings.STORAGE_ROOT))
        out("")
        out(f"  Open http://{addrport}/ and log in as:")
        passwords = demo.logins()
        for person in demo.PEOPLE:
            where = person.organization or "EU Data Protection Authority"
            out(
                f"    {person.username:<6} {passwords.get(person.username, '?'):<14} "
                f"{person.role} at {where}"
            )
        out("  (passwords are random for this checkout and kept in var/demo-logins.json)")
        out("  Try: carol has an invitation waiting in 'Readmissions follow-up'.")
        out(f"  API reference: http://{addrport}/api/docs/")
        out("")
