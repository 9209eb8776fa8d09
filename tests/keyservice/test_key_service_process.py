"""An owner's key service as its own process (python -m keyservice) with its own SoftHSM2
token: the TEE host relays a release and gets only ciphertext sealed to the enclave; the
platform's key folder cannot open what the token wrapped; unsigned, unpinned or stale callers
are refused; there is no plain unwrap; and each decision is in the service's own log."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.conf import settings as django_settings

from cleanroom.attestation.binding import key_context
from cleanroom.crypto.keys import KeyServiceError, key_service
from cleanroom.crypto.sealing import open_sealed
from jobs.engines.tee import trust
from jobs.execution.lifecycle import run_query
from jobs.rooms.services import suspend_dataset, suspend_participation
from keyservice import config
from keyservice.client import KeyServiceUnavailable, RemoteKeyService
from keyservice.config import Caller
from keyservice.release import Refused
from keyservice.signing import HEADER, sign_request
from parties.models import DatasetVersion, Site
from parties.selectors import pinned_approvers
from tests.engines.support import order_of, tee_config
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.jobs.test_key_release import approved, document
from tests.keyservice.support import release_request
from tests.privacy.test_participation_kill_switch import second_room

pytestmark = pytest.mark.django_db

CALLER = "web"  # the web tier's name, which settings give a process that is no site's worker


@pytest.fixture
def charite_service(world, tmp_path, settings):
    """Charité's key service: its token initialised, what it pins written by its own admin
    (here from the platform's records), serving on a free port."""
    state = tmp_path / "charite-keyservice"
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(django_settings.BASE_DIR)}
    run = [sys.executable, "-m", "keyservice"]
    subprocess.run(
        [*run, "init", str(state), "--label", "charite"],
        env=environment,
        check=True,
        capture_output=True,
    )
    caller = Ed25519PrivateKey.generate()
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
    settings.KEY_SERVICE_CALLER_KEY.write_bytes(caller.private_bytes_raw())
    tee = tee_config()
    pinned = config.config_json(
        organization=world.charite.pk,
        approvers=list(pinned_approvers(world.charite)),
        jurisdictions=[world.charite.jurisdiction.rules()],
        sites={site.name: site.place() for site in Site.objects.exclude(kind="mpc-party")},
        trusted_roots=trust.trusted_roots(tee),
        allowed_measurements=trust.allowed_measurements(tee),
        callers={
            CALLER: Caller(
                key=caller.public_key().public_bytes_raw(),
                may=frozenset({"keys", "wrap", "release", "suspend"}),
            ),
        },
    )
    (state / "config.json").write_text(json.dumps(pinned))
    process = subprocess.Popen(
        [*run, "serve", str(state), "--label", "charite"],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = process.stdout.readline().split()
        assert ready[0] == "ready", ready
        url = f"http://127.0.0.1:{ready[1]}"
        settings.KEY_SERVICES = {"charite": url}
        yield url, caller, state
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def uploaded_through(url: str, caller: Ed25519PrivateKey, world) -> tuple[DatasetVersion, bytes]:
    """Charité's dataset as its upload through its own key service leaves it: the data key
    wrapped under a KEK in Charité's token (the platform's folder key is gone)."""
    version = DatasetVersion.objects.select_related("dataset__jurisdiction").get(
        dataset__organization=world.charite
    )
    data_key = key_service().unwrap(
        version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
    )
    remote = RemoteKeyService(url, CALLER, caller)
    version.kek_id = remote.create_key()
    version.wrapped_data_key = remote.wrap_dataset_key(
        version.kek_id,
        data_key,
        context=version.key_context,
        name=version.dataset.qualified_name,
        jurisdiction=version.dataset.jurisdiction.code,
    )
    version.save()
    return version, data_key


def post(url: str, path: str, body: bytes, header: str | None) -> int:
    request = urllib.request.Request(url + path, data=body, method="POST")  # noqa: S310
    if header:
        request.add_header(HEADER, header)
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - a test's own URL
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_host_relays_a_key_it_cannot_open_and_the_platform_folder_cannot_unwrap_it(
    world, job, enclave_key, charite_service
):
    url, caller, state = charite_service
    version, data_key = uploaded_through(url, caller, world)
    with pytest.raises(KeyServiceError):
        key_service().unwrap(
            version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
        )
    sealed = tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))
    blob = base64.b64decode(sealed["charite.patients"])
    assert data_key not in blob
    context = key_context(job.pk, "charite.patients")
    assert open_sealed(enclave_key, blob, context=context) == data_key
    # The service's own log: yes, with the reason; and a replay is a no, with its reason.
    remote = RemoteKeyService(url, CALLER, caller)
    with pytest.raises(Refused, match="already released"):
        remote.release(release_request(job, document(job, X25519PrivateKey.generate())))
    log = (state / "decisions.jsonl").read_text().splitlines()
    decisions = [d for d in map(json.loads, log) if "released" in d]
    assert [(d["job"], d["released"]) for d in decisions] == [(job.pk, True), (job.pk, False)]
    assert "already released" in decisions[1]["reason"]


