"""A compute party's share inbox: how sealed MPC input shares travel from an owner's input step
to a party, over the network, never through a shared folder.

Each MPC party site runs one inbox (`manage.py mpc_inbox`, a process of its own beside the
site's worker), listening on the address `MPC_INBOX_ADDRESSES` names for the site. Its TLS
server certificate is the party's MPC certificate (certificates.py); it requires a client
certificate from the same MPC CA with the share-sending usage (an input site's sender
certificate, `senders/<site>/`), whose site name is the sender's identity. One delivery per
connection: a JSON header line (job, input step, attempt, dataset, party index, length,
SHA-256), the sealed blob, then one JSON answer line, `{"stored": ...}` or `{"refused": ...}`.

The inbox stores a delivery only if
- the sender's site is the site of that running attempt of that job's input step, for that
  dataset (`Placement`: the job's own steps, as the platform placed them);
- the job places the named party index at this inbox's site;
- the blob opens with this party's share key for that job, dataset and party (a share sealed
  to another party, or for another job, never lands here);
- no other blob is stored under the same job, step and attempt (the same one again is
  acknowledged: a sender whose answer was lost may send again).

It stores in the site's own folder only (`MPC_INBOX_DIR/<site>/job-<j>/step-<s>/attempt-<a>/
party-<i>.sealed`), where the compute step reads (`received`). A refusal is counted
(`mpc_inbox_*` refusals) and answered with its reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from dataplane.mpc import sharing
from jobs.engines.base import EngineError
from jobs.engines.mpc.certificates import SHARE_SENDING_USAGE, TlsFiles

PORT_SPAN = 8192  # the ports MPC_PORT_BASE starts for the parties' rounds (parties.py)

# A share vector is 16 bytes a cell; 16 MiB is a million cells, far beyond any released table.
MAX_BLOB = 16 << 20
MAX_HEADER = 4096
TIMEOUT = 30.0


@dataclass(frozen=True)
class Delivery:
    """What a sender says it delivers: one input step attempt's shares for one party."""

    job: int
    step: int
    attempt: int
    dataset: int
    party: int
    length: int
    sha256: str

    @classmethod
    def parse(cls, line: bytes) -> Delivery:
        body = json.loads(line)
        return cls(
            job=int(body["job"]),
            step=int(body["step"]),
            attempt=int(body["attempt"]),
            dataset=int(body["dataset"]),
            party=int(body["party"]),
            length=int(body["length"]),
            sha256=str(body["sha256"]),
        )

    @property
    def relative(self) -> Path:
        return Path(
            f"job-{self.job}", f"step-{self.step}", f"attempt-{self.attempt}",
            f"party-{self.party}.sealed",
        )  # fmt: skip


class Refusal(Exception):
    """The inbox will not store a delivery; the message says why, for the sender."""


# Placement(delivery, sender site, own site) -> why the job's placement refuses it, or None.
Placement = Callable[[Delivery, str, str], str | None]
# InputContext(job, dataset, party) -> what a party's sealed input share is bound to.
InputContext = Callable[[int, int, int], bytes]


def input_context(job_id: int, dataset_id: int, party: int) -> bytes:
    """What a sealed input share is bound to: it opens only for this job, dataset and party."""
    return f"cleanroom-mpc-input/v1\njob:{job_id}\ndataset:{dataset_id}\nparty:{party}\n".encode()


