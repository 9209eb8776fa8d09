"""Release requests as a TEE host relays them, for the owners' key services."""

from __future__ import annotations

import dataclasses

from jobs.models import Approval, Job
from keyservice.release import ReleaseRequest
from parties.models import DatasetVersion


def release_request(job: Job, document: bytes, dataset: str = "charite.patients", **changes):
    item = next(i for i in job.query.canonical["datasets"] if i["name"] == dataset)
    version = DatasetVersion.objects.select_related("dataset__organization").get(
        dataset_id=int(item["dataset"].split(":")[1]), number=item["version"]
    )
    approval = Approval.objects.get(
        query=job.query,
        organization=version.dataset.organization,
        decision=Approval.Decision.APPROVE,
    )
    request = ReleaseRequest(
        job=job.pk,
        query=job.query_id,
        dataset=version.dataset_id,
        canonical=job.query.canonical,
        approval_signature=bytes(approval.signature),
        document=document,
        site=job.site.name,
        kek_id=version.kek_id,
        wrapped_key=bytes(version.wrapped_data_key),
        key_context=version.key_context,
    )
    return dataclasses.replace(request, **changes)
