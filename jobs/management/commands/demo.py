"""`./manage.py demo`: migrate, set up the demo collaboration once, run its approved query on
local site workers, print the logins, and serve the UI (the workers keep running with it)."""

import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from jobs import demo
from jobs.models import Job
from jobs.workers import site_workers

JOB_TIMEOUT = 300


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
        job = None
        if demo.is_seeded():
            self.stdout.write(
                "The demo collaboration is already set up (delete var/ to start over)."
            )
        else:
            self.stdout.write("Setting up the demo collaboration…")
            job = demo.seed(patients_per_hospital=patients)
        with site_workers() as workers:
            if job is not None:
                self._wait_for(job, workers)
            self._report(addrport)
            if not no_serve:
                call_command("runserver", addrport, use_reloader=False)

    def _wait_for(self, job: Job, workers) -> None:
        self.stdout.write(f"Running '{job.query.title}' in the TEE at {job.site.name}…")
        deadline = time.monotonic() + JOB_TIMEOUT
        while not job.finished:
            if any(worker.poll() is not None for worker in workers):
                raise CommandError("A site worker stopped; its output is above.")
            if time.monotonic() > deadline:
                raise CommandError(f"Job {job.pk} did not finish within {JOB_TIMEOUT} s.")
            time.sleep(0.5)
            job.refresh_from_db()
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"Job {job.pk} {job.state}: {job.error}")
        kind = (job.attestation or {}).get("kind", "unknown")
        self.stdout.write(
            self.style.SUCCESS(
                f"Released to NovaPharm: job {job.pk}, attestation {kind.upper()}"
                + (" (SIMULATED TEE - NOT HARDWARE BACKED)" if kind == "simulated" else "")
            )
        )

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
        out("  Try: bob sees the result of 'Length of stay by age band' (run in the simulated")
        out("  TEE) and the budget it spent; alice and carol each have a query waiting in")
        out("  Approvals; carol has an invitation in 'Readmissions follow-up'.")
        out(f"  API reference: http://{addrport}/api/docs/")
        out("")
