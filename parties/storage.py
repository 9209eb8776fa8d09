"""Where encrypted dataset files live: one storage root per jurisdiction, read only at that
jurisdiction's sites (the TEE host, the owners' workers).

How the web tier stores a new file there is a port, `DatasetStorage`, chosen per jurisdiction:

- `LocalRoot` (the embedded default): the web tier writes into the jurisdiction's root itself,
  `STORAGE_ROOTS` or `STORAGE_ROOT/<code>`;
- `StorageReceiverClient`, for a jurisdiction `STORAGE_SITES` names: the web tier encrypts into a
  private temporary folder and streams the ciphertext over HTTPS to that jurisdiction's storage
  receiver (parties/storage_receiver.py), signed with its storage writer certificate; it never
  opens a path under that jurisdiction's root, and needs none.

Either way a file is stored once under a name of the form `org/dataset/<24 hex>.parquet.enc`
and removed only when the upload's registration fails right after it was stored.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import ssl
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from django.conf import settings

from cleanroom.crypto.signed_requests import SiteCredentials
from cleanroom.errors import DomainError
from parties.site_certificates import storage_writer_folder

# The receivers' protocol: PUT or DELETE /objects/<CODE>/<object name>; a PUT states its body's
# SHA-256 in CONTENT_SHA256 (the signature covers it) and its length in Content-Length.
OBJECTS = "/objects/"
CONTENT_SHA256 = "X-Content-SHA256"
OBJECT_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}/[0-9a-f]{24}\.parquet\.enc")
JURISDICTION_CODE = re.compile(r"[A-Z]{2,8}")
# A file is streamed in blocks of this size, both ways.
BLOCK = 1024 * 1024
TIMEOUT = 60.0

Written = TypeVar("Written")


class StorageRefused(DomainError):
    """The jurisdiction's storage did not take (or remove) a file; the message says why."""

    code = "storage_refused"


def jurisdiction_root(code: str) -> Path:
    return settings.STORAGE_ROOTS.get(code.upper(), settings.STORAGE_ROOT / code.lower())


def stored_file(version) -> Path:
    return jurisdiction_root(version.dataset.jurisdiction.code) / version.storage_path


class DatasetStorage(Protocol):
    """How the web tier stores one jurisdiction's encrypted dataset files."""

    def store(self, name: str, write: Callable[[Path], Written]) -> Written:
        """Have `write` write the file at the path it is given, then keep it as `name`."""
        ...

    def remove(self, name: str) -> None:
        """Remove `name`, stored moments ago by an upload that then failed (gone already: done)."""
        ...


@dataclass(frozen=True)
class LocalRoot:
    """The jurisdiction's root is a folder of this process's host (the embedded default)."""

    root: Path

    def store(self, name: str, write: Callable[[Path], Written]) -> Written:
        return write(self.root / name)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class StorageReceiverClient:
    """The jurisdiction's storage receiver at `url` (https://host:port, no path), whose server
    certificate must chain to `ca_file` and name the host; requests are signed with
    `credentials` (the storage writer certificate)."""

    def __init__(
        self,
        jurisdiction: str,
        url: str,
        credentials: SiteCredentials,
        ca_file: Path,
        scratch: Path | None = None,
        timeout: float = TIMEOUT,
    ):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
            raise ValueError(
                f"CLEANROOM_STORAGE_SITES: {jurisdiction}={url} is not https://host:port"
            )
        self.jurisdiction = jurisdiction.upper()
        self.host, self.port = parts.hostname, parts.port or 443
        self.credentials = credentials
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.scratch = scratch
        self.timeout = timeout
        self.label = f"The {self.jurisdiction} storage receiver ({self.host}:{self.port})"

    def path(self, name: str) -> str:
        return f"{OBJECTS}{self.jurisdiction}/{name}"

    def store(self, name: str, write: Callable[[Path], Written]) -> Written:
        folder = Path(tempfile.mkdtemp(prefix="outgoing-", dir=self.scratch))
        try:
            written = write(folder / "object.parquet.enc")
            self.send(name, folder / "object.parquet.enc")
            return written
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def send(self, name: str, path: Path) -> None:
        with path.open("rb") as source:
            digest = hashlib.file_digest(source, "sha256").hexdigest()
            source.seek(0)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
                CONTENT_SHA256: digest,
                **self.credentials.headers_for_digest("PUT", self.path(name), digest),
            }
            self._request("PUT", name, source, headers, ok=(201,))

    def remove(self, name: str) -> None:
        headers = {
            "Content-Length": "0",
            **self.credentials.headers_for_digest("DELETE", self.path(name), _EMPTY),
        }
        self._request("DELETE", name, None, headers, ok=(204, 404))

    def _request(self, method: str, name: str, body, headers: dict[str, str], ok) -> None:
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=self.timeout, context=self.context, blocksize=BLOCK
        )
        try:
            connection.request(method, self.path(name), body=body, headers=headers)
            answer = connection.getresponse()
            payload = answer.read()
        except ssl.SSLCertVerificationError as exc:
            raise StorageRefused(f"{self.label} is refused: {exc.verify_message}.") from None
        except (OSError, http.client.HTTPException) as exc:
            raise StorageRefused(f"{self.label} cannot be reached: {exc}") from None
        finally:
            connection.close()
        if answer.status not in ok:
            try:
                reason = json.loads(payload).get("refused", payload.decode(errors="replace"))
            except ValueError:
                reason = payload.decode(errors="replace")
            raise StorageRefused(f"{self.label} refused the file ({answer.status}): {reason}")


_EMPTY = hashlib.sha256(b"").hexdigest()


def dataset_storage(jurisdiction: str) -> DatasetStorage:
    """How this process stores `jurisdiction`'s files: through its storage receiver where
    STORAGE_SITES names one, else in the local root."""
    code = jurisdiction.upper()
    if code not in settings.STORAGE_SITES:
        return LocalRoot(jurisdiction_root(code))
    writer = storage_writer_folder(Path(settings.SITE_API_CREDENTIALS_DIR))
    try:
        credentials = SiteCredentials.load(
            (writer / "tls.crt").read_bytes(), (writer / "tls.key").read_bytes()
        )
    except FileNotFoundError as exc:
        raise StorageRefused(
            f"{code}'s files are stored through its storage receiver, but this process has no "
            f"storage writer certificate ({exc.filename}): `manage.py site_certificates "
            "--storage` makes it."
        ) from None
    return StorageReceiverClient(
        code,
        settings.STORAGE_SITES[code],
        credentials,
        Path(settings.SITE_API_CA),
        scratch=Path(settings.FILE_UPLOAD_TEMP_DIR) if settings.FILE_UPLOAD_TEMP_DIR else None,
    )
