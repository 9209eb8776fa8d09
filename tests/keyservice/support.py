"""Release requests as a TEE host relays them, for the owners' key services."""

from __future__ import annotations

import dataclasses

from jobs.engines.tee import key_release
from jobs.models import Job
from keyservice.release import ReleaseRequest
from parties.models import DatasetVersion


def release_request(
    job: Job, document: bytes, dataset: str = "charite.patients", **changes
) -> ReleaseRequest:
    """The host's request for `dataset`, with `changes` a dishonest host makes to it."""
    item = next(i for i in job.query.canonical["datasets"] if i["name"] == dataset)
    version = DatasetVersion.objects.select_related("dataset__organization").get(
        dataset_id=int(item["dataset"].split(":")[1]), number=item["version"]
    )
    return dataclasses.replace(key_release.release_request(job, version, document), **changes)
