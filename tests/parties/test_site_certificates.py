"""`manage.py site_certificates`: the material for mutual TLS between a site and the site API,
tried in real TLS handshakes, with the certificates an attacker would bring."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from jobs.engines.mpc.certificates import ensure_credentials
from parties.site_certificates import ensure_site_certificates

pytestmark = pytest.mark.django_db
SERVER = "sites.cleanroom.test"


@pytest.fixture
def made(settings, tmp_path) -> Path:
    settings.SITE_API_CREDENTIALS_DIR = tmp_path / "site-api"
    call_command("site_certificates", "--server-name", SERVER, verbosity=0)
    return tmp_path / "site-api"


def handshake(server: Path, client: Path | None, server_trusts: Path, client_trusts: Path) -> str:
    """One TLS handshake over a socket pair: `server` and `client` are folders holding tls.crt
    and tls.key. Returns the client certificate's common name as the server sees it."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(server / "tls.crt", server / "tls.key")
    server_side.load_verify_locations(server_trusts)
    server_side.verify_mode = ssl.CERT_REQUIRED
    client_side = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_side.load_verify_locations(client_trusts)
    if client is not None:
        client_side.load_cert_chain(client / "tls.crt", client / "tls.key")
    left, right = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_side.wrap_socket(left, server_side=True) as tls:
                subject = dict(item[0] for item in tls.getpeercert()["subject"])
                seen["name"] = subject["commonName"]
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc
            left.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_side.wrap_socket(right, server_hostname=SERVER) as tls:
            tls.recv(2)  # TLS 1.3: the server's verdict on the client arrives after the handshake
    finally:
        right.close()
        thread.join(timeout=10)
    if "error" in seen:
        raise ssl.SSLError(str(seen["error"]))
    return str(seen["name"])


def test_each_active_site_gets_a_client_certificate_and_keys_stay_private(made):
    assert {p.name for p in (made / "sites").iterdir()} >= {"eu-frankfurt", "ch-geneva-mpc"}
    for key in [made / "ca.key", made / "control" / "tls.key", *made.glob("sites/*/tls.key")]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_site_s_certificate_is_its_identity_at_the_site_api(made):
    site = made / "sites" / "eu-frankfurt"
    assert handshake(made / "control", site, made / "ca.crt", made / "ca.crt") == "eu-frankfurt"


def test_a_certificate_from_another_ca_naming_a_site_is_refused(made, tmp_path):
    """The attacker makes a CA of their own and a client certificate naming eu-frankfurt."""
    forged = tmp_path / "forged"
    ensure_site_certificates(forged, ["eu-frankfurt"], [SERVER])
    with pytest.raises(ssl.SSLError):
        handshake(
            made / "control", forged / "sites" / "eu-frankfurt", made / "ca.crt", forged / "ca.crt"
        )


def test_an_mpc_party_s_certificate_does_not_open_the_site_api(made, tmp_path):
    """A compute party holds a certificate of the deployment's MPC CA: another CA."""
    mpc = tmp_path / "mpc"
    ensure_credentials(mpc, ["eu-paris-mpc"])
    with pytest.raises(ssl.SSLError):
        handshake(
            made / "control", mpc / "parties" / "eu-paris-mpc", made / "ca.crt", made / "ca.crt"
        )


def test_a_client_without_a_certificate_is_refused(made):
    with pytest.raises(ssl.SSLError):
        handshake(made / "control", None, made / "ca.crt", made / "ca.crt")


def test_a_site_cannot_pose_as_the_site_api_to_other_sites(made):
    """A site's certificate names only the site and is for client use only: another site,
    connecting to the site API's name, refuses it as the server's (either defence suffices)."""
    site = made / "sites" / "eu-frankfurt"
    with pytest.raises(ssl.SSLError):
        handshake(site, made / "sites" / "ch-zurich", made / "ca.crt", made / "ca.crt")


def test_certificates_are_made_only_at_the_ca(made, tmp_path, settings):
    """A host's folder (ca.crt without ca.key) never makes certificates of its own."""
    (made / "ca.key").unlink()
    with pytest.raises(CommandError, match="only the CA"):
        call_command("site_certificates", "--server-name", SERVER, verbosity=0)


def test_a_new_server_name_reissues_the_server_certificate_only(made):
    site_before = (made / "sites" / "eu-frankfurt" / "tls.crt").read_bytes()
    call_command(
        "site_certificates", "--server-name", SERVER, "--server-name", "sites.eu.test", verbosity=0
    )
    assert (made / "sites" / "eu-frankfurt" / "tls.crt").read_bytes() == site_before
    site = made / "sites" / "eu-frankfurt"
    assert handshake(made / "control", site, made / "ca.crt", made / "ca.crt") == "eu-frankfurt"
