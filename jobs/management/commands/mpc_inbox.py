"""`manage.py mpc_inbox [--site SITE]`: run an MPC party site's share inbox, the process that
accepts sealed input shares from the owners' input steps over mutual TLS
(jobs/engines/mpc/inbox.py). One per party site, beside its worker; it listens on the address
`MPC_INBOX_ADDRESSES` names for the site and stores under `MPC_INBOX_DIR/<site>/`."""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from cleanroom import metrics
from jobs.engines.mpc import certificates, inbox
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.mpc.inputs import placement_refusal
from parties.models import Site

logger = logging.getLogger(__name__)


def _placement(delivery: inbox.Delivery, sender: str, own_site: str) -> str | None:
    try:
        return placement_refusal(delivery, sender, own_site)
    finally:
        connection.close()  # each connection's thread has its own database connection


def _refused(reason: str) -> None:
    metrics.count_refusal("mpc_inbox")
    logger.warning("MPC share inbox refused a delivery: %s", reason)


class Command(BaseCommand):
    help = "Run this MPC party site's share inbox."

    def add_arguments(self, parser):
        parser.add_argument("--site", default=os.environ.get("CLEANROOM_SITE", ""))

    def handle(self, *args, site: str, **options):
        party = Site.objects.filter(name=site, kind=Site.Kind.MPC_PARTY).first()
        if party is None:
            raise CommandError(f"{site or 'No site'} is not an MPC party site (--site).")
        config = MpcConfig.from_settings(settings)
        address = inbox.address_of(party.name, party.pk, config.inbox_addresses, config.port_base)
        connection.close()
        server = inbox.ShareInbox(
            address,
            site=party.name,
            tls=certificates.party_tls_files(config.credentials, party.name),
            share_key=certificates.party_private_key(config.credentials, party.name),
            root=config.inbox_root,
            placement=_placement,
            on_refusal=_refused,
        )
        if settings.METRICS_PORT:
            metrics.serve(settings.METRICS_PORT, settings.METRICS_ADDRESS)
        self.stdout.write(f"MPC share inbox of {party.name} listening on {address[0]}:{address[1]}")
        self.stdout.flush()
        with server:
            server.serve_forever()
