"""A jurisdiction's storage receiver: the process at that jurisdiction's site that stores the
encrypted dataset files the web tier sends it, so the web tier never opens a path under the
jurisdiction's storage root (parties/storage.py, `StorageReceiverClient`).

Run at the site (`manage.py storage_receiver --jurisdiction EU`, CLEANROOM_ROLE=site, no
database), it listens over HTTPS with its server certificate from the site API CA
(`storage/<code>/` of SITE_API_CREDENTIALS_DIR) and answers two requests:

    PUT    /objects/<CODE>/<org>/<dataset>/<24 hex>.parquet.enc   store a file     201
    DELETE /objects/<CODE>/<org>/<dataset>/<24 hex>.parquet.enc   withdraw it      204

Each is signed (cleanroom/crypto/signed_requests.py) with a certificate from the site API CA
that has `DATASET_STORING_USAGE` (the web tier's storage writer certificate; a site's own
certificate has only client use), with a fresh timestamp and a nonce not seen in the window
the timestamp allows (kept in memory: a restart forgets them, but a request older than the
window is refused by its timestamp anyway). A PUT states its body's SHA-256 in
`X-Content-SHA256`, which the signature covers, and its length in Content-Length.

It refuses: an unsigned request, a certificate from another CA or without the usage, a
replayed nonce, a jurisdiction not its own, a name not of the form above or one that leads out
of its root (through a symbolic link, say), a file already stored under that name (nothing is
ever overwritten), and a body whose SHA-256 is not the one stated. It checks all of that but
the last from the headers, before a byte of the body is written. The body streams to a
private partial file beside its destination, hashed on the way; only a whole, matching file is
linked to its name (atomically, and failing if the name was taken meanwhile). A DELETE removes
only a file stored within the last `WITHDRAWAL_WINDOW` (an upload whose registration failed
right after it was sent): the web tier cannot erase a dataset that was registered.

It serves no reads: the site's own processes read the root directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import Any

from cryptography import x509

from cleanroom.crypto.signed_requests import (
    CERTIFICATE,
    MAX_SKEW_SECONDS,
    NONCE,
    SIGNATURE,
    TIMESTAMP,
    SignatureRefused,
    verify,
)
from parties.site_certificates import DATASET_STORING_USAGE
from parties.storage import BLOCK, CONTENT_SHA256, JURISDICTION_CODE, OBJECT_NAME, OBJECTS

logger = logging.getLogger(__name__)

TIMEOUT = 60.0
# How long after it was stored a file may still be withdrawn: an upload's registration follows
# its storing within seconds (a key service call and one transaction).
WITHDRAWAL_WINDOW = 15 * 60
# What is read and discarded of a refused request's body before answering, when the request
# is not the storage writer's: enough for a small request to read its refusal, no more.
UNSIGNED_DRAIN = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")


class Refusal(Exception):
    """The receiver will not do what was asked; `status` and the message say why."""

    def __init__(self, status: int, reason: str, *, signed: bool = False):
        super().__init__(reason)
        self.status = status
        self.signed = signed


class StorageReceiver(ThreadingHTTPServer):
    """The storage receiver of `jurisdiction`, storing under `root` only."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        jurisdiction: str,
        root: Path,
        ca_file: Path,
        certificate: Path,
        key: Path,
        on_refusal: Callable[[str], None] = lambda reason: None,
    ):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certificate, key)
        self.context = context
        self.ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        self.jurisdiction = jurisdiction.upper()
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.on_refusal = on_refusal
        self._nonces: dict[str, float] = {}
        self._nonces_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        connection, address = super().get_request()
        # The handshake runs in the request's own thread (_Handler.setup), not the accept loop.
        return (
            self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False),
            address,
        )

    def admit(self, method: str, path: str, headers: Any, body_sha256: str) -> Path:
        """Where a signed request's file is, after every check its headers allow; Refusal."""
        signed = {
            name: headers[name]
            for name in (CERTIFICATE, TIMESTAMP, NONCE, SIGNATURE)
            if headers.get(name) is not None
        }
        try:
            request = verify(
                self.ca, method, path, body_sha256, signed, usage=DATASET_STORING_USAGE
            )
        except SignatureRefused as exc:
            raise Refusal(403, str(exc)) from None
        self._use_nonce(request.nonce, request.timestamp)
        if not path.startswith(OBJECTS):
            raise Refusal(404, "no such place here: files are under /objects/", signed=True)
        code, _, name = path.removeprefix(OBJECTS).partition("/")
        if not JURISDICTION_CODE.fullmatch(code):
            raise Refusal(400, "not a jurisdiction's code", signed=True)
        if code != self.jurisdiction:
            raise Refusal(
                403, f"this receiver stores {self.jurisdiction}'s files, not {code}'s", signed=True
            )
        if not OBJECT_NAME.fullmatch(name):
            raise Refusal(
                400, "a file's name is org/dataset/<24 hex digits>.parquet.enc", signed=True
            )
        target = (self.root / name).resolve()
        if not target.is_relative_to(self.root):
            raise Refusal(403, "the name leads out of this jurisdiction's root", signed=True)
        return target

    def _use_nonce(self, nonce: str, timestamp: int) -> None:
        now = time.time()
        with self._nonces_lock:
            for seen in [n for n, expires in self._nonces.items() if expires < now]:
                del self._nonces[seen]
            if nonce in self._nonces:
                raise Refusal(403, "the request was already made (its nonce is used)")
            self._nonces[nonce] = timestamp + MAX_SKEW_SECONDS

    def receive(self, target: Path, body: BufferedIOBase, length: int, body_sha256: str) -> None:
        """Stream `length` bytes of `body` into `target`, which must not exist, if their SHA-256
        is `body_sha256`; Refusal otherwise, leaving nothing."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
        digest = hashlib.sha256()
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(descriptor, "wb") as out:
                remaining = length
                while remaining:
                    block = body.read(min(BLOCK, remaining))
                    if not block:
                        raise ConnectionAbortedError("the body ended before its Content-Length")
                    digest.update(block)
                    out.write(block)
                    remaining -= len(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != body_sha256:
                raise Refusal(400, f"the body's SHA-256 is not the stated {body_sha256}")
            try:
                os.link(partial, target)  # atomic, and fails if the name was taken meanwhile
            except FileExistsError:
                raise Refusal(409, "a file is already stored under this name") from None
            _sync_folder(target.parent)
        finally:
            partial.unlink(missing_ok=True)

    def withdraw(self, target: Path) -> None:
        try:
            stored_at = target.stat().st_mtime
        except FileNotFoundError:
            raise Refusal(404, "no file is stored under this name", signed=True) from None
        if time.time() - stored_at > WITHDRAWAL_WINDOW:
            raise Refusal(
                403,
                f"the file was stored more than {WITHDRAWAL_WINDOW // 60} minutes ago: only a "
                "failed upload's own file is withdrawn",
                signed=True,
            )
        target.unlink(missing_ok=True)
        _sync_folder(target.parent)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection that broke (or failed its handshake) was logged where it broke.
        if not isinstance(sys.exc_info()[1], ConnectionAbortedError | OSError):
            super().handle_error(request, client_address)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _Handler(BaseHTTPRequestHandler):
    server: StorageReceiver
    timeout = TIMEOUT
    server_version = "cleanroom-storage-receiver"
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            logger.info("storage receiver: a TLS handshake failed: %s", exc)
            raise ConnectionAbortedError from None
        super().setup()

    def do_PUT(self) -> None:
        length = unread = self._length()
        try:
            if length is None:
                raise Refusal(411, "a file is sent with its Content-Length")
            if length == 0:
                raise Refusal(400, "an empty body is no encrypted file")
            stated = (self.headers.get(CONTENT_SHA256) or "").lower()
            if not _DIGEST.fullmatch(stated):
                raise Refusal(400, f"state the body's SHA-256 in {CONTENT_SHA256}")
            target = self.server.admit("PUT", self.path, self.headers, stated)
            if target.exists():
                raise Refusal(409, "a file is already stored under this name", signed=True)
            unread = 0  # the body is read whole, or the connection is dropped
            self.server.receive(target, self.rfile, length, stated)
        except Refusal as exc:
            self._refuse(exc, unread)
            return
        self._answer(201, {"stored": self.path.removeprefix(OBJECTS), "sha256": stated})

    def do_DELETE(self) -> None:
        length = self._length()
        try:
            if length:
                raise Refusal(400, "a withdrawal has no body")
            target = self.server.admit(
                "DELETE", self.path, self.headers, hashlib.sha256(b"").hexdigest()
            )
            self.server.withdraw(target)
        except Refusal as exc:
            self._refuse(exc, length)
            return
        self._answer(204, None)

    def _length(self) -> int | None:
        if self.headers.get("Transfer-Encoding"):
            return None
        value = self.headers.get("Content-Length", "")
        return int(value) if value.isdigit() else None

    def _refuse(self, refusal: Refusal, unread: int | None) -> None:
        self.server.on_refusal(str(refusal))
        # Read what the sender is still sending (all of it, from the storage writer), so it
        # reads the answer rather than a reset connection.
        unread = unread or 0
        if not refusal.signed:
            unread = min(unread, UNSIGNED_DRAIN)
        with contextlib.suppress(OSError):
            while unread > 0 and (block := self.rfile.read(min(BLOCK, unread))):
                unread -= len(block)
        self.close_connection = True
        self._answer(refusal.status, {"refused": str(refusal)})

    def _answer(self, status: int, body: dict[str, Any] | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        with contextlib.suppress(OSError):
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("storage receiver: %s %s", self.address_string(), format % args)
