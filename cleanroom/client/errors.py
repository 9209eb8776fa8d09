"""The one exception the client raises: the API's error code and message, as the API's one
error format gives them (`{"error": {"code", "message", "fields"}}`); two kinds of it are the
client's own (a server it cannot reach, a form it will not sign)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API refused (`status` is its HTTP status), a job ended without a result, (as
    `CannotConnect`) the server could not be reached, or (as `RefusedToSign`) the client would
    not sign what the server showed."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        fields: dict[str, Any] | None = None,
    ):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields or {}


class CannotConnect(ApiError):
    """No answer from the server: it is down, the URL is wrong, or the network is."""

    def __init__(self, url: str, reason: object):
        super().__init__("cannot_connect", f"Cannot connect to {url}: {reason}")


class RefusedToSign(ApiError):
    """The client, not the API, refused: the server asked for a signature over a digest that is
    not the digest of the canonical form it shows (`digest_mismatch`), its other fields say
    otherwise than that form (`form_mismatch`), or the version has no form (`not_submitted`).
    Nothing was signed."""