def test_callers_it_does_not_know_are_refused_and_there_is_no_plain_unwrap(
    world, job, charite_service
):
    url, caller, _ = charite_service
    body = b"{}"
    assert post(url, "/keys", body, None) == 401
    stranger = Ed25519PrivateKey.generate()
    assert post(url, "/keys", body, sign_request(CALLER, stranger, "POST", "/keys", body)) == 401
    assert post(url, "/keys", body, sign_request("intruder", caller, "POST", "/keys", body)) == 401
    stale = sign_request(CALLER, caller, "POST", "/keys", body, at=1_000_000_000)
    assert post(url, "/keys", body, stale) == 401
    # Signed for another operation: the signature covers the path.
    assert post(url, "/wrap", body, sign_request(CALLER, caller, "POST", "/keys", body)) == 401
    # What the organisation did not allow this caller: its own site's keys.
    site_key = sign_request(CALLER, caller, "POST", "/site-key", body)
    assert post(url, "/site-key", body, site_key) == 403
    for path in ("/unwrap", "/keys/export", "/decrypt"):
        assert post(url, path, body, sign_request(CALLER, caller, "POST", path, body)) == 404
    with pytest.raises(KeyServiceUnavailable):
        RemoteKeyService("http://127.0.0.1:9", CALLER, caller, timeout=2).create_key()


def test_the_token_files_hold_no_key_in_the_clear(world, job, charite_service):
    url, caller, state = charite_service
    _, data_key = uploaded_through(url, caller, world)
    for path in Path(state).rglob("*"):
        if path.is_file():
            assert data_key not in path.read_bytes(), path
    assert os.stat(state / "token.pin").st_mode & 0o077 == 0


def test_a_suspension_on_the_platform_reaches_the_owners_service_and_only_the_owner_lifts_it(
    world, job, enclave_key, charite_service, django_capture_on_commit_callbacks
):
    url, caller, state = charite_service
    uploaded_through(url, caller, world)
    dataset = world.charite.datasets.get()
    with django_capture_on_commit_callbacks(execute=True):
        suspend_dataset(dataset=dataset, by=world.alice)
    remote = RemoteKeyService(url, CALLER, caller)
    with pytest.raises(Refused, match="suspended by its owner"):
        remote.release(release_request(job, document(job, enclave_key)))
    # The platform's caller was not granted the lift: the owner lifts it on its own host.
    with pytest.raises(Refused, match="may not ask for resume"):
        remote.resume(dataset.pk)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "keyservice",
            "resume",
            str(state),
            "--label",
            "charite",
            "--dataset",
            str(dataset.pk),
        ],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(django_settings.BASE_DIR)},
        check=True,
        capture_output=True,
    )
    released = remote.release(release_request(job, document(job, enclave_key)))
    assert released.sealed_key


def test_a_participation_suspension_reaches_the_owners_service_for_that_room_alone(
    world,
    job,
    enclave_key,
    charite_service,
    django_capture_on_commit_callbacks,
    settings,
):
    url, caller, state = charite_service
    uploaded_through(url, caller, world)
    # A job of another room with the same dataset, made as `job` was (before Charité's
    # service was named, so pharma may receive without a service of its own).
    settings.KEY_SERVICES = {}
    with django_capture_on_commit_callbacks(execute=False):
        elsewhere = run_query(query=approved(world, second_room(world)), by=world.bob)
    settings.KEY_SERVICES = {"charite": url}
    room = job.query.room
    with django_capture_on_commit_callbacks(execute=True):
        suspend_participation(room=room, organization=world.charite, by=world.alice)
    remote = RemoteKeyService(url, CALLER, caller)
    # Asked directly, as an operator skipping the platform's checks would: refused for this
    # room, read from the approved form; the same dataset's key still goes to the other room.
    with pytest.raises(Refused, match=f"suspended its participation in room:{room.pk}"):
        remote.release(release_request(job, document(job, enclave_key)))
    assert remote.release(release_request(elsewhere, document(elsewhere, enclave_key))).sealed_key
    with pytest.raises(Refused, match="may not ask for resume"):
        remote.resume_room(room.pk)
    lift = ["resume", str(state), "--label", "charite", "--room", str(room.pk)]
    subprocess.run(
        [sys.executable, "-m", "keyservice", *lift],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(django_settings.BASE_DIR)},
        check=True,
        capture_output=True,
    )
    assert remote.release(release_request(job, document(job, enclave_key))).sealed_key
    decisions = [json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()]
    assert {"caller": CALLER, "room": room.pk, "operation": "suspend"}.items() <= next(
        d for d in decisions if d.get("operation") == "suspend"
    ).items()


def test_requests_at_the_same_time_are_all_answered(world, charite_service):
    # Several of the platform's processes ask at once: a second login to the token while another
    # request's session was open made the service drop requests without an answer.
    url, caller, _ = charite_service
    remote = RemoteKeyService(url, CALLER, caller)
    with ThreadPoolExecutor(8) as pool:
        keks = list(pool.map(lambda _: remote.create_key(), range(32)))
    assert len(set(keks)) == 32
