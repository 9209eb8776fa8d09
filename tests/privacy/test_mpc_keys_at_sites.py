"""Each MPC party's private keys stay at its own site. An owner's input step seals a party's
shares to the share key in the party's certificate, which it verifies against the deployment's
MPC CA; it never reads a key file, so it runs where no party's key is. Played as the operator
or storage admin who hosts the owners' copies of the parties' certificates and swaps one, and as
a party site that would like another party's key from what the owners hold.

Each defence was checked by hand to fail these tests when removed (see the branch's report):
reading the key from `share.key` again, skipping the certificate's verification, and sealing
each party's shares before the next party's certificate is checked."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.crypto.sealing import public_bytes
from dataplane.mpc import sharing
from dataplane.privacy.release import COUNT
from jobs import tasks
from jobs.engines.base import EngineError
from jobs.engines.mpc import inbox, inputs
from jobs.engines.mpc.certificates import (
    SHARE_KEY_OID,
    SHARE_SEALING_USAGE,
    ensure_credentials,
    ensure_sender_credentials,
    party_private_key,
)
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import Job, JobStep
from tests.jobs.mpc_support import (
    INPUT_SITES,
    PARTY_SITES,
    approved_union,
    per_site_credentials,
    plain_answer,
    three_hospitals,
)

pytestmark = pytest.mark.django_db

# The files a step opens, while `_opened` is a list: an audit hook cannot be removed, so it
# stays installed and records only then.
_opened: list[Path] | None = None


def _record_open(event: str, arguments: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(arguments[0], str | Path):
        _opened.append(Path(arguments[0]))


sys.addaudithook(_record_open)


@contextmanager
def files_opened() -> Iterator[list[Path]]:
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture
def job(world, tmp_path, monkeypatch) -> Job:
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    return run_query(query=approved_union(world, three_hospitals(world, tmp_path)), by=world.bob)


@pytest.fixture
def roots(tmp_path) -> dict[str, Path]:
    return per_site_credentials(tmp_path / "deployment", tmp_path / "sites")


def _delivery(source: JobStep, party: int) -> inbox.Delivery:
    """What `source`'s output says it sent `party`."""
    sent = source.output["shares"][str(party)]
    return inbox.Delivery(
        job=source.job_id,
        step=source.pk,
        attempt=source.attempt,
        dataset=source.dataset_id,
        party=party,
        length=int(sent["length"]),
        sha256=sent["sha256"],
    )


def _run_input(job: Job, monkeypatch, settings, site: str, credentials: Path) -> str:
    """The input step at `site`, as that site's worker runs it, with `credentials` its folder."""
    settings.MPC_CREDENTIALS_DIR = credentials
    step = job.steps.get(kind=JobStep.Kind.INPUT, site__name=site)
    monkeypatch.setenv("CLEANROOM_SITE", site)
    return tasks.run_step(step.pk, site)


def _private_material(deployment: Path) -> list[bytes]:
    """Every private key of the deployment, as the bytes a file holding it would contain."""
    material = [b"PRIVATE KEY", (deployment / "ca.key").read_bytes()]
    for site in PARTY_SITES:
        folder = deployment / "parties" / site
        share = (folder / "share.key").read_bytes()
        tls = serialization.load_pem_private_key((folder / "tls.key").read_bytes(), None)
        material += [share, folder.joinpath("tls.key").read_bytes()]
        material.append(tls.private_numbers().private_value.to_bytes(32, "big"))
    return material


@pytest.mark.django_db(transaction=True)
def test_owners_seal_with_no_key_at_their_site_and_each_party_opens_its_shares_with_its_own(
    job, roots, share_inboxes, monkeypatch, settings, tmp_path
):
    share_inboxes.start(*PARTY_SITES, credentials=roots)
    opened_by_owners = []
    for site in INPUT_SITES:
        with files_opened() as opened:
            assert _run_input(job, monkeypatch, settings, site, roots[site]) == "shared"
        opened_by_owners += opened
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING, job.error

    # The owners read only the CA's certificate and the parties' certificates of their own
    # folders (and OpenSSL their own sender certificate and key), and made nothing there.
    credentials = [p for p in opened_by_owners if tmp_path / "sites" in p.parents]
    assert {p.name for p in credentials} == {"ca.crt", "tls.crt"}
    assert all(any(roots[s] in p.parents for s in INPUT_SITES) for p in credentials)
    for site in INPUT_SITES:
        held = sorted(str(p.relative_to(roots[site])) for p in roots[site].rglob("*.*"))
        assert held == [
            "ca.crt",
            *(f"parties/{party}/tls.crt" for party in sorted(PARTY_SITES)),
            f"senders/{site}/tls.crt",
            f"senders/{site}/tls.key",
        ]

    # Each party opens the shares its inbox received, from its own inbox folder, with the key in
    # its own credentials folder only; no party's folder yields another party's key.
    context = inputs.query_context(job.query.canonical)
    received = {}
    for compute in job.steps.filter(kind=JobStep.Kind.COMPUTE).select_related("site"):
        site = compute.site.name
        key = party_private_key(roots[site], site)
        vectors = [
            sharing.open_for_party(
                inbox.received(settings.MPC_INBOX_DIR, site, _delivery(source, compute.party)),
                key,
                inputs.input_context(job.pk, source.dataset_id, compute.party),
            )
            for source in job.steps.filter(kind=JobStep.Kind.INPUT)
        ]
        received[compute.party] = [
            sum(cells) % sharing.MODULUS for cells in zip(*vectors, strict=True)
        ]
        for other in set(PARTY_SITES) - {site}:
            with pytest.raises(EngineError, match=rf"No share\.key for {other}"):
                party_private_key(roots[site], other)
    # Any two parties recombine the owners' exact total: the shares were sealed to the right keys.
    totals = sharing.recombine({p: received[p] for p in (0, 1)})
    assert totals == sharing.recombine({p: received[p] for p in (1, 2)})
    count = context.layout.index(COUNT)
    counts = totals[count * context.groups : (count + 1) * context.groups]
    assert sum(counts) == sum(row["n"] for row in plain_answer(tmp_path).values())


