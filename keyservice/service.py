"""One organisation's key service: its token, what it pins, and its release log."""

from __future__ import annotations

from datetime import UTC, datetime

from keyservice.release import (
    Pinned,
    Released,
    ReleaseLog,
    ReleaseRequest,
    Unwrapper,
    decide_release,
)


class OrganizationKeyService:
    def __init__(self, pinned: Pinned, keys: Unwrapper, log: ReleaseLog):
        self.pinned = pinned
        self.keys = keys
        self.log = log

    def create_key(self) -> str:
        return self.keys.create_key()

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes:
        return self.keys.wrap(kek_id, data_key, context=context)

    def release(self, request: ReleaseRequest) -> Released:
        return decide_release(
            request, self.pinned, keys=self.keys, log=self.log, at=datetime.now(UTC)
        )
