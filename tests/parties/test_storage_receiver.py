"""Storage per jurisdiction, reached only from there: with CLEANROOM_STORAGE_SITES naming a
jurisdiction, the web tier stores that jurisdiction's dataset files through its storage
receiver (parties/storage_receiver.py), over real HTTPS on 127.0.0.1 with certificates from a
real site API CA, and never opens a path under that jurisdiction's root. Each of the receiver's
refusals is tried by the request an attacker (or a confused web tier) would send."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import selectors
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
from cryptography import x509
from django.conf import settings
from django.core.management import call_command

from cleanroom.crypto.certificates import Authority
from cleanroom.crypto.envelope import decrypt_stream
from cleanroom.crypto.keys import key_service
from cleanroom.crypto.signed_requests import SignatureRefused, SiteCredentials, verify
from parties.models import Dataset, DatasetVersion
from parties.site_certificates import (
    DATASET_STORING_USAGE,
    ensure_site_certificates,
    ensure_storage_certificates,
    storage_receiver_folder,
    storage_writer_folder,
)
from parties.storage import CONTENT_SHA256, StorageReceiverClient, StorageRefused
from parties.storage_receiver import WITHDRAWAL_WINDOW, StorageReceiver
from tests import factories

NAME = "charite/patients/" + "ab" * 12 + ".parquet.enc"
STARTUP = 60.0
RECEIVER_COMMAND = ["storage_receiver", "--jurisdiction", "EU", "--address", "127.0.0.1:0"]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def ca_root(settings, tmp_path) -> Path:
    """The site API CA with a site's certificate, the storage writer's and the EU and CH
    receivers' (reached as localhost)."""
    root = tmp_path / "site-api"
    ensure_site_certificates(root, ["eu-frankfurt"], ["control.cleanroom.test"])
    ensure_storage_certificates(root, {"EU": ["localhost"], "CH": ["localhost"]})
    settings.SITE_API_CREDENTIALS_DIR = root
    settings.SITE_API_CA = root / "ca.crt"
    return root


def credentials(folder: Path) -> SiteCredentials:
    return SiteCredentials.load(
        (folder / "tls.crt").read_bytes(), (folder / "tls.key").read_bytes()
    )


