"""Every organisation runs its own key service (separate processes, SoftHSM2 tokens), as the
demo does: the hospitals' datasets' keys are wrapped in their tokens at upload, the platform's
key folder cannot open them, an approved join still runs in the attested enclave, each key
released by its owner's service and relayed sealed by the host, and its result opens only
through the receiver's own service."""

from __future__ import annotations

import json

import pytest

from cleanroom.crypto.keys import KeyServiceError, key_service
from jobs.demo.key_services import owner_key_services
from jobs.execution.lifecycle import run_query
from jobs.models import Job, Result
from jobs.results.storage import read_result
from keyservice.config import GRANTS
from parties.models import DatasetVersion
from tests import factories
from tests.factories import JOIN_SQL, propose

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_an_enclave_job_runs_with_keys_only_the_owners_services_hold(
    world, site_worker, tmp_path, settings
):
    settings.VAR_DIR = tmp_path / "var"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
    # The owners register their passkeys first: each key service pins them when it starts.
    factories.register_passkey(world.alice, world.charite)
    factories.register_passkey(world.carol, world.zurich)
    # The enclave site's worker runs in this process, beside the web tier: one caller plays both.
    callers = {settings.KEY_SERVICE_CALLER: frozenset(GRANTS)}
    with owner_key_services([world.charite, world.zurich, world.pharma], callers) as urls:
        assert sorted(urls) == sorted(["charite", "usz", world.pharma.slug])
        room = world.study(tmp_path)
        for version in DatasetVersion.objects.all():
            with pytest.raises(KeyServiceError):
                key_service().unwrap(
                    version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
                )
        query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
        for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
            factories.decide(query=query, organization=org, by=owner, approve=True)
        wait = site_worker("eu-frankfurt-tee")
        job = run_query(query=query, by=world.bob)
        assert wait() == ("jobs.run_job", "SUCCESS", "released")
        table = read_result(Result.objects.get(job=job), world.pharma, world.bob)
        assert table["rows"]
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED
    for slug in ("charite", "usz"):
        [decision] = [d for d in decisions(settings, slug) if "released" in d]
        assert decision["job"] == job.pk and decision["released"] is True
        assert "attested enclave" in decision["reason"]
    [opened] = [d for d in decisions(settings, world.pharma.slug) if d.get("operation") == "open"]
    assert opened["opened"] is True and opened["reader"] == f"bob@{world.pharma.slug}"


def decisions(settings, slug: str) -> list[dict]:
    log = settings.VAR_DIR / "keyservices" / slug / "decisions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]
