"""`manage.py mpc_inbox [--site SITE]`: run an MPC party site's share inbox, the process that
accepts sealed input shares from the owners' input steps over mutual TLS
(jobs/engines/mpc/inbox.py). One per party site, beside its worker; it listens on the address
`MPC_INBOX_ADDRESSES` names for the site and stores under `MPC_INBOX_DIR/<site>/`. Whether a
delivery's job places it here it asks the control plane, through the site's port: as a site
process (CLEANROOM_ROLE=site), over the signed site API, with no database."""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from cleanroom import metrics
from jobs.engines.base import ControlPlane
from jobs.engines.mpc import certificates, inbox
from jobs.engines.mpc.config import MpcConfig
from jobs.sites.ports import control_plane
from parties.models import Site

logger = logging.getLogger(__name__)


def _placement(plane: ControlPlane) -> inbox.Placement:
    def placement(delivery: inbox.Delivery, sender: str, own_site: str) -> str | None:
        try:
            return plane.placement(delivery, sender)
        finally:
            connection.close()  # in-process, each connection's thread has its own connection

    return placement


def _refused(reason: str) -> None:
    metrics.count_refusal("mpc_inbox")
    logger.warning("MPC share inbox refused a delivery: %s", reason)


def _address(site: str, config: MpcConfig) -> tuple[str, int]:
    """Where the inbox listens: as MPC_INBOX_ADDRESSES names it, which a site process must; in
    the control plane's process, the single-host default by the site's id."""
    if site in config.inbox_addresses:
        return config.inbox_addresses[site]
    if settings.CLEANROOM_ROLE == "site":
        raise CommandError(f"MPC_INBOX_ADDRESSES names no address for {site or 'this site'}.")
    party = Site.objects.filter(name=site, kind=Site.Kind.MPC_PARTY).first()
    if party is None:
        raise CommandError(f"{site or 'No site'} is not an MPC party site (--site).")
    address = inbox.address_of(party.name, party.pk, config.inbox_addresses, config.port_base)
    connection.close()
    return address


class Command(BaseCommand):
    help = "Run this MPC party site's share inbox."

    def add_arguments(self, parser):
        parser.add_argument("--site", default=os.environ.get("CLEANROOM_SITE", ""))

    def handle(self, *args, site: str, **options):
        config = MpcConfig.from_settings(settings)
        address = _address(site, config)
        server = inbox.ShareInbox(
            address,
            site=site,
            tls=certificates.party_tls_files(config.credentials, site),
            share_key=certificates.party_private_key(config.credentials, site),
            root=config.inbox_root,
            placement=_placement(control_plane(site)),
            on_refusal=_refused,
        )
        if settings.METRICS_PORT:
            metrics.serve(settings.METRICS_PORT, settings.METRICS_ADDRESS)
        self.stdout.write(f"MPC share inbox of {site} listening on {address[0]}:{address[1]}")
        self.stdout.flush()
        with server:
            server.serve_forever()