@contextmanager
def receiver(ca_root: Path, root: Path, jurisdiction: str = "EU") -> Iterator[StorageReceiver]:
    """A storage receiver serving in a thread of this process, on a free port of 127.0.0.1."""
    folder = storage_receiver_folder(ca_root, jurisdiction)
    server = StorageReceiver(
        ("127.0.0.1", 0),
        jurisdiction=jurisdiction,
        root=root,
        ca_file=ca_root / "ca.crt",
        certificate=folder / "tls.crt",
        key=folder / "tls.key",
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def eu(ca_root, tmp_path) -> Iterator[StorageReceiver]:
    with receiver(ca_root, tmp_path / "eu-site" / "storage") as server:
        yield server


def client_of(server: StorageReceiver, signer: SiteCredentials, ca_root: Path, code="EU"):
    return StorageReceiverClient(
        code, f"https://localhost:{server.server_address[1]}", signer, ca_root / "ca.crt"
    )


def put(
    server: StorageReceiver,
    ca_root: Path,
    path: str,
    body: bytes,
    signer: SiteCredentials | None,
    *,
    stated: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, dict[str, str]]:
    """A raw PUT, signed by `signer` over `stated` (the body's real SHA-256 by default); the
    status, the answer and the headers sent (to replay them)."""
    stated = stated or hashlib.sha256(body).hexdigest()
    if headers is None:
        headers = {CONTENT_SHA256: stated, "Content-Length": str(len(body))}
        if signer is not None:
            headers |= signer.headers_for_digest("PUT", path, stated)
    context = ssl.create_default_context(cafile=str(ca_root / "ca.crt"))
    connection = http.client.HTTPSConnection(
        "localhost", server.server_address[1], context=context, timeout=30
    )
    try:
        connection.request("PUT", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(), headers
    finally:
        connection.close()


def writer(ca_root: Path) -> SiteCredentials:
    return credentials(storage_writer_folder(ca_root))


@pytest.mark.django_db
def test_site_certificates_makes_the_receivers_and_the_writer_s_certificates(settings, tmp_path):
    settings.SITE_API_CREDENTIALS_DIR = tmp_path / "made"
    call_command(
        "site_certificates",
        *("--server-name", "control.cleanroom.test", "--storage", "EU=storage.eu.test"),
        verbosity=0,
    )
    receiver_certificate = x509.load_pem_x509_certificate(
        (tmp_path / "made" / "storage" / "eu" / "tls.crt").read_bytes()
    )
    names = receiver_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["storage.eu.test"]
    writer_certificate = x509.load_pem_x509_certificate(
        (tmp_path / "made" / "storage-writer" / "tls.crt").read_bytes()
    )
    usages = writer_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(usages.value) == [DATASET_STORING_USAGE]


# --- the web tier stores through the receiver and nowhere else ------------------------------


def _site_receiver(ca_root: Path, root: Path, var: Path) -> tuple[subprocess.Popen, int]:
    """`manage.py storage_receiver` as the EU site runs it: CLEANROOM_ROLE=site, no database,
    its own storage root; returns the process and the port it listens on."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEANROOM_", "DATABASE"))},
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_ROLE": "site",
        "CLEANROOM_VAR_DIR": str(var),
        "CLEANROOM_SITE_API_URL": "https://control.cleanroom.test:8443/site-api",
        "CLEANROOM_SITE_API_CREDENTIALS_DIR": str(ca_root),
        "CLEANROOM_STORAGE_ROOTS": f"EU={root}",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", *RECEIVER_COMMAND],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    watch = selectors.DefaultSelector()
    watch.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline and process.poll() is None:
        if watch.select(timeout=deadline - time.monotonic()):
            line = process.stdout.readline()
            if "listening on" in line:
                return process, int(line.split("listening on ")[1].split(",")[0].rsplit(":")[1])
    process.kill()
    raise AssertionError(f"the receiver did not start: {process.communicate(timeout=30)[1]}")


@pytest.mark.django_db
def test_an_upload_lands_only_in_the_eu_receiver_s_root_and_the_web_tier_needs_none(
    world, patients_csv, ca_root, tmp_path, settings
):
    site_root = tmp_path / "eu-site" / "storage"
    process, port = _site_receiver(ca_root, site_root, tmp_path / "eu-site" / "var")
    try:
        # The web tier's EU root is under a regular file: no folder can ever be made there.
        (tmp_path / "not-a-folder").write_text("")
        settings.STORAGE_ROOTS = {"EU": tmp_path / "not-a-folder" / "eu"}
        settings.STORAGE_SITES = {"EU": f"https://localhost:{port}"}
        version = factories.dataset(world.charite, world.alice, patients_csv)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    stored = site_root / version.storage_path
    assert files_under(site_root) == [stored]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == version.ciphertext_sha256
    data_key = key_service().unwrap(
        version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
    )
    plain = io.BytesIO()
    with stored.open("rb") as source:
        decrypt_stream(source, plain, data_key)
    assert pl.read_parquet(plain).height == 200
    assert files_under(settings.STORAGE_ROOT) == []
    assert list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()) == []


@pytest.mark.django_db
def test_a_registration_that_fails_after_the_file_was_sent_leaves_nothing_stored(
    world, patients_csv, ca_root, eu, tmp_path, settings
):
    settings.STORAGE_SITES = {"EU": f"https://localhost:{eu.server_address[1]}"}
    # The key service cannot keep the new key (its folder is a file): the registration fails
    # after the encrypted file reached the receiver, when the version's key is wrapped.
    (tmp_path / "keys-gone").write_text("")
    settings.KEY_SERVICE_ROOT = tmp_path / "keys-gone"
    key_service.cache_clear()
    with pytest.raises(OSError):
        factories.dataset(world.charite, world.alice, patients_csv)
    assert files_under(eu.root) == []
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()


@pytest.mark.django_db
def test_an_unreachable_receiver_refuses_the_upload_and_nothing_is_recorded(
    world, patients_csv, ca_root, settings
):
    with receiver(ca_root, Path(settings.STORAGE_ROOT) / "gone") as server:
        port = server.server_address[1]
    settings.STORAGE_SITES = {"EU": f"https://localhost:{port}"}
    with pytest.raises(StorageRefused, match="cannot be reached"):
        factories.dataset(world.charite, world.alice, patients_csv)
    assert not Dataset.objects.exists()
    assert list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()) == []


def _peak_memory(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_large_file_streams_to_disk_in_memory_that_does_not_grow_with_it(ca_root, tmp_path):
    site_root = tmp_path / "eu-site" / "storage"
    process, port = _site_receiver(ca_root, site_root, tmp_path / "eu-site" / "var")
    mib = 1024**2
    try:
        client = StorageReceiverClient(
            "EU", f"https://localhost:{port}", writer(ca_root), ca_root / "ca.crt"
        )
        warm_up = tmp_path / "warm-up"
        warm_up.write_bytes(os.urandom(4 * mib))
        client.send(NAME, warm_up)
        before = _peak_memory(process.pid)
        large, name = tmp_path / "large", NAME.replace("ab" * 12, "cd" * 12)
        with large.open("wb") as out:
            for _ in range(256):
                out.write(os.urandom(mib))
        client.send(name, large)
        after = _peak_memory(process.pid)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert (site_root / name).stat().st_size == 256 * mib
    # Measured here: the peak does not move (a block is 1 MiB); holding the body would be 256.
    assert after - before < 16 * mib, f"the peak grew {(after - before) / mib:.0f} MiB"


# --- the receiver's refusals ----------------------------------------------------------------


def test_the_storage_writer_stores_and_withdraws_its_own_fresh_file(eu, ca_root, tmp_path):
    client = client_of(eu, writer(ca_root), ca_root)
    source = tmp_path / "object"
    source.write_bytes(b"ciphertext" * 1000)
    client.send(NAME, source)
    assert (eu.root / NAME).read_bytes() == source.read_bytes()
    assert [p.name for p in (eu.root / NAME).parent.iterdir()] == [Path(NAME).name]
    client.remove(NAME)
    assert files_under(eu.root) == []


def test_an_unsigned_request_is_refused(eu, ca_root):
    status, answer, _ = put(eu, ca_root, f"/objects/EU/{NAME}", b"data", None)
    assert status == 403 and "not a signed" in answer
    assert files_under(eu.root) == []


def test_a_certificate_from_another_ca_with_the_storing_usage_is_refused(eu, ca_root, tmp_path):
    forged = Authority.create("Cleanroom site API CA", tmp_path / "forged")
    leaf = forged.issue("storage-writer", ["storage-writer"], [DATASET_STORING_USAGE])
    leaf.save(tmp_path / "forged" / "writer")
    status, answer, _ = put(
        eu, ca_root, f"/objects/EU/{NAME}", b"data", credentials(tmp_path / "forged" / "writer")
    )
    assert status == 403 and "not from this deployment's site API CA" in answer
    assert files_under(eu.root) == []


def test_a_site_s_own_certificate_cannot_store_a_dataset_file(eu, ca_root):
    site = credentials(ca_root / "sites" / "eu-frankfurt")
    status, answer, _ = put(eu, ca_root, f"/objects/EU/{NAME}", b"data", site)
    assert status == 403 and "does not have the usage" in answer
    assert files_under(eu.root) == []


def test_the_storage_writer_s_certificate_opens_no_site_api_door(ca_root):
    """The other way round: the certificate that stores files is not a site's."""
    signer = writer(ca_root)
    path, body = "/site-api/jobs/1/claim", b"{}"
    ca = Authority.load(ca_root).certificate
    with pytest.raises(SignatureRefused, match="not a site's"):
        verify(
            ca, "POST", path, hashlib.sha256(body).hexdigest(), signer.headers("POST", path, body)
        )


def test_a_replayed_request_is_refused(eu, ca_root):
    path, body = f"/objects/EU/{NAME}", b"first"
    status, _, headers = put(eu, ca_root, path, body, writer(ca_root))
    assert status == 201
    (eu.root / NAME).unlink()  # so only the nonce stands between the replay and a new file
    status, answer, _ = put(eu, ca_root, path, body, None, headers=headers)
    assert status == 403 and "already made" in answer
    assert files_under(eu.root) == []


@pytest.mark.parametrize(
    "name",
    [
        "../../outside/patients/" + "ab" * 12 + ".parquet.enc",
        "charite/patients/../../../outside.parquet.enc",
        "charite/patients/run.sh",
        "charite/" + "ab" * 12 + ".parquet.enc",
        "charite/patients/" + "ab" * 12 + ".parquet",
        "Charite/patients/" + "ab" * 12 + ".parquet.enc",
        "charite/patients/%2e%2e/" + "ab" * 12 + ".parquet.enc",
    ],
)
def test_a_name_not_of_the_form_org_dataset_hex_parquet_enc_is_refused(eu, ca_root, tmp_path, name):
    status, answer, _ = put(eu, ca_root, f"/objects/EU/{name}", b"data", writer(ca_root))
    assert status == 400 and "org/dataset/<24 hex digits>.parquet.enc" in answer
    assert files_under(tmp_path / "eu-site") == []


def test_a_name_that_leads_out_of_the_root_through_a_link_is_refused(eu, ca_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (eu.root / "charite").symlink_to(outside)
    status, answer, _ = put(eu, ca_root, f"/objects/EU/{NAME}", b"data", writer(ca_root))
    assert status == 403 and "leads out" in answer
    assert files_under(outside) == []


def test_a_stored_file_is_never_overwritten(eu, ca_root):
    path = f"/objects/EU/{NAME}"
    assert put(eu, ca_root, path, b"the original", writer(ca_root))[0] == 201
    status, answer, _ = put(eu, ca_root, path, b"a replacement", writer(ca_root))
    assert status == 409 and "already stored" in answer
    assert (eu.root / NAME).read_bytes() == b"the original"
    assert files_under(eu.root) == [eu.root / NAME]


def test_a_body_that_does_not_match_its_stated_sha256_is_not_stored(eu, ca_root):
    stated = hashlib.sha256(b"what was checked").hexdigest()
    status, answer, _ = put(
        eu, ca_root, f"/objects/EU/{NAME}", b"something else", writer(ca_root), stated=stated
    )
    assert status == 400 and "SHA-256" in answer
    assert files_under(eu.root) == []  # no partial file either


def test_a_file_for_another_jurisdiction_is_refused(eu, ca_root):
    status, answer, _ = put(eu, ca_root, f"/objects/CH/{NAME}", b"data", writer(ca_root))
    assert status == 403 and "stores EU's files, not CH's" in answer
    assert files_under(eu.root) == []
    client = client_of(eu, writer(ca_root), ca_root, code="CH")
    with pytest.raises(StorageRefused, match="not CH's"):
        client.remove(NAME)


def test_a_registered_dataset_s_file_cannot_be_withdrawn(eu, ca_root):
    """The storage writer may take back a file it just stored, not erase an older one."""
    assert put(eu, ca_root, f"/objects/EU/{NAME}", b"registered", writer(ca_root))[0] == 201
    long_ago = time.time() - WITHDRAWAL_WINDOW - 60
    os.utime(eu.root / NAME, (long_ago, long_ago))
    with pytest.raises(StorageRefused, match="only a failed upload's own file"):
        client_of(eu, writer(ca_root), ca_root).remove(NAME)
    assert (eu.root / NAME).read_bytes() == b"registered"


def test_the_web_tier_refuses_a_receiver_whose_certificate_is_not_from_the_ca(ca_root, tmp_path):
    """A host posing as the EU receiver, with a certificate of its own CA for localhost."""
    ensure_storage_certificates(tmp_path / "impostor", {"EU": ["localhost"]})
    with receiver(tmp_path / "impostor", tmp_path / "impostor-root") as impostor:
        source = tmp_path / "object"
        source.write_bytes(b"ciphertext")
        with pytest.raises(StorageRefused, match="is refused"):
            client_of(impostor, writer(ca_root), ca_root).send(NAME, source)
        assert files_under(impostor.root) == []
