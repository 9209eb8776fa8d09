"""HTTP for the client, on the standard library's urllib: JSON in and out, the token in the
`Authorization` header, every refusal turned into `ApiError` with the API's code and message."""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import Request, urlopen

from cleanroom.client.errors import ApiError, CannotConnect
from cleanroom.client.operations import OPERATIONS

USER_AGENT = "cleanroom-client/0.1"


class Transport:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60):
        scheme = urlsplit(base_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"The server's URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self,
        operation: str,
        body: dict[str, Any] | None = None,
        **params: object,
    ) -> Any:
        """The decoded JSON answer of one operation (every page of a paginated list)."""
        declared = OPERATIONS[operation]
        undeclared = set(body or {}) - declared.sends
        if undeclared:
            # The schema test checks only what operations.py declares: keep it the whole truth.
            raise ValueError(f"{operation} does not declare the fields {sorted(undeclared)}")
        url = self.base_url + declared.url(**params)
        if not declared.paginated:
            return json.loads(self.send(declared.method, url, body) or b"null")
        items: list[Any] = []
        next_url: str | None = url
        while next_url:
            page = json.loads(self.send(declared.method, next_url, body))
            items.extend(page["results"])
            next_url = page["next"] and urljoin(self.base_url, page["next"])
        return items

    def download(self, operation: str, **params: object) -> bytes:
        declared = OPERATIONS[operation]
        return self.send(declared.method, self.base_url + declared.url(**params))

    def send(self, method: str, url: str, body: dict[str, Any] | None = None) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = Request(url, data=data, headers=headers, method=method)  # noqa: S310 - scheme checked in __init__
        try:
            with urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - as above
                return response.read()
        except HTTPError as refusal:
            raise _api_error(refusal) from None
        except (TimeoutError, URLError, ConnectionError) as failure:
            raise CannotConnect(self.base_url, getattr(failure, "reason", failure)) from None


def _api_error(refusal: HTTPError) -> ApiError:
    text = refusal.read().decode(errors="replace")
    try:
        error = json.loads(text)["error"]
        return ApiError(
            error["code"], error["message"], status=refusal.code, fields=error.get("fields")
        )
    except (ValueError, KeyError, TypeError):
        # Not the API's format: a proxy's page, or a URL that is not the API's.
        summary = " ".join(text.split())[:200] or refusal.reason
        return ApiError(
            f"http_{refusal.code}", f"HTTP {refusal.code}: {summary}", status=refusal.code
        )
