"""`./manage.py demo`: migrate, set up the demo collaboration once, run its approved queries on
local site workers (the TEE's and the MPC's, at once), print the logins, and serve the UI (the
workers keep running with it)."""

import time
from contextlib import ExitStack

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from jobs import demo
from jobs.models import Job
from jobs.owner_key_services import owner_key_services
from jobs.workers import site_workers
from parties.models import Organization, Site

JOB_TIMEOUT = 300
# The demo's data lives in these jurisdictions: their workers, MPC parties and TEE hosts run.
DEMO_JURISDICTIONS = ["EU", "CH", "UK"]


class Command(BaseCommand):
    help = "Set up the demo collaboration on the embedded default and start the web UI."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Set up, then stop.")
        # localhost, not 127.0.0.1: passkeys (WebAuthn) need a domain as their relying party.
        parser.add_argument("--addrport", default="localhost:8000")
        parser.add_argument(
            "--patients", type=int, default=4000, help="Generated patients per hospital."
        )

    def handle(self, *args, no_serve: bool, addrport: str, patients: int, **options):
        started = time.monotonic()
        call_command("migrate", interactive=False, verbosity=0)
        jobs = []
        with ExitStack() as running:

            def start_key_services(owners: list[Organization]) -> None:
                urls = running.enter_context(owner_key_services(owners))
                self.stdout.write(
                    "Started each hospital's own key service (SoftHSM2 token in "
                    f"var/keyservices/): {', '.join(urls)}."
                )

            if demo.is_seeded():
                self.stdout.write(
                    "The demo collaboration is already set up (delete var/ to start over)."
                )
                start_key_services(list(demo.owners()))
            else:
                self.stdout.write("Setting up the demo collaboration…")
                jobs = demo.seed(
                    patients_per_hospital=patients, start_key_services=start_key_services
                )
            self._run(jobs, started, addrport, no_serve)

    def _run(self, jobs: list[Job], started: float, addrport: str, no_serve: bool) -> None:
        sites = Site.objects.filter(active=True, jurisdiction__code__in=DEMO_JURISDICTIONS)
        with site_workers(sites.order_by("name")) as workers:
            for job in jobs:
                self._announce(job)
            for job in jobs:
                self._wait_for(job, workers)
            if jobs:
                self.stdout.write(f"Set up and ran in {time.monotonic() - started:.0f} s.")
            self._report(addrport)
            if not no_serve:
                call_command("runserver", addrport, use_reloader=False)

    def _announce(self, job: Job) -> None:
        if job.mechanism == "mpc":
            steps = job.steps.exclude(site=None).select_related("site").order_by("pk")
            where = ", ".join(f"{step.name} at {step.site.name}" for step in steps)
            self.stdout.write(f"Running '{job.query.title}' under MPC: {where}…")
        else:
            self.stdout.write(f"Running '{job.query.title}' in the TEE at {job.site.name}…")

    def _wait_for(self, job: Job, workers) -> None:
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
        if job.mechanism == "mpc":
            parties = job.steps.filter(kind="compute").select_related("site").order_by("party")
            self.stdout.write(
                self.style.SUCCESS(
                    f"Released to NovaPharm: job {job.pk}, MPC across "
                    f"{', '.join(step.site.name for step in parties)}; noise drawn inside MPC"
                )
            )
            return
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
        out("  Three hospitals share inpatient data in one room without moving it:")
        out("  Charité Berlin (EU), University Hospital Zurich (CH) and Barts Health London")
        out("  (UK), each dataset encrypted under its own jurisdiction's storage root;")
        out("  NovaPharm (US) analyses.")
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
        out("  Try: bob sees the results of 'Length of stay by age band' (run in the simulated")
        out("  TEE) and 'Length of stay and cost across three countries' (run under MPC: each")
        out("  job's page lists the site of every party) and the budget they spent; alice and")
        out("  carol each have a query waiting in Approvals; carol has an invitation in")
        out("  'Readmissions follow-up'.")
        out(f"  API reference: http://{addrport}/api/docs/")
        out("")
        out("  Every approval is the owner's own passkey assertion. The demo's owners approved")
        out("  with a DEMO SOFTWARE AUTHENTICATOR each (var/demo-devices/, a stand-in for a")
        out("  passkey on the owner's device, registered as their passkey; not for production).")
        out(
            f"  To approve in the browser, register a passkey first: http://{addrport}/account/passkeys/"
        )
        out("")
