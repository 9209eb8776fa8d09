"""Release requests as a TEE host relays them, for the owners' key services."""

from __future__ import annotations

import dataclasses

from jobs.engines.tee import key_release
from jobs.models import Job
from keyservice.release import ReleaseRequest
from tests.engines.support import order_of


def release_request(
    job: Job, document: bytes, dataset: str = "charite.patients", **changes
) -> ReleaseRequest:
    """The host's request for `dataset`, with `changes` a dishonest host makes to it."""
    order = order_of(job)
    [item] = [d for d in order.datasets if d.name == dataset]
    return dataclasses.replace(key_release.release_request(order, item, document), **changes)
