"""Uploads in the browser: a size limit while the file streams in, and a short-lived staging area
that keeps an owner's chosen file across a refusal.

A file input cannot be refilled after a round trip, so a refused upload (a value outside a
domain, no privacy unit, a slug taken) would make the owner choose the file again and lose track
of what they had confirmed. Instead the view stages the file: encrypted (AES-256-GCM, the
dataset envelope) under a fresh key that lives only in the owner's session, in a folder beside
Django's own upload temporaries, under a random token the form carries back. Only the session
that staged a file can use it; it is deleted when the upload succeeds, when another file
replaces it, and by anyone's next staging once it is STAGING_TTL old. A staged file is never a
dataset: nothing is registered, encrypted to a jurisdiction's storage or audited until an upload
passes every check.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler
from django.template.defaultfilters import filesizeformat

from cleanroom.crypto.envelope import decrypt_stream, encrypt_stream, new_data_key

UPLOAD_REFUSED = "upload_refused"
STAGING_TTL = 30 * 60  # seconds
_SESSION_KEY = "staged_uploads"


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Streams to a private temporary file; Django removes it when the request ends."""

    def new_file(self, *args, **kwargs):
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        limit = settings.DATASET_MAX_UPLOAD_BYTES
        if self.received > limit:
            setattr(
                self.request,
                UPLOAD_REFUSED,
                f"The file is over the size limit of {filesizeformat(limit)}.",
            )
            self.file.close()
            raise SkipFile
        return super().receive_data_chunk(raw_data, start)


def refusal_of(request) -> str | None:
    return getattr(request, UPLOAD_REFUSED, None)


def staging_dir() -> Path:
    root = Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir()) / "cleanroom-staged"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def _sweep(now: float) -> None:
    for path in staging_dir().iterdir():
        if now - path.stat().st_mtime > STAGING_TTL:
            path.unlink(missing_ok=True)


def stage(request, path: Path, filename: str) -> str:
    """Keep the file at `path` for this session; returns the token the form carries back."""
    now = time.time()
    _sweep(now)
    token, key = secrets.token_urlsafe(24), new_data_key()
    target = staging_dir() / token
    with path.open("rb") as src, target.open("wb") as dst:
        encrypt_stream(src, dst, key)
    target.chmod(0o600)
    staged = request.session.get(_SESSION_KEY, {})
    staged[token] = {"filename": filename, "key": base64.b64encode(key).decode(), "at": now}
    request.session[_SESSION_KEY] = staged
    return token


def staged_filename(request, token: str) -> str | None:
    """The name of the file this session staged under `token`, while it is kept."""
    entry = request.session.get(_SESSION_KEY, {}).get(token) if token else None
    if entry is None or time.time() - entry["at"] > STAGING_TTL:
        return None
    return entry["filename"] if (staging_dir() / token).is_file() else None


@contextmanager
def staged_file(request, token: str) -> Iterator[Path]:
    """The staged file decrypted into a private temporary folder, removed on leaving."""
    entry = request.session[_SESSION_KEY][token]
    workdir = Path(tempfile.mkdtemp(prefix="staged-", dir=settings.FILE_UPLOAD_TEMP_DIR))
    try:
        plain = workdir / "upload"
        with (staging_dir() / token).open("rb") as src, plain.open("wb") as dst:
            decrypt_stream(src, dst, base64.b64decode(entry["key"]))
        yield plain
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def discard(request, token: str) -> None:
    """Delete a file this session staged (another session's token deletes nothing)."""
    staged = request.session.get(_SESSION_KEY, {})
    if staged.pop(token, None) is not None:
        request.session[_SESSION_KEY] = staged
        (staging_dir() / token).unlink(missing_ok=True)
