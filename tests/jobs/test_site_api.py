"""The site API against the sites that may lie: each attack made as that site makes it, over
real HTTP to a live control plane, signed with real certificates from the deployment's site API
CA (parties/site_certificates.py): a claim for another site's job, a replayed or stale request,
a certificate from another CA, a report or a result for an attempt whose lease the site does
not hold, and a site's certificate at the users' API. Each is refused and changes nothing."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.crypto.signed_requests import TIMESTAMP, SiteCredentials
from jobs.engines.base import EngineError
from jobs.engines.orders import Lease
from jobs.execution import outbox
from jobs.execution.leases import LeaseLost
from jobs.execution.lifecycle import run_query
from jobs.models import Job, Result, SiteRequestNonce
from jobs.sites.client import SiteApiClient
from parties.site_certificates import ensure_site_certificates
from tests.factories import token_for
from tests.jobs.site_api_worker import SiteApiServer
from tests.jobs.test_key_release import approved

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "eu-frankfurt-tee"
OTHER = "ch-zurich-tee"


@pytest.fixture
def certificates(tmp_path, settings) -> Path:
    """This deployment's site API CA and two TEE sites' certificates; the control plane trusts
    the CA."""
    root = tmp_path / "site-api"
    ensure_site_certificates(root, [SITE, OTHER], ["localhost"])
    settings.SITE_API_CA = root / "ca.crt"
    return root


def credentials(root: Path, site: str) -> SiteCredentials:
    folder = root / "sites" / site
    return SiteCredentials.load(
        (folder / "tls.crt").read_bytes(), (folder / "tls.key").read_bytes()
    )


@pytest.fixture
def site_api(live_server, certificates):
    """A site's client of the live control plane's site API, signing as `site` (with the
    certificates of `root`: by default this deployment's)."""

    def client(site: str, root: Path = certificates) -> SiteApiClient:
        return SiteApiClient(
            f"{live_server.url}/site-api",
            site,
            credentials(root, site),
            certificates / "ca.crt",
        )

    return client


@pytest.fixture
def job(world, tmp_path, monkeypatch) -> Job:
    """A TEE job placed at SITE, created and kept off the broker: the test plays its site."""
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    job = run_query(query=approved(world, world.study(tmp_path)), by=world.bob)
    assert job.site.name == SITE
    return job


def events(job: Job, kind: str) -> list[dict]:
    return [
        e
        for e in events_of(room_log_name(job.query.room_id))
        if e["type"] == kind and e["data"].get("job") == f"job:{job.pk}"
    ]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - the live server, over http
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_site_a_job_is_placed_at_claims_it_and_gets_its_work_order(job, site_api):
    order = site_api(SITE).claim(job.pk)

    assert order is not None
    assert (order.job, order.attempt, order.site, order.digest) == (
        job.pk,
        1,
        SITE,
        job.query.digest,
    )
    assert [d.name for d in order.datasets] == ["charite.patients", "usz.patients"]
    job.refresh_from_db()
    assert (job.state, job.attempt, job.lease_site.name) == (Job.State.RUNNING, 1, SITE)
    # A second claim while the lease is live does nothing: exactly once, through the API too.
    assert site_api(SITE).claim(job.pk) is None


def test_a_site_claiming_a_job_placed_at_another_site_is_refused_and_the_job_untouched(
    job, site_api
):
    with pytest.raises(EngineError, match=f"not placed at {OTHER}"):
        site_api(OTHER).claim(job.pk)

    job.refresh_from_db()
    assert (job.state, job.attempt, job.lease_site) == (Job.State.QUEUED, 0, None)
    [refused] = events(job, "access.refused")
    assert refused["data"]["site"] == OTHER and refused["data"]["what"] == "claim"
    # Its own site still claims it.
    assert site_api(SITE).claim(job.pk) is not None


def test_a_replayed_signed_request_is_refused(job, site_api, live_server, certificates):
    path = f"/site-api/jobs/{job.pk}/claim"
    headers = credentials(certificates, SITE).headers("POST", path, b"{}")

    first = post(live_server.url + path, b"{}", headers)
    replayed = post(live_server.url + path, b"{}", headers)

    assert first[0] == 200 and first[1]["order"]["attempt"] == 1
    assert replayed == (
        403,
        {
            "refused": "Not a site's request: the request was already made (its nonce is used).",
            "code": "not_a_site",
        },
    )
    job.refresh_from_db()
    assert job.attempt == 1
    assert SiteRequestNonce.objects.filter(nonce=headers["X-Site-Nonce"]).count() == 1


def test_a_stale_signed_request_is_refused(job, live_server, certificates, monkeypatch):
    path = f"/site-api/jobs/{job.pk}/claim"
    # Signed ten minutes ago (a recording of a site's request, or a site's wrong clock).
    then = int(time.time()) - 600
    with monkeypatch.context() as past:
        past.setattr(time, "time", lambda: then)
        headers = credentials(certificates, SITE).headers("POST", path, b"{}")
    assert int(headers[TIMESTAMP]) == then

    status, answer = post(live_server.url + path, b"{}", headers)

    assert status == 403 and "timestamp" in answer["refused"]
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.QUEUED, 0)


def test_a_certificate_from_another_ca_is_refused(job, site_api, tmp_path):
    # A CA of its own, issuing itself a certificate in the real site's name.
    elsewhere = tmp_path / "another-ca"
    ensure_site_certificates(elsewhere, [SITE], ["localhost"])

    with pytest.raises(EngineError, match="not from this deployment's site API CA"):
        site_api(SITE, root=elsewhere).claim(job.pk)

    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.QUEUED, 0)


