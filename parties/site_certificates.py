"""The deployment's site API CA: the control plane's server certificate and each site's client
certificate: the identity a site signs its site API requests with (and its client certificate
for mutual TLS, where a deployment adds it in front).

What `manage.py site_certificates` makes, in one folder (SITE_API_CREDENTIALS_DIR, default
var/site-api/):

    ca.crt, ca.key              the site API CA (P-256), apart from the MPC CA   (ca.key: offline)
    control/tls.crt, tls.key    the site API's server certificate: the DNS names it is reached
                                at, server use
    sites/<site>/tls.crt, .key  a site's client certificate: CN and DNS name = the site name,
                                client use only; the site's identity at the site API
    storage/<code>/tls.crt, .key
                                a jurisdiction's storage receiver's server certificate (code
                                in lower case): the DNS names it is reached at, server use
    storage-writer/tls.crt, .key
                                the web tier's certificate for storing dataset files at the
                                receivers: CN `storage-writer`, `DATASET_STORING_USAGE` only
                                (not client use: it opens no site API door, and no site's
                                certificate stores a dataset file)

A site's host gets `ca.crt` and its own `sites/<site>/` folder; the control plane's site API
`ca.crt` and `control/`. The CA is separate from the MPC CA (`manage.py mpc_credentials`): a
party's MPC certificate does not open the site API, nor a site's client certificate an MPC
party's channel. The site API checks a site's certificate on every signed request
(jobs/sites/authentication.py; deploy/README.md, "Certificates" and "The site API"). The web
tier's host gets `ca.crt`, `control/` and `storage-writer/`; a storage receiver's host `ca.crt`
and its `storage/<code>/` (parties/storage_receiver.py).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from cleanroom.crypto.certificates import ARC, Authority

CA_NAME = "Cleanroom site API CA"
# Extended key usage: may store encrypted dataset files at a jurisdiction's storage receiver.
DATASET_STORING_USAGE = ObjectIdentifier(f"{ARC}.4")
STORAGE_WRITER = "storage-writer"


def storage_writer_folder(root: Path) -> Path:
    return root / STORAGE_WRITER


def storage_receiver_folder(root: Path, jurisdiction: str) -> Path:
    return root / "storage" / jurisdiction.lower()


def _server_names(path: Path) -> list[str]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(names.get_values_for_type(x509.DNSName))


def _authority(root: Path, made: list[str]) -> Authority:
    if not (root / "ca.crt").exists():
        Authority.create(CA_NAME, root)
        made.append("ca")
    elif not (root / "ca.key").exists():
        raise ValueError(f"{root} has a ca.crt but not its ca.key: only the CA makes certificates.")
    return Authority.load(root)


def ensure_site_certificates(root: Path, sites: list[str], server_names: list[str]) -> list[str]:
    """Make the CA, the site API's server certificate for `server_names` (again, when it names
    others) and each site's client certificate, where missing; return what was made."""
    made: list[str] = []
    names = list(dict.fromkeys(server_names))  # in the order given, each once
    ca = _authority(root, made)
    server = root / "control" / "tls.crt"
    if not server.exists() or _server_names(server) != sorted(names):
        ca.issue(names[0], names, [ExtendedKeyUsageOID.SERVER_AUTH]).save(server.parent)
        made.append("control")
    for site in sites:
        folder = root / "sites" / site
        if not (folder / "tls.crt").exists():
            ca.issue(site, [site], [ExtendedKeyUsageOID.CLIENT_AUTH]).save(folder)
            made.append(site)
    return made


def ensure_storage_certificates(root: Path, receivers: dict[str, list[str]]) -> list[str]:
    """Make the web tier's storage writer certificate and each jurisdiction's storage receiver
    certificate for its DNS names (`receivers`: code -> names; again, when it names others),
    where missing, with the site API CA in `root` (made too, if there is none); return what was
    made."""
    made: list[str] = []
    ca = _authority(root, made)
    writer = storage_writer_folder(root)
    if not (writer / "tls.crt").exists():
        ca.issue(STORAGE_WRITER, [STORAGE_WRITER], [DATASET_STORING_USAGE]).save(writer)
        made.append(STORAGE_WRITER)
    for code, names in receivers.items():
        folder = storage_receiver_folder(root, code)
        server = folder / "tls.crt"
        wanted = list(dict.fromkeys(names))
        if not server.exists() or _server_names(server) != sorted(wanted):
            ca.issue(wanted[0], wanted, [ExtendedKeyUsageOID.SERVER_AUTH]).save(folder)
            made.append(f"storage/{code.lower()}")
    return made