@pytest.mark.django_db(transaction=True)
def test_what_an_owner_reads_to_seal_holds_no_private_key_even_beside_every_key(
    job, share_inboxes, monkeypatch, settings, tmp_path
):
    """The single-folder layout, where the CA's and every party's keys sit beside the
    certificates: the owner's step still opens none of them (only its own sender key)."""
    deployment = tmp_path / "deployment"
    ensure_credentials(deployment, PARTY_SITES)
    ensure_sender_credentials(deployment, INPUT_SITES)
    share_inboxes.start(*PARTY_SITES, credentials=dict.fromkeys(PARTY_SITES, deployment))
    with files_opened() as opened:
        assert _run_input(job, monkeypatch, settings, "eu-frankfurt", deployment) == "shared"

    own = deployment / "senders" / "eu-frankfurt"
    read = sorted({p for p in opened if deployment in p.parents and own not in p.parents})
    assert read, "the step read the parties' certificates from its credentials folder"
    material = _private_material(deployment)
    for path in read:
        content = path.read_bytes()
        assert not any(secret in content for secret in material), path


# The owner's copy of a party's certificate, swapped ------------------------------------------


def _certificate(
    site: str,
    share_public: bytes,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    usages: tuple = (SHARE_SEALING_USAGE,),
    valid_days: tuple[int, int] = (-1, 30),
) -> bytes:
    """A certificate for `site` carrying `share_public`, self-signed unless `issuer` signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_days[0]))
        .not_valid_after(now + datetime.timedelta(days=valid_days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, *usages]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(SHARE_KEY_OID, b"\x04\x20" + share_public), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _deployment_ca(deployment: Path) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate((deployment / "ca.crt").read_bytes())
    return ca.subject, serialization.load_pem_private_key(
        (deployment / "ca.key").read_bytes(), None
    )


def _another_ca(tmp_path: Path, site: str) -> bytes:
    other = tmp_path / "another-deployment"
    ensure_credentials(other, [site])
    return (other / "parties" / site / "tls.crt").read_bytes()


def _another_site(tmp_path: Path, site: str) -> bytes:
    ensure_credentials(tmp_path / "deployment", ["us-ohio-mpc"])
    return (tmp_path / "deployment" / "parties" / "us-ohio-mpc" / "tls.crt").read_bytes()


def _another_key(tmp_path: Path, site: str) -> bytes:
    """The genuine certificate with the share key's bytes replaced: the CA's signature no
    longer holds."""
    genuine = x509.load_pem_x509_certificate(
        (tmp_path / "deployment" / "parties" / site / "tls.crt").read_bytes()
    )
    key = genuine.extensions.get_extension_for_oid(SHARE_KEY_OID).value.value[2:]
    der = genuine.public_bytes(serialization.Encoding.DER)
    assert der.count(key) == 1
    stranger = public_bytes(X25519PrivateKey.generate())
    return x509.load_der_x509_certificate(der.replace(key, stranger)).public_bytes(
        serialization.Encoding.PEM
    )


def _self_signed(tmp_path: Path, site: str) -> bytes:
    return _certificate(site, public_bytes(X25519PrivateKey.generate()))


def _expired(tmp_path: Path, site: str) -> bytes:
    return _certificate(
        site,
        public_bytes(X25519PrivateKey.generate()),
        issuer=_deployment_ca(tmp_path / "deployment"),
        valid_days=(-30, -1),
    )


def _for_tls_only(tmp_path: Path, site: str) -> bytes:
    return _certificate(
        site,
        public_bytes(X25519PrivateKey.generate()),
        issuer=_deployment_ca(tmp_path / "deployment"),
        usages=(),
    )


@pytest.mark.parametrize(
    "swapped",
    [_another_ca, _self_signed, _another_site, _another_key, _expired, _for_tls_only],
)
def test_an_owner_seals_nothing_to_a_certificate_it_cannot_verify(
    swapped, job, roots, monkeypatch, settings, tmp_path
):
    # The last party: the shares of the parties before it would be sealed first.
    victim = job.steps.filter(kind=JobStep.Kind.COMPUTE).order_by("party").last().site.name
    owner = roots["eu-frankfurt"]
    (owner / "parties" / victim / "tls.crt").write_bytes(swapped(tmp_path, victim))

    assert _run_input(job, monkeypatch, settings, "eu-frankfurt", owner) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error.startswith(f"The MPC certificate of {victim} is refused:"), job.error
    assert not list((tmp_path / "storage").rglob("*.sealed"))
    assert not list(settings.MPC_INBOX_DIR.rglob("*.sealed"))
    assert not job.steps.filter(state=JobStep.State.SUCCEEDED).exists()
    succeeded = [
        e for e in events_of(room_log_name(job.query.room_id)) if e["type"] == "job.step.succeeded"
    ]
    assert not succeeded
