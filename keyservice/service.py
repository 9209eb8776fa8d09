"""One organisation's key service: its token, what it pins, its dataset book and its release
log. The embedded default runs the same object in the platform's process (no book there: its
datasets come from the platform's records).

Besides dataset keys it holds the organisation's receiving keys: `results`, which every result
released to the organisation is sealed to, and one per MPC job whose delivery it receives
(`job<id>`), destroyed in the token when the job ends."""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import UTC, datetime
from typing import Protocol

from cryptography.exceptions import InvalidTag

from cleanroom.crypto.sealing import open_received
from keyservice.config import Suspensions
from keyservice.release import (
    Pinned,
    Refused,
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

    def receiving_key(self, label: str) -> bytes: ...

    def agree(self, label: str, peer: bytes) -> bytes: ...  # KeyError: no such key

    def destroy_receiving_key(self, label: str) -> None: ...


class Book(Protocol):
    def register(self, dataset: int, name: str, jurisdiction: str) -> None: ...


RESULTS = "results"
_PURPOSE = re.compile(r"results|job[0-9]+")


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
        _kept(self.pinned.suspended).suspend(dataset)

    def resume(self, dataset: int) -> None:
        _kept(self.pinned.suspended).resume(dataset)

    def suspend_room(self, room: int) -> None:
        _kept(self.pinned.suspended_rooms).suspend(room)

    def resume_room(self, room: int) -> None:
        _kept(self.pinned.suspended_rooms).resume(room)

    def _label(self, purpose: str) -> str:
        if not _PURPOSE.fullmatch(purpose):
            raise Refused(f"no receiving key for {purpose!r}: results, or job<id>")
        return f"org{self.pinned.organization}{purpose}"

    def receiving_key(self, purpose: str) -> bytes:
        """The public point of a receiving key: `results`, or an MPC job's delivery."""
        return self.keys.receiving_key(self._label(purpose))

    def open_received(self, purpose: str, sealed: bytes, *, context: bytes, reader: str) -> bytes:
        """Open what was sealed to a receiving key, the key agreement done in the token, for
        `reader` (whom the caller reads for: the server logs it with the decision)."""
        label = self._label(purpose)
        try:
            return open_received(lambda peer: self.keys.agree(label, peer), sealed, context=context)
        except KeyError:
            raise Refused(f"no {purpose} key: it was destroyed, or never made") from None
        except (InvalidTag, ValueError):
            raise Refused(f"this was not sealed to {purpose} for this context") from None

    def destroy_receiving_key(self, purpose: str) -> None:
        """Destroy a job's delivery key in the token (the results key is never destroyed)."""
        if purpose == RESULTS:
            raise Refused("the results key is the organisation's own; it is not destroyed")
        self.keys.destroy_receiving_key(self._label(purpose))


def _kept(suspended: Container[int]) -> Suspensions:
    """The service's own switch; the embedded service reads suspensions from the platform's
    records and keeps none."""
    if not isinstance(suspended, Suspensions):
        raise Refused("this key service keeps no suspensions: suspend on the platform")
    return suspended
