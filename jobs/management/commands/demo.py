"""`./manage.py demo`: migrate, set up the demo collaboration once, run its approved queries on
local site workers (the TEE's and the MPC's, at once), print what runs where and the logins,
and serve the UI with gunicorn, as production does (the workers keep running with it)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from jobs.demo.key_services import owner_key_services, pin_key_services_elsewhere
from jobs.demo.scenario import PEOPLE, is_seeded, logins, organizations, seed
from jobs.demo.workers import runs_as_root, site_workers
from jobs.engines.base import job_site_of, site_of
from jobs.models import Job
from parties.models import Authority, Organization, Site

JOB_TIMEOUT = 300
# The demo's data lives in these jurisdictions: their workers, MPC parties and TEE hosts run.
DEMO_JURISDICTIONS = ["EU", "CH", "UK"]
# Two web workers: enough for one person clicking, light on a laptop.
WEB_WORKERS = 2


def ui_url(addrport: str) -> str:
    """Where the demo's UI is, as every line that names it prints it."""
    return f"http://{addrport}/"


class Command(BaseCommand):
    help = "Set up the demo collaboration on the embedded default and start the web UI."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Set up, then stop.")
        # localhost, not 127.0.0.1: passkeys (WebAuthn) need a domain as their relying party.
        parser.add_argument("--addrport", default="localhost:8000")
        parser.add_argument(
            "--patients", type=int, default=4000, help="Generated patients per hospital."
        )
        # Across hosts or containers (deploy/compose.yaml): the sites' workers and the owners'
        # key services run elsewhere, and this command sets up and waits.
        parser.add_argument(
            "--no-workers", action="store_true", help="The sites' workers run elsewhere."
        )
        parser.add_argument(
            "--key-services-pinned-in",
            type=Path,
            help="The key services named in CLEANROOM_KEY_SERVICES run elsewhere: write what "
            "each pins to DIR/<organisation>/config.json, where each takes it from.",
        )

    def handle(
        self,
        *args,
        no_serve: bool,
        addrport: str,
        patients: int,
        no_workers: bool,
        key_services_pinned_in: Path | None,
        **options,
    ):
        started = time.monotonic()
        # A `kill` or a closed terminal stops the demo as Ctrl+C does: through the `with`
        # blocks below, which stop its workers, key services and web tier, leaving none behind.
        for stop in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop, _interrupt)
        call_command("migrate", interactive=False, verbosity=0)
        jobs = []
        key_services: dict[str, str] = {}
        self.workers_elsewhere = no_workers
        with ExitStack() as running:

            def start_key_services(organizations: list[Organization]) -> None:
                if key_services_pinned_in:
                    pinned = pin_key_services_elsewhere(organizations, key_services_pinned_in)
                    key_services.update(pinned)
                else:
                    key_services.update(running.enter_context(owner_key_services(organizations)))

            if is_seeded():
                self.stdout.write(
                    "The demo collaboration is already set up (delete var/ to start over)."
                )
                start_key_services(organizations())
            else:
                self.stdout.write("Setting up the demo collaboration…")
                jobs = seed(patients_per_hospital=patients, start_key_services=start_key_services)
            self._run(jobs, started, addrport, no_serve, key_services)

    def _run(
        self,
        jobs: list[Job],
        started: float,
        addrport: str,
        no_serve: bool,
        key_services: dict[str, str],
    ) -> None:
        sites = list(
            Site.objects.filter(active=True, jurisdiction__code__in=DEMO_JURISDICTIONS)
            .select_related("jurisdiction")
            .order_by("name")
        )
        with site_workers(
            [] if self.workers_elsewhere else sites,
            say=lambda line: self.stdout.write(self.style.WARNING(line)),
        ):
            for job in jobs:
                self._announce(job)
            for job in jobs:
                self._wait_for(job)
            if jobs:
                self.stdout.write(f"Set up and ran in {time.monotonic() - started:.0f} s.")
            if no_serve:
                self._report(addrport, sites, key_services)
            else:
                self._serve(addrport, lambda: self._report(addrport, sites, key_services))

    def _serve(self, addrport: str, ready: Callable[[], None]) -> None:
        """The production web tier's gunicorn and settings (deploy/gunicorn.conf.py); static
        files collected as a deployment collects them, served by WhiteNoise. `ready` runs once
        it accepts connections, so the address the demo prints opens at once."""
        call_command("collectstatic", interactive=False, verbosity=0)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"),
            "--bind",
            addrport,
            "--workers",
            str(WEB_WORKERS),
            # Its start-up lines and each request's log line would bury the screen above.
            "--log-level",
            "warning",
            "--access-logfile",
            "/dev/null",
        ]
        environment = {**os.environ, "CLEANROOM_BOOTSTRAP": "0"}
        web = subprocess.Popen(command, cwd=settings.BASE_DIR, env=environment)  # noqa: S603
        try:
            _wait_listening(addrport, web)
            ready()
            web.wait()
        except KeyboardInterrupt:
            web.terminate()
            web.wait(timeout=30)

    def _announce(self, job: Job) -> None:
        if job.mechanism == "mpc":
            steps = job.steps.exclude(site=None).select_related("site").order_by("pk")
            where = ", ".join(f"{step.name} at {site_of(step).name}" for step in steps)
            self.stdout.write(f"Running '{job.query.title}' under MPC: {where}…")
        else:
            self.stdout.write(f"Running '{job.query.title}' in the TEE at {job_site_of(job).name}…")

    def _wait_for(self, job: Job) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not job.finished:
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
                    f"{', '.join(site_of(step).name for step in parties)}; noise drawn inside MPC"
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

    def _report(self, addrport: str, sites: list[Site], key_services: dict[str, str]) -> None:
        """The first screen: what runs where, and who to log in as."""
        out, url = self.stdout.write, ui_url(addrport)
        out("")
        out(self.style.SUCCESS(f"Clean room demo at {url}"))
        out(f"  Web UI     gunicorn, {WEB_WORKERS} workers; API reference at {url}api/docs/")
        out(f"  Database   {_database()}")
        out(f"  Broker     {_broker()}")
        out("  Parties    what each holds, and its own key service:")
        for organization in Organization.objects.select_related("jurisdiction").order_by("slug"):
            pinned = sorted(set(organization.datasets.values_list("jurisdiction__code", flat=True)))
            holds = (
                f"data in {', '.join(pinned)}"
                if pinned
                else f"results (home {organization.jurisdiction.code})"
            )
            state = Path(settings.VAR_DIR) / "keyservices" / organization.slug
            service = f"key service {key_services.get(organization.slug)} as {state.owner()}"
            out(f"    {organization.slug:<10} {organization.name:<36} {holds}, {service}")
        for authority in Authority.objects.prefetch_related("jurisdictions"):
            codes = ", ".join(j.code for j in authority.jurisdictions.all())
            out(f"    {'':<10} {authority.name:<36} regulator of {codes}")
        elsewhere = " (run elsewhere)" if self.workers_elsewhere else ""
        out(f"  Sites      one Celery worker each{elsewhere}, on its queue site.<name>:")
        for code in DEMO_JURISDICTIONS:
            here = [site for site in sites if site.jurisdiction.code == code]
            out(f"    {code:<4} " + ", ".join(f"{s.name} ({SITE_ROLES[s.kind]})" for s in here))
        out("             each MPC party also runs its share inbox, where the owners' input")
        out("             steps send it their sealed shares over mutual TLS")
        out("  Control    one worker with the scheduler: the outbox, and the sweep that sends")
        out(
            f"             again or ends a job whose site stopped renewing its lease "
            f"({settings.JOB_LEASE_SECONDS:g} s + {settings.JOB_LEASE_SWEEP_SECONDS:g} s at most)"
        )
        out("  Every worker and inbox is restarted when it dies.")
        if runs_as_root():
            out("  (The workers run as root, as this account does; Celery's warning about that is")
            out("  silenced here. Production runs them as their own user: deploy/systemd.)")
        out("")
        out(f"  Open {url} and log in as:")
        passwords = logins()
        for person in PEOPLE:
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
        out("  'Readmissions follow-up'. Stop everything with Ctrl+C.")
        out("")
        out("  Every approval is the owner's own passkey assertion. The demo's owners approved")
        out("  with a DEMO SOFTWARE AUTHENTICATOR each (var/demo-devices/, a stand-in for a")
        out("  passkey on the owner's device, registered as their passkey; not for production).")
        out(f"  To approve in the browser, register a passkey first: {url}account/passkeys/")
        out("")


# By Site.Kind's values, as a site's `kind` holds them.
SITE_ROLES: dict[str, str] = {
    Site.Kind.WORKER: "owners' worker",
    Site.Kind.TEE: "TEE host",
    Site.Kind.MPC_PARTY: "MPC party",
}


def _database() -> str:
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"SQLite, {os.path.relpath(database['NAME'], settings.BASE_DIR)}"
    return f"PostgreSQL, {database.get('NAME')} at {database.get('HOST') or 'localhost'}"


def _broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        return "embedded: messages are files under var/broker/"
    address = urlsplit(url)
    return f"{address.scheme} at {address.hostname}"


def _wait_listening(addrport: str, web: subprocess.Popen) -> None:
    host, _, port = addrport.rpartition(":")
    deadline = time.monotonic() + 60
    while web.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((host or "localhost", int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # gunicorn binds within a second or two of starting
    raise CommandError(f"The web tier did not start listening at {addrport}.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
