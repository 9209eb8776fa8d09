"""The deployment's MPC certificate authority and each compute party's credentials.

What `manage.py mpc_credentials` makes, in one folder (MPC_CREDENTIALS_DIR, default var/mpc/):

    ca.crt, ca.key                 the per-deployment MPC CA (P-256), signs party certificates
    parties/<site>/tls.crt         the party's certificate: CN and DNS name = the site name,
                                   client and server use, and its share key (below)
    parties/<site>/tls.key         the party's TLS key                          (private)
    parties/<site>/share.key       the party's X25519 key: opens the input shares
                                   owners seal to it                            (private)
    senders/<site>/tls.crt, .key   an input (owner's worker) site's sender certificate: CN and
                                   DNS name = the site name, client use and `SHARE_SENDING_USAGE`
                                   only; how it authenticates to a party's share inbox (inbox.py)

**The share key's public half is in the party's certificate**, signed by the CA: a non-critical
extension `SHARE_KEY_OID` whose value is an OCTET STRING of the raw 32-byte X25519 public key,
and the extended key usage `SHARE_SEALING_USAGE` ("owners may seal MPC input shares to the key
in this certificate's share-key extension"). Both OIDs are under the arc 2.25.<UUID> (ITU-T
X.667: an object identifier derived from a UUID, unique without registration), `ARC` below.

What a site holds about itself (`credentials`, `MpcConfig.credentials`, the local site's
folder): `party_private_key` and `party_tls_files` read only `parties/<own site>/` and the
trust anchor `ca.crt`. What anyone may read (`certificates`, `MpcConfig.certificates`, by default
the same folder): every party's `parties/<site>/tls.crt`. An owner's input step takes a party's
share key only from its certificate (`party_public_key`), after checking that it chains to the
`ca.crt` of its own folder, is within its validity, names the site (CN and DNS name) and has
the sealing usage; it never opens a `share.key` or `tls.key`, and a certificate that fails any
check is an EngineError naming the site. So each site's folder need hold only its own keys:

    a party site's folder          ca.crt, parties/<own site>/{tls.crt, tls.key, share.key}
    an input (owner) site's folder ca.crt, parties/<each party site>/tls.crt,
                                   senders/<own site>/{tls.crt, tls.key}  (no party's key)
    offline, at the CA             ca.key

A party accepts a peer only if the peer's certificate chains to this CA and names the site the
job placed at that party index (dataplane/mpc/party.py checks both directions), so a party
cannot claim another party's index. `manage.py mpc_credentials` makes them ahead of time; in a
folder that can make them (it holds `ca.key`, or no `ca.crt` yet: the single-folder demo and
tests), the first use makes whatever is missing, under a file lock, so concurrent workers agree
on one CA. A site's folder (a `ca.crt` without `ca.key`) never makes anything: what is missing
there is an EngineError. In a production deployment the CA key belongs offline.
"""

from __future__ import annotations

import datetime
import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from cleanroom.crypto.certificates import ARC, Authority, write_file
from cleanroom.crypto.sealing import public_bytes
from jobs.engines.base import EngineError

CA_NAME = "Cleanroom MPC CA"
_SITE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")

# Certificate extension (non-critical): OCTET STRING, the party's raw X25519 share public key.
SHARE_KEY_OID = ObjectIdentifier(f"{ARC}.1")
# Extended key usage: owners may seal MPC input shares to the key in SHARE_KEY_OID.
SHARE_SEALING_USAGE = ObjectIdentifier(f"{ARC}.2")
# Extended key usage: the site may deliver sealed MPC input shares to a party's share inbox.
SHARE_SENDING_USAGE = ObjectIdentifier(f"{ARC}.3")
_X25519_LENGTH = 32


@dataclass(frozen=True)
class TlsFiles:
    """What a party process needs to speak TLS: the CA to trust, its certificate and key."""

    ca: Path
    certificate: Path
    key: Path


def _site_folder(root: Path, site: str) -> Path:
    if not _SITE_NAME.match(site):
        raise ValueError(f"{site!r} is not a site name.")
    return root / "parties" / site


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _share_key_extension(public_key: bytes) -> x509.UnrecognizedExtension:
    """The extension's value is the DER of an OCTET STRING holding the raw 32-byte key."""
    return x509.UnrecognizedExtension(SHARE_KEY_OID, bytes([0x04, len(public_key)]) + public_key)


def _authority(root: Path) -> Authority:
    try:
        return Authority.load(root)
    except ValueError as exc:
        raise EngineError(str(exc)) from None


def _make_party(root: Path, site: str) -> None:
    """Make the site's TLS key and certificate, and its share key unless it has one (a folder
    of an earlier layout, whose certificate did not carry the share key, keeps its key)."""
    folder = _site_folder(root, site)
    if (folder / "share.key").exists():
        share_key = (folder / "share.key").read_bytes()
    else:
        share_key = X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    share_public = public_bytes(X25519PrivateKey.from_private_bytes(share_key))
    leaf = _authority(root).issue(
        site,
        [site],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, SHARE_SEALING_USAGE],
        [_share_key_extension(share_public)],
    )
    write_file(folder / "share.key", share_key, 0o600)
    leaf.save(folder)


def _sender_folder(root: Path, site: str) -> Path:
    if not _SITE_NAME.match(site):
        raise ValueError(f"{site!r} is not a site name.")
    return root / "senders" / site


def _make_sender(root: Path, site: str) -> None:
    """An input site's sender certificate: client use and share sending only, so it can neither
    serve as a party's inbox nor be sealed to, and MPyC's parties refuse it (not a placed
    party's site)."""
    leaf = _authority(root).issue(
        site, [site], [ExtendedKeyUsageOID.CLIENT_AUTH, SHARE_SENDING_USAGE]
    )
    leaf.save(_sender_folder(root, site))


