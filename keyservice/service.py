"""One organisation's key service: its token, what it pins, its dataset book and its release
log. The embedded default runs the same object in the platform's process (no book there: its
datasets come from the platform's records)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from keyservice.release import (
    Pinned,
    Released,
    ReleaseLog,
    ReleaseRequest,
    SiteKeyRequest,
    decide_release,
    decide_site_key,
)


class Keys(Protocol):
    def create_key(self) -> str: ...

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes: ...

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes: ...


class Book(Protocol):
    def register(self, dataset: int, name: str, jurisdiction: str) -> None: ...


class OrganizationKeyService:
    def __init__(self, pinned: Pinned, keys: Keys, log: ReleaseLog, book: Book | None = None):
        self.pinned = pinned
        self.keys = keys
        self.log = log
        self.book = book

    def create_key(self) -> str:
        return self.keys.create_key()

    def wrap_dataset_key(
        self,
        kek_id: str,
        data_key: bytes,
        *,
        context: dict[str, str],
        name: str,
        jurisdiction: str,
    ) -> bytes:
        """Wrap a new version's data key, registering its dataset (once, in a pinned
        jurisdiction) first."""
        if self.book is not None:
            self.book.register(int(context["dataset"]), name, jurisdiction)
        return self.keys.wrap(kek_id, data_key, context=context)

    def release(self, request: ReleaseRequest) -> Released:
        return decide_release(
            request, self.pinned, keys=self.keys, log=self.log, at=datetime.now(UTC)
        )

    def site_key(self, request: SiteKeyRequest) -> tuple[bytes, str]:
        return decide_site_key(request, self.pinned, keys=self.keys)

    def suspend(self, dataset: int) -> None:
        self.pinned.suspended.suspend(dataset)

    def resume(self, dataset: int) -> None:
        self.pinned.suspended.resume(dataset)