def sender_site(certificate_der: bytes | None) -> str:
    """The site a verified client certificate names, if it may send shares (its chain to the
    MPC CA was checked by the TLS handshake)."""
    if not certificate_der:
        raise Refusal("no client certificate")
    certificate = x509.load_der_x509_certificate(certificate_der)
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Refusal("the certificate is not a sender's") from None
    if SHARE_SENDING_USAGE not in usages:
        raise Refusal("the certificate may not send MPC input shares")
    common = [n.value for n in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    dns = names.get_values_for_type(x509.DNSName)
    if len(common) != 1 or dns != common:
        raise Refusal("the certificate does not name one site")
    return str(common[0])


def _store(path: Path, blob: bytes) -> None:
    """Store once: a second different blob under the same name is refused, the same one again
    is acknowledged."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_bytes(blob)
    temporary.chmod(0o600)
    try:
        os.link(temporary, path)  # atomic, and fails if a delivery is already there
    except FileExistsError:
        if path.read_bytes() != blob:
            raise Refusal("a different delivery for this job, step and attempt is stored") from None
    finally:
        temporary.unlink()


class ShareInbox(socketserver.ThreadingTCPServer):
    """The inbox of the party at `site`: mutual TLS with the MPC CA, storing under `root`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        site: str,
        tls: TlsFiles,
        share_key: X25519PrivateKey,
        root: Path,
        placement: Placement,
        on_refusal: Callable[[str], None] = lambda reason: None,
    ):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(tls.certificate, tls.key)
        context.load_verify_locations(tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        self.context = context
        self.site = site
        self.share_key = share_key
        self.folder = root / site  # the site's own folder: nothing is stored elsewhere
        self.placement = placement
        self.on_refusal = on_refusal
        super().__init__(address, _Handler)

    def accept(self, delivery: Delivery, sender: str, blob: bytes) -> Path:
        """Check a delivery and store it; Refusal with the reason otherwise."""
        if len(blob) != delivery.length or hashlib.sha256(blob).hexdigest() != delivery.sha256:
            raise Refusal("the blob does not match its length and SHA-256")
        reason = self.placement(delivery, sender, self.site)
        if reason:
            raise Refusal(reason)
        try:
            sharing.open_for_party(
                blob,
                self.share_key,
                input_context(delivery.job, delivery.dataset, delivery.party),
            )
        except (InvalidTag, ValueError):
            raise Refusal(
                f"the shares do not open with the key of party {delivery.party} at {self.site}"
                f" for job {delivery.job} and dataset {delivery.dataset}"
            ) from None
        path = self.folder / delivery.relative
        _store(path, blob)
        return path

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection refused at its handshake was counted there: nothing to print.
        if not isinstance(sys.exc_info()[1], ConnectionAbortedError):
            super().handle_error(request, client_address)


class _Handler(socketserver.StreamRequestHandler):
    server: ShareInbox
    timeout = TIMEOUT

    def setup(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            self.request = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # No valid certificate from the MPC CA: nothing was read.
            self.server.on_refusal(f"handshake: {exc}")
            self.request.close()
            raise ConnectionAbortedError from None
        super().setup()

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_HEADER)
            try:
                delivery = Delivery.parse(line)
            except (ValueError, KeyError, TypeError):
                raise Refusal("a malformed delivery header") from None
            if not 0 < delivery.length <= MAX_BLOB:
                raise Refusal(f"a delivery must be 1 to {MAX_BLOB} bytes")
            # Read whole before any refusal, so the sender reads the answer rather than a reset.
            blob = self.rfile.read(delivery.length)
            sender = sender_site(self.request.getpeercert(binary_form=True))
            stored = self.server.accept(delivery, sender, blob)
            answer: dict[str, Any] = {"stored": str(stored.relative_to(self.server.folder))}
        except Refusal as exc:
            self.server.on_refusal(str(exc))
            answer = {"refused": str(exc)}
        except (OSError, ssl.SSLError):
            return
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()


# The sender's side ------------------------------------------------------------------------------


def send(
    address: tuple[str, int],
    party_site: str,
    tls: TlsFiles,
    delivery: Delivery,
    blob: bytes,
    *,
    timeout: float = TIMEOUT,
) -> str:
    """Deliver `blob` to the inbox of `party_site` at `address`, authenticated by this site's
    sender certificate, after checking that the inbox's certificate chains to the MPC CA and
    names `party_site`; returns where the inbox stored it, EngineError otherwise."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls.certificate, tls.key)
    name = f"The share inbox of {party_site} ({address[0]}:{address[1]})"
    try:
        with (
            socket.create_connection(address, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=party_site) as channel,
        ):
            channel.sendall(json.dumps(asdict(delivery)).encode() + b"\n" + blob)
            answer = channel.makefile("rb").readline(MAX_HEADER)
    except ssl.SSLCertVerificationError as exc:
        raise EngineError(f"{name} is refused: {exc.verify_message}.") from None
    except (OSError, ssl.SSLError) as exc:
        raise EngineError(f"{name} cannot be reached: {exc}") from None
    try:
        body = json.loads(answer)
    except ValueError:
        raise EngineError(f"{name} gave no answer.") from None
    if "stored" not in body:
        raise EngineError(f"{name} refused the shares: {body.get('refused', body)}")
    return str(body["stored"])


# The compute step's side ------------------------------------------------------------------------


def received(root: Path, site: str, delivery: Delivery) -> bytes:
    """A delivery the inbox of `site` stored, from that site's own folder; EngineError when it
    is missing or does not match its SHA-256."""
    path = root / site / delivery.relative
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise EngineError(
            f"No shares of input step {delivery.step} (attempt {delivery.attempt}) reached the"
            f" inbox of {site}."
        ) from None
    if hashlib.sha256(blob).hexdigest() != delivery.sha256:
        raise EngineError(f"The shares in the inbox of {site} do not match their SHA-256.")
    return blob


def address_of(site: str, site_id: int, configured: Mapping[str, tuple[str, int]], base: int):
    """Where the inbox of `site` listens and is reached: as configured, or on 127.0.0.1 at a
    port past the parties' span, one per site (the single-host default)."""
    return configured.get(site, ("127.0.0.1", base + PORT_SPAN + site_id))


def addresses(configured: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """`MPC_INBOX_ADDRESSES` ("site" -> "host:port") as (host, port) pairs."""
    parsed = {}
    for site, value in configured.items():
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"MPC_INBOX_ADDRESSES: {site}={value} is not host:port.")
        parsed[site] = (host.strip("[]"), int(port))
    return parsed