def ensure_sender_credentials(root: Path, sites: list[str]) -> list[str]:
    """Make the CA and the named input sites' sender certificates where missing; return the
    sites made."""
    made = []
    with _locked(root):
        if not (root / "ca.crt").exists():
            Authority.create(CA_NAME, root)
        for site in sites:
            if not (_sender_folder(root, site) / "tls.crt").exists():
                _make_sender(root, site)
                made.append(site)
    return made


def _can_make(root: Path) -> bool:
    """Only the CA's folder (or an empty one, which becomes it) makes credentials."""
    return (root / "ca.key").exists() or not (root / "ca.crt").exists()


def _carries_share_key(path: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return False
    return any(e.oid == SHARE_KEY_OID for e in certificate.extensions)


def ensure_credentials(root: Path, sites: list[str]) -> list[str]:
    """Make the CA and the named sites' credentials where missing, and certify again a site
    whose certificate does not carry its share key (an earlier layout); return the sites made."""
    made = []
    with _locked(root):
        if not (root / "ca.crt").exists():
            Authority.create(CA_NAME, root)
        for site in sites:
            certificate = _site_folder(root, site) / "tls.crt"
            if not certificate.exists() or not _carries_share_key(certificate):
                _make_party(root, site)
                made.append(site)
    return made


def _site_file(root: Path, site: str, name: str) -> Path:
    path = _site_folder(root, site) / name
    if not path.exists():
        if not _can_make(root):
            raise EngineError(
                f"No {name} for {site} in the MPC credentials folder {root}: copy it there"
                " from the deployment's `manage.py mpc_credentials`."
            )
        ensure_credentials(root, [site])
    return path


# What a site holds about itself: its own private keys -----------------------------------------


def party_private_key(root: Path, site: str) -> X25519PrivateKey:
    """The key that opens input shares sealed to the party at `site`: only that site's own
    folder holds it."""
    return X25519PrivateKey.from_private_bytes(_site_file(root, site, "share.key").read_bytes())


def party_tls_files(root: Path, site: str) -> TlsFiles:
    """The party's own TLS certificate and key, and the CA it trusts, from its own folder."""
    certificate = _site_file(root, site, "tls.crt")
    folder = certificate.parent
    return TlsFiles(ca=root / "ca.crt", certificate=certificate, key=folder / "tls.key")


def sender_tls_files(root: Path, site: str) -> TlsFiles:
    """The input site's own sender certificate and key, and the CA it trusts, from its own
    folder: how it authenticates to the parties' share inboxes and checks theirs."""
    folder = _sender_folder(root, site)
    if not (folder / "tls.crt").exists():
        if not _can_make(root):
            raise EngineError(
                f"No sender certificate for {site} in the MPC credentials folder {root}: copy"
                " it there from the deployment's `manage.py mpc_credentials`."
            )
        ensure_sender_credentials(root, [site])
    return TlsFiles(ca=root / "ca.crt", certificate=folder / "tls.crt", key=folder / "tls.key")


# What anyone may read: the CA's certificate and each party's ----------------------------------


def party_certificate(root: Path, site: str, *, certificates: Path | None = None) -> Path:
    """Where the certificate of the party at `site` is found: `certificates` (default `root`),
    `parties/<site>/tls.crt`. Only the CA's own folder makes a missing one, or certifies again
    one of an earlier layout (without the share key)."""
    public = certificates or root
    path = _site_folder(public, site) / "tls.crt"
    if public == root and _can_make(root):
        if not path.exists() or not _carries_share_key(path):
            ensure_credentials(root, [site])
    elif not path.exists():
        raise EngineError(f"No MPC certificate for {site} in {public}.")
    return path


def _refused(site: str, reason: str) -> EngineError:
    return EngineError(f"The MPC certificate of {site} is refused: {reason}")


def verified_share_key(certificate_pem: bytes, ca_pem: bytes, site: str) -> bytes:
    """The share key in the party's certificate, once the certificate chains to the CA (its
    signature, the CA's constraints), is within its validity, names `site` as its CN and DNS
    name, and has the sealing usage; EngineError naming the site otherwise."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise _refused(site, "not a PEM certificate.") from None
    now = datetime.datetime.now(datetime.UTC)
    verifier = PolicyBuilder().store(Store([ca])).time(now).build_server_verifier(DNSName(site))
    try:
        verifier.verify(certificate, [])
    except VerificationError as exc:
        raise _refused(
            site, f"it does not verify against this deployment's MPC CA ({exc})."
        ) from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [site]:
        raise _refused(site, f"its common name is not {site}.")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        extension = certificate.extensions.get_extension_for_oid(SHARE_KEY_OID).value
    except x509.ExtensionNotFound:
        raise _refused(site, "it carries no share key for sealing MPC input shares.") from None
    if SHARE_SEALING_USAGE not in usages:
        raise _refused(site, "it does not allow sealing MPC input shares to its share key.")
    value = extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
    if len(value) != 2 + _X25519_LENGTH or value[:2] != bytes([0x04, _X25519_LENGTH]):
        raise _refused(site, "its share key is not a 32-byte X25519 key.")
    return value[2:]


def party_public_key(root: Path, site: str, *, certificates: Path | None = None) -> bytes:
    """The raw X25519 public key owners seal the party's input shares to, taken only from the
    party's certificate (`party_certificate`), verified against the `ca.crt` of `root`: the
    site's own folder, whose trust anchor does not come from where certificates are found."""
    path = party_certificate(root, site, certificates=certificates)
    return verified_share_key(path.read_bytes(), (root / "ca.crt").read_bytes(), site)
