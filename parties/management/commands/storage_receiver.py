"""`manage.py storage_receiver --jurisdiction EU [--address HOST:PORT]`: run a jurisdiction's
storage receiver at its site (parties/storage_receiver.py), the process the web tier sends that
jurisdiction's encrypted dataset files to. A site process (CLEANROOM_ROLE=site): no database;
it stores under the jurisdiction's own root (CLEANROOM_STORAGE_ROOTS or
CLEANROOM_STORAGE_ROOT/<code>), with its server certificate `storage/<code>/` of
SITE_API_CREDENTIALS_DIR, and checks the web tier's signatures against SITE_API_CA. It listens
where `--address` says, by default on every interface at the port of its URL in
CLEANROOM_STORAGE_SITES."""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cleanroom import metrics
from parties.site_certificates import storage_receiver_folder
from parties.storage import jurisdiction_root
from parties.storage_receiver import StorageReceiver

logger = logging.getLogger(__name__)


def _refused(reason: str) -> None:
    metrics.count_refusal("storage_receiver")
    logger.warning("storage receiver refused a request: %s", reason)


def _address(code: str, given: str) -> tuple[str, int]:
    if given:
        host, _, port = given.rpartition(":")
        if not port.isdigit():
            raise CommandError(f"--address {given} is not HOST:PORT.")
        return host.strip("[]"), int(port)
    url = settings.STORAGE_SITES.get(code)
    if not url:
        raise CommandError(f"CLEANROOM_STORAGE_SITES names no receiver for {code} (or --address).")
    return "", urllib.parse.urlsplit(url).port or 443


class Command(BaseCommand):
    help = "Run a jurisdiction's storage receiver."

    def add_arguments(self, parser):
        parser.add_argument("--jurisdiction", required=True, help="its code, e.g. EU")
        parser.add_argument("--address", default="", help="HOST:PORT to listen on (port 0: any)")

    def handle(self, *args, jurisdiction: str, address: str, **options):
        code = jurisdiction.upper()
        folder = storage_receiver_folder(Path(settings.SITE_API_CREDENTIALS_DIR), code)
        try:
            server = StorageReceiver(
                _address(code, address),
                jurisdiction=code,
                root=jurisdiction_root(code),
                ca_file=Path(settings.SITE_API_CA),
                certificate=folder / "tls.crt",
                key=folder / "tls.key",
                on_refusal=_refused,
            )
        except FileNotFoundError:
            raise CommandError(
                f"The receiver's certificate and key ({folder}) or the CA ({settings.SITE_API_CA})"
                " are missing: `manage.py site_certificates --storage` makes them."
            ) from None
        if settings.METRICS_PORT:
            metrics.serve(settings.METRICS_PORT, settings.METRICS_ADDRESS)
        host, port = server.server_address[:2]
        self.stdout.write(
            f"Storage receiver of {code} listening on {host!s}:{port}, storing under {server.root}"
        )
        self.stdout.flush()
        with server:
            server.serve_forever()
