"""`python -m cleanroom.probe URL`: a role's health check in its container (deploy/Containerfile):
exit 0 when URL answers 200 within five seconds, else 1. Standard library only, so it costs no
Django start-up. It sends the Host the web tier accepts (the first of ALLOWED_HOSTS), which a
worker's or key service's metrics port ignores."""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT = 5.0


def healthy(url: str) -> bool:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url)  # noqa: S310 - http(s) only, checked above
    allowed = os.environ.get("ALLOWED_HOSTS", "").split(",")[0].strip()
    if allowed and not allowed.startswith("."):
        request.add_header("Host", allowed)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status == 200
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy(sys.argv[1]) else 1)