def test_a_report_or_result_for_an_attempt_whose_lease_the_site_does_not_hold_is_refused(
    job, site_api
):
    order = site_api(SITE).claim(job.pk)
    assert order is not None
    held = Lease("job", job.pk, order.attempt)
    stale = Lease("job", job.pk, order.attempt + 1)
    table = {"columns": ["n"], "rows": [[1]]}

    # Another site, with a certificate of this deployment, acts on the attempt SITE holds.
    other = site_api(OTHER)
    with pytest.raises(LeaseLost):
        other.recorder(held, job.pk).progress(job.pk, 50, "halfway")
    with pytest.raises(LeaseLost):
        other.release(held, table)
    with pytest.raises(LeaseLost):
        other.fail(held, "ended by another site")
    with pytest.raises(LeaseLost):
        other.renew(held)
    # The holder itself, for an attempt it does not hold.
    with pytest.raises(LeaseLost):
        site_api(SITE).release(stale, table)

    job.refresh_from_db()
    assert (job.state, job.attempt, job.progress) == (Job.State.RUNNING, 1, 5)
    assert not Result.objects.filter(job=job).exists()
    # The holder's own report is taken.
    assert site_api(SITE).recorder(held, job.pk).progress(job.pk, 50, "halfway") is True


def test_a_site_certificate_does_not_open_the_users_api_nor_a_users_token_the_site_api(
    job, world, live_server, certificates
):
    site = credentials(certificates, SITE)
    room = job.query.room.slug
    # The site reads the job's page and cancels it through the analysts' API, signed.
    detail = f"/api/rooms/{room}/jobs/{job.pk}/"
    read = urllib.request.Request(  # noqa: S310 - the live server, over http
        live_server.url + detail, headers=site.headers("GET", detail, b"")
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(read, timeout=30)  # noqa: S310
    refused.value.close()
    cancel = f"/api/rooms/{room}/jobs/{job.pk}/cancel/"
    status, _ = post(live_server.url + cancel, b"{}", site.headers("POST", cancel, b"{}"))

    assert refused.value.code == 401 and status == 401
    job.refresh_from_db()
    assert not job.cancel_requested

    # And the analyst's own API token is no site's signature.
    token = token_for(world.bob)
    claim = f"/site-api/jobs/{job.pk}/claim"
    status, answer = post(live_server.url + claim, b"{}", {"Authorization": f"Token {token}"})
    assert status == 403 and answer["code"] == "not_a_site"
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.QUEUED, 0)


def unserved_client(certificates: Path, settings, patience: float = 0) -> tuple[SiteApiClient, int]:
    """SITE's client of a site API at a free port where nothing serves yet."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = SiteApiClient(
        f"http://localhost:{port}/site-api",
        SITE,
        credentials(certificates, SITE),
        certificates / "ca.crt",
        patience=patience,
    )
    return client, port


class _Said(logging.Handler):
    def __init__(self, said: threading.Event):
        super().__init__()
        self.said = said

    def emit(self, record: logging.LogRecord) -> None:
        self.said.set()


def test_a_claim_the_control_plane_does_not_answer_is_asked_again_once_it_is_back(
    job, certificates, settings
):
    """The control plane restarting as a site's worker takes the job's task: a claim given up
    would leave the job queued as sent, and nothing sends it again. The claim is asked again
    until the site API answers, and gets the work order."""
    client, port = unserved_client(certificates, settings)
    unanswered = threading.Event()
    said = _Said(unanswered)
    logging.getLogger("jobs.sites.client").addHandler(said)
    claimed = []
    claiming = threading.Thread(target=lambda: claimed.append(client.claim(job.pk)), daemon=True)
    claiming.start()
    server = SiteApiServer(port)
    try:
        # The control plane is down: the claim went unanswered.
        assert unanswered.wait(30)
        assert claimed == []
        server.start()
        claiming.join(30)
    finally:
        server.stop()
        logging.getLogger("jobs.sites.client").removeHandler(said)

    assert not claiming.is_alive()
    [order] = claimed
    assert order is not None and (order.job, order.attempt) == (job.pk, 1)
    job.refresh_from_db()
    assert (job.state, job.lease_site.name) == (Job.State.RUNNING, SITE)


def test_a_report_the_control_plane_never_received_is_asked_again_within_the_lease(
    job, site_api, certificates, settings
):
    """A link down or the site API restarting for a moment, as the site reports: the request
    never reached the control plane, so asking again cannot record it twice. It is asked again,
    within the lease, and lands; the attempt goes on instead of ending on a blip."""
    order = site_api(SITE).claim(job.pk)
    assert order is not None
    held = Lease("job", job.pk, order.attempt)
    client, port = unserved_client(certificates, settings, patience=60)
    unanswered = threading.Event()
    said = _Said(unanswered)
    logging.getLogger("jobs.sites.client").addHandler(said)
    answered = []
    reporting = threading.Thread(
        target=lambda: answered.append(client.recorder(held, job.pk).progress(job.pk, 60, "x")),
        daemon=True,
    )
    reporting.start()
    server = SiteApiServer(port)
    try:
        assert unanswered.wait(30)  # the control plane is down: the report went unanswered
        assert answered == []
        server.start()
        reporting.join(60)
    finally:
        server.stop()
        logging.getLogger("jobs.sites.client").removeHandler(said)

    assert answered == [True]
    job.refresh_from_db()
    assert (job.state, job.progress) == (Job.State.RUNNING, 60)
