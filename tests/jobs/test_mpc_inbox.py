"""A party's share inbox, attacked: the inboxes run as processes of their own (`manage.py
mpc_inbox`) over real TLS, and the test plays each sender. Only the running input step of a
job, from its own site, with a sender certificate of the deployment's MPC CA, delivers a
party's shares, and only the shares sealed to that party; what is stored stays stored; and an
owner's input step writes nothing into any jurisdiction's storage."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from dataclasses import asdict

import pytest
from django.conf import settings

from dataplane.mpc import sharing
from jobs import tasks
from jobs.engines.base import EngineError
from jobs.engines.mpc import inbox
from jobs.engines.mpc.certificates import (
    TlsFiles,
    ensure_credentials,
    ensure_sender_credentials,
    party_public_key,
    party_tls_files,
    sender_tls_files,
)
from jobs.engines.mpc.config import MpcConfig
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.execution.steps import start_step
from jobs.models import Job, JobStep
from parties.models import Site
from tests.jobs.mpc_support import INPUT_SITES, PARTY_SITES, approved_union, three_hospitals

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def credentials(settings, tmp_path):
    """The deployment's MPC credentials, in a folder of this test's own."""
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    ensure_credentials(settings.MPC_CREDENTIALS_DIR, PARTY_SITES)
    ensure_sender_credentials(settings.MPC_CREDENTIALS_DIR, INPUT_SITES)
    return settings.MPC_CREDENTIALS_DIR


@pytest.fixture
def job(world, tmp_path, credentials, monkeypatch) -> Job:
    """An MPC job whose input steps wait for their sites (the test plays them)."""
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    return run_query(query=approved_union(world, three_hospitals(world, tmp_path)), by=world.bob)


@pytest.fixture
def inboxes(share_inboxes, job):
    share_inboxes.start(*PARTY_SITES)
    return share_inboxes


def claimed_input(job: Job, site: str, monkeypatch) -> JobStep:
    """The input step at `site`, claimed by its worker (running, attempt 1)."""
    step = job.steps.get(kind=JobStep.Kind.INPUT, site__name=site)
    monkeypatch.setenv("CLEANROOM_SITE", site)
    claimed = start_step(step.pk, site)
    assert claimed is not None
    return claimed


def party(job: Job, index: int) -> JobStep:
    return job.steps.select_related("site").get(kind=JobStep.Kind.COMPUTE, party=index)


def sealed(credentials, job: Job, step: JobStep, index: int, values=(1, 2, 3)) -> bytes:
    """Shares of `values` sealed to party `index`, as the input step seals them."""
    return sharing.seal_for_party(
        list(values),
        party_public_key(credentials, party(job, index).site.name),
        inbox.input_context(job.pk, step.dataset_id, index),
    )


def delivery(step: JobStep, index: int, blob: bytes, **changed) -> inbox.Delivery:
    fields = {
        "job": step.job_id,
        "step": step.pk,
        "attempt": step.attempt,
        "dataset": step.dataset_id,
        "party": index,
        "length": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        **changed,
    }
    return inbox.Delivery(**fields)


def send_to(job: Job, index: int, tls: TlsFiles, what: inbox.Delivery, blob: bytes) -> str:
    """Send as the input step does, to the inbox of party `index`'s site."""
    config = MpcConfig.from_settings(settings)
    site = party(job, index).site
    address = inbox.address_of(site.name, site.pk, config.inbox_addresses, config.port_base)
    return inbox.send(address, site.name, tls, what, blob, timeout=10)


def answer_without_certificate(address, site: str, context, payload: bytes) -> bytes:
    """What an inbox answers a client that shows no certificate (TLS 1.3: the client learns
    of the refusal only when it reads)."""
    try:
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=site) as channel,
        ):
            channel.sendall(payload)
            return channel.recv(1024)
    except (ssl.SSLError, OSError):
        return b""


def stored(settings) -> list[str]:
    root = settings.MPC_INBOX_DIR
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.sealed")) if root.exists() else []


def test_the_input_steps_own_site_delivers_each_party_its_shares(
    job, inboxes, credentials, monkeypatch, settings
):
    step = claimed_input(job, "eu-frankfurt", monkeypatch)
    tls = sender_tls_files(credentials, "eu-frankfurt")
    for index in range(3):
        blob = sealed(credentials, job, step, index)
        send_to(job, index, tls, delivery(step, index, blob), blob)
    where = f"job-{job.pk}/step-{step.pk}/attempt-1"
    assert stored(settings) == [
        f"{party(job, i).site.name}/{where}/party-{i}.sealed" for i in range(3)
    ]


def test_a_sender_without_a_certificate_of_the_deployments_mpc_ca_is_refused(
    job, inboxes, credentials, monkeypatch, settings, tmp_path
):
    step = claimed_input(job, "eu-frankfurt", monkeypatch)
    blob = sealed(credentials, job, step, 0)
    # A sender certificate for the right site, from a CA of its own.
    ensure_sender_credentials(tmp_path / "forger", ["eu-frankfurt"])
    forged = sender_tls_files(tmp_path / "forger", "eu-frankfurt")
    forged = TlsFiles(ca=credentials / "ca.crt", certificate=forged.certificate, key=forged.key)
    with pytest.raises(EngineError, match=r"cannot be reached|gave no answer"):
        send_to(job, 0, forged, delivery(step, 0, blob), blob)
    # No client certificate at all.
    site = party(job, 0).site
    config = MpcConfig.from_settings(settings)
    address = inbox.address_of(site.name, site.pk, config.inbox_addresses, config.port_base)
    context = ssl.create_default_context(cafile=str(credentials / "ca.crt"))
    header = json.dumps(asdict(delivery(step, 0, blob))).encode()
    assert answer_without_certificate(address, site.name, context, header + b"\n" + blob) == b""
    # A party's own certificate (the same CA, but not allowed to send shares).
    own = party_tls_files(credentials, party(job, 1).site.name)
    with pytest.raises(EngineError, match="may not send MPC input shares"):
        send_to(job, 0, own, delivery(step, 0, blob), blob)
    assert stored(settings) == []


