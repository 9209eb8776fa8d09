"""The one exception the client raises: the API's error code and message, as the API's one
error format gives them (`{"error": {"code", "message", "fields"}}`)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API refused (`status` is its HTTP status), a job ended without a result, or (as
    `CannotConnect`) the server could not be reached."""

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
