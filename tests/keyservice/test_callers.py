"""Each of the platform's processes calls an owner's key service with a key of its own, which
the organisation pinned with only the operations that process's part needs (as the demo pins
them): the service tells who called, logs it, and refuses a caller asking beyond its part. The
web tier, holding a release request a TEE host would relay (a valid document, an approved
query), asks for the data key with its own key: refused, and logged as the web tier's; the same
request from the TEE host's key is released."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.crypto.sealing import seal_for_receiver
from jobs.demo.key_services import owner_key_services
from keyservice.client import RemoteKeyService
from keyservice.release import Refused
from parties.models import Site
from tests.jobs.test_key_release import document
from tests.keyservice.support import release_request
from tests.keyservice.test_key_service_process import uploaded_through

pytestmark = pytest.mark.django_db


def caller(settings, name: str, url: str) -> RemoteKeyService:
    """The key service as the process named `name` reaches it, with that process's own key."""
    path = (
        Path(settings.KEY_SERVICE_CALLER_KEY)
        if name == settings.KEY_SERVICE_CALLER
        else Path(settings.KEY_SERVICE_CALLER_KEYS) / f"{name}.key"
    )
    return RemoteKeyService(url, name, Ed25519PrivateKey.from_private_bytes(path.read_bytes()))


def test_the_web_tiers_key_is_refused_a_release_the_tee_hosts_key_gets(
    world, job, enclave_key, tmp_path, settings
):
    settings.VAR_DIR = tmp_path / "var"
    with owner_key_services([world.charite]) as urls:
        url = urls["charite"]
        web = caller(settings, settings.KEY_SERVICE_CALLER, url)
        assert web.caller == "web"
        uploaded_through(url, web.key, world)  # the web tier's own part: a KEK, and the wrap
        request = release_request(job, document(job, enclave_key))
        with pytest.raises(Refused, match="web may not ask for release"):
            web.release(request)
        host = caller(settings, f"site.{job.site.name}", url)
        assert host.release(request).sealed_key
        # Nor may the TEE host open what is sealed to the organisation's results key.
        with pytest.raises(Refused, match=f"site.{job.site.name} may not ask for open"):
            host.open_received("results", b"sealed", context=b"result", reader="host")
    log = settings.VAR_DIR / "keyservices" / "charite" / "decisions.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["caller"], e.get("operation")) for e in entries if "kek_id" in e] == [
        ("web", "keys"),
        ("web", "wrap"),
    ]
    assert {"caller": "web", "operation": "release"}.items() <= entries[2].items()
    assert "may not ask" in entries[2]["refused"]
    assert entries[3]["caller"] == f"site.{job.site.name}" and entries[3]["released"] is True
    assert entries[4]["caller"] == f"site.{job.site.name}" and "refused" in entries[4]


def test_opening_is_granted_by_what_was_sealed_results_to_the_web_tier_a_delivery_to_a_party(
    world, tmp_path, settings
):
    """The web tier may open what is sealed to the organisation's results key (for a receiver's
    member), never a job's delivery key: that would give it an MPC job's noisy output shares
    before the delivery, which runs at a compute party once the job is charged. A party's
    worker may open a delivery, never a result."""
    settings.VAR_DIR = tmp_path / "var"
    party = Site.objects.filter(kind=Site.Kind.MPC_PARTY).order_by("name").first()
    assert party is not None
    with owner_key_services([world.pharma]) as urls:
        url = urls[world.pharma.slug]
        web = caller(settings, settings.KEY_SERVICE_CALLER, url)
        worker = caller(settings, f"site.{party.name}", url)
        delivery = web.receiving_key("job7")  # the web tier makes it as the job starts
        sealed = seal_for_receiver(delivery, b"output shares", context=b"job7 party 1")
        with pytest.raises(Refused, match="web may not ask for open-delivery"):
            web.open_received("job7", sealed, context=b"job7 party 1", reader="web")
        with pytest.raises(Refused, match=f"site.{party.name} may not ask for open-results"):
            worker.open_received("results", b"sealed", context=b"result", reader="party")
        opened = worker.open_received("job7", sealed, context=b"job7 party 1", reader="delivery")
        assert opened == b"output shares"