def test_a_site_cannot_deliver_for_a_job_or_dataset_it_is_not_the_input_step_of(
    job, inboxes, credentials, monkeypatch, settings
):
    step = claimed_input(job, "eu-frankfurt", monkeypatch)
    other = job.steps.get(kind=JobStep.Kind.INPUT, site__name="uk-london")
    blob = sealed(credentials, job, step, 0)
    # London's genuine sender certificate, for Frankfurt's step.
    london = sender_tls_files(credentials, "uk-london")
    with pytest.raises(EngineError, match="uk-london is not the site of input step"):
        send_to(job, 0, london, delivery(step, 0, blob), blob)
    # Frankfurt, naming London's dataset (sealed for it) in its own step.
    frankfurt = sender_tls_files(credentials, "eu-frankfurt")
    forged = sharing.seal_for_party(
        [1, 2, 3],
        party_public_key(credentials, party(job, 0).site.name),
        inbox.input_context(job.pk, other.dataset_id, 0),
    )
    with pytest.raises(EngineError, match="does not read dataset"):
        send_to(job, 0, frankfurt, delivery(step, 0, forged, dataset=other.dataset_id), forged)
    # Frankfurt, for London's step (which no worker claimed).
    with pytest.raises(EngineError, match="eu-frankfurt is not the site of input step"):
        send_to(job, 0, frankfurt, delivery(other, 0, forged), forged)
    # A later attempt than the running one, and a job that is not this one.
    with pytest.raises(EngineError, match=r"attempt 2 of input step \d+ is not running"):
        send_to(job, 0, frankfurt, delivery(step, 0, blob, attempt=2), blob)
    with pytest.raises(EngineError, match="has no input step"):
        send_to(job, 0, frankfurt, delivery(step, 0, blob, job=job.pk + 1), blob)
    assert stored(settings) == []


def test_a_partys_inbox_takes_neither_another_partys_shares_nor_shares_sealed_to_another(
    job, inboxes, credentials, monkeypatch, settings
):
    step = claimed_input(job, "eu-frankfurt", monkeypatch)
    tls = sender_tls_files(credentials, "eu-frankfurt")
    for_second = sealed(credentials, job, step, 1)
    # Party 1's shares, addressed as party 1's, to party 0's inbox.
    site = party(job, 0).site
    config = MpcConfig.from_settings(settings)
    address = inbox.address_of(site.name, site.pk, config.inbox_addresses, config.port_base)
    with pytest.raises(EngineError, match=f"places no party 1 at {site.name}"):
        inbox.send(address, site.name, tls, delivery(step, 1, for_second), for_second)
    # Party 1's shares, labelled as party 0's: they do not open with party 0's key.
    with pytest.raises(EngineError, match="do not open with the key of party 0"):
        send_to(job, 0, tls, delivery(step, 0, for_second), for_second)
    # Sent to the inbox of party 0 while naming party 1's site: the certificate check refuses.
    with pytest.raises(EngineError, match="is refused"):
        inbox.send(address, party(job, 1).site.name, tls, delivery(step, 1, for_second), for_second)
    assert stored(settings) == []


def test_a_second_different_delivery_for_the_same_step_attempt_is_refused(
    job, inboxes, credentials, monkeypatch, settings
):
    step = claimed_input(job, "eu-frankfurt", monkeypatch)
    tls = sender_tls_files(credentials, "eu-frankfurt")
    first = sealed(credentials, job, step, 0)
    send_to(job, 0, tls, delivery(step, 0, first), first)
    # The same delivery again (an answer lost on the way) is acknowledged.
    send_to(job, 0, tls, delivery(step, 0, first), first)
    other = sealed(credentials, job, step, 0, values=(9, 9, 9))
    with pytest.raises(EngineError, match=r"a different delivery for this job, step and"):
        send_to(job, 0, tls, delivery(step, 0, other), other)
    [path] = settings.MPC_INBOX_DIR.rglob("*.sealed")
    assert path.read_bytes() == first


def test_an_owners_input_step_writes_nothing_into_any_jurisdictions_storage(
    job, inboxes, monkeypatch, settings
):
    """The owner's step reads its dataset in its own jurisdiction's root and sends the shares
    over the network: every jurisdiction's storage is as it was, file for file."""

    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(settings.STORAGE_ROOT)): p.read_bytes()
            for p in settings.STORAGE_ROOT.rglob("*")
            if p.is_file()
        }

    before = snapshot()
    codes = {Site.objects.get(name=s).jurisdiction.code.lower() for s in PARTY_SITES}
    assert {path.split("/")[0] for path in before} == codes  # every party's jurisdiction
    for site in INPUT_SITES:
        step = job.steps.get(kind=JobStep.Kind.INPUT, site__name=site)
        monkeypatch.setenv("CLEANROOM_SITE", site)
        assert tasks.run_step(step.pk, site) == "shared", Job.objects.get(pk=job.pk).error
    assert snapshot() == before
    # Each party's inbox holds, in its own folder, one delivery of each owner, for itself.
    for index in range(3):
        folder = settings.MPC_INBOX_DIR / party(job, index).site.name
        assert sorted(p.name for p in folder.rglob("*.sealed")) == [f"party-{index}.sealed"] * 3
