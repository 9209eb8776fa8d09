"""Which port a site's process reaches the control plane through."""

from __future__ import annotations

from django.conf import settings

from jobs.engines.base import ControlPlane
from jobs.sites.client import SiteApiClient
from jobs.sites.inprocess import InProcessControlPlane


def control_plane(site: str) -> ControlPlane:
    """A site process (CLEANROOM_ROLE=site) asks over the signed site API, with no database;
    any other calls the services, in its own process."""
    if settings.CLEANROOM_ROLE == "site":
        return SiteApiClient.from_settings(settings, site)
    return InProcessControlPlane(site)
