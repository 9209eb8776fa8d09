"""The client: one method per thing an analyst or an owner does, each one API operation of
`operations.OPERATIONS` (or a few, for a result's files)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from cleanroom.client.errors import ApiError
from cleanroom.client.plan import Plan
from cleanroom.client.progress import ProgressBar
from cleanroom.client.results import Extract, table_frame
from cleanroom.client.review import Review
from cleanroom.client.signing import load_machine_key, machine_key_assertion
from cleanroom.client.transport import Transport

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Query:
    """A query version in a room; `plan` is the report frozen into it at submission."""

    id: int
    room: str
    title: str
    status: str
    version: int
    digest: str
    epsilon: str
    mechanism: str
    plan: Plan

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Query:
        return cls(
            id=data["id"],
            room=data["room"],
            title=data["title"],
            status=data["status"],
            version=data["version"],
            digest=data["digest"],
            epsilon=data["epsilon"],
            mechanism=data["mechanism"],
            plan=Plan(data["plan"]),
        )


@dataclass(frozen=True)
class Job:
    """A run of an approved query; `room` names the room it runs in."""

    id: int
    room: str
    query: int
    state: str
    mechanism: str
    site: str | None
    progress: int
    progress_message: str
    error: str
    has_result: bool

    @classmethod
    def from_api(cls, room: str, data: dict[str, Any]) -> Job:
        return cls(
            id=data["id"],
            room=room,
            query=data["query"],
            state=data["state"],
            mechanism=data["mechanism"],
            site=data["site"],
            progress=data["progress"],
            progress_message=data["progress_message"],
            error=data["error"],
            has_result=data["has_result"],
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class Client:
    """`Client(url, token)` with an API token (the Security page, or `Client.login`)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60):
        self.transport = Transport(base_url, token, timeout=timeout)
        # When a token from `login` expires (ISO 8601); None for a token given.
        self.token_expires_at: str | None = None

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    @classmethod
    def login(
        cls,
        base_url: str,
        username: str,
        password: str,
        *,
        token_name: str = "cleanroom client",  # noqa: S107 - a label, not a secret
        expires_in_days: int | None = None,
    ) -> Client:
        """A new API token for a username and password (`POST /api/token/`). It expires (the
        server's lifetime, or `expires_in_days` if shorter); `client.token` holds it."""
        body: dict[str, Any] = {"username": username, "password": password, "name": token_name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        issued = Transport(base_url).call("login", body)
        client = cls(base_url, issued["token"])
        client.token_expires_at = issued["expires_at"]
        return client

    @property
    def token(self) -> str:
        return self.transport.token or ""

    # Reading -----------------------------------------------------------------------------

    def rooms(self) -> list[dict[str, Any]]:
        """Rooms your organisations are in or invited to."""
        return self.transport.call("rooms")

    def room(self, room: str) -> dict[str, Any]:
        return self.transport.call("room", slug=room)

    def datasets(self) -> list[dict[str, Any]]:
        """Datasets of your organisations and of rooms they are in (metadata only)."""
        return self.transport.call("datasets")

    def policy(self, dataset: str) -> dict[str, Any]:
        """The current analysis policy of a dataset, named `org.dataset`."""
        org, slug = _qualified(dataset)
        return self.transport.call("policy", org=org, slug=slug)

    def policies(self, room: str) -> dict[str, dict[str, Any]]:
        """The current policy of each dataset contributed to the room, by `org.dataset`."""
        names = [c["dataset"] for c in self.room(room)["contributions"]]
        return {name: self.policy(name) for name in names}

    def budget(self, room: str) -> list[dict[str, Any]]:
        """Each of the room's datasets' lifetime ε: total, spent, reserved, remaining."""
        return self.transport.call("budget", slug=room)

    # Composing ---------------------------------------------------------------------------

    def plan(
        self,
        room: str,
        sql: str,
        epsilon: float | str | Decimal,
        *,
        delta: float | str | Decimal = 0,
        mechanism: str = "auto",
        receivers: list[str] | None = None,
        output_kind: str = "aggregate",
        synthetic_method: str | None = None,
        synthetic_rows: int | None = None,
    ) -> Plan:
        """The planner's report for the query (stores nothing): its checks, the ε it charges
        each dataset, each cell's accuracy and every step's residency. Receivers default to
        your organisation."""
        body = self._query_body(
            sql, epsilon, delta, mechanism, receivers, output_kind, synthetic_method, synthetic_rows
        )
        return Plan(self.transport.call("plan", body, slug=room))

    def submit(
        self,
        room: str,
        sql: str,
        epsilon: float | str | Decimal,
        *,
        title: str,
        purpose: str,
        delta: float | str | Decimal = 0,
        mechanism: str = "auto",
        receivers: list[str] | None = None,
        output_kind: str = "aggregate",
        synthetic_method: str | None = None,
        synthetic_rows: int | None = None,
        expires_in_days: int = 30,
    ) -> Query:
        """Propose the query and submit it for the owners' approval (refused, with the plan's
        failed checks, if it does not pass)."""
        body = self._query_body(
            sql, epsilon, delta, mechanism, receivers, output_kind, synthetic_method, synthetic_rows
        )
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
        body.update(title=title, purpose=purpose, expires_at=expires_at.isoformat(), submit=True)
        return Query.from_api(self.transport.call("create_query", body, slug=room))

    def query(self, room: str, query_id: int) -> Query:
        return Query.from_api(self.transport.call("query", slug=room, id=query_id))

    # Deciding ----------------------------------------------------------------------------

    def review(self, query: Query | int, room: str | None = None) -> Review:
        """The version as an approval would bind it, its digest recomputed here from the
        canonical form the server shows; `print(review)` shows that form (SQL, mechanism, ε, δ,
        receivers, datasets). Raises `RefusedToSign` if the server's digest is not the form's,
        or its other fields say otherwise than the form."""
        room, query_id = _target(query, room)
        return Review.of(room, self.transport.call("query", slug=room, id=query_id))

    def approve(
        self,
        query: Review | Query | int,
        organization: str,
        key_file: str | Path,
        comment: str = "",
        *,
        room: str | None = None,
    ) -> dict[str, Any]:
        """Approve the query's current version for `organization` (a slug), signed here with
        the organisation's registered machine key (`key_file`, which never leaves this
        machine). Given a `Review`, signs the form it holds (the one you read); given a query,
        reviews it first. Either way the digest signed is recomputed here from the canonical
        form, and `RefusedToSign` is raised before the key is read if the server's differs.
        Returns the stored approval: `id`, `organization`, `decision`, `digest`, `verified`."""
        return self._decide("approve", query, organization, key_file, comment, room)

    def reject(
        self,
        query: Review | Query | int,
        organization: str,
        key_file: str | Path,
        comment: str = "",
        *,
        room: str | None = None,
    ) -> dict[str, Any]:
        """Reject the query's current version, signed as `approve` is."""
        return self._decide("reject", query, organization, key_file, comment, room)

    def _decide(
        self,
        decision: str,
        query: Review | Query | int,
        organization: str,
        key_file: str | Path,
        comment: str,
        room: str | None,
    ) -> dict[str, Any]:
        review = query if isinstance(query, Review) else self.review(query, room)
        key = load_machine_key(key_file)
        assertion = machine_key_assertion(
            key,
            query_id=review.query_id,
            digest=review.digest,
            organization_id=self._organization_id(organization),
            decision=decision,
        )
        body = {"organization": organization, "comment": comment, "assertion": assertion}
        return self.transport.call(decision, body, slug=review.room, id=review.query_id)

    # Running -----------------------------------------------------------------------------

    def run(self, query: Query | int, room: str | None = None) -> Job:
        """Run an approved query (once): its job goes to its site's queue."""
        room, query_id = _target(query, room)
        return Job.from_api(room, self.transport.call("run", slug=room, id=query_id))

    def job(self, job: Job | int, room: str | None = None) -> Job:
        room, job_id = _target(job, room)
        return Job.from_api(room, self.transport.call("job", slug=room, id=job_id))

    def wait(
        self,
        job: Job | int,
        room: str | None = None,
        *,
        progress: bool = True,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> Job:
        """Wait until the job finishes, with a progress bar on stderr; a job that failed or was
        cancelled raises `ApiError` (code `job_failed` or `job_cancelled`) with its error."""
        current = self.job(job, room)
        bar = ProgressBar(f"job {current.id}") if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if bar:
                    bar.update(current.state, current.progress, current.progress_message)
                if current.finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise ApiError("timeout", f"Job {current.id} is still {current.state}.")
                time.sleep(poll_seconds)
                current = self.job(current)
        finally:
            if bar:
                bar.close()
        if current.state != "succeeded":
            raise ApiError(
                f"job_{current.state}", f"Job {current.id} {current.state}: {current.error}"
            )
        return current

    def result(self, job: Job | int, room: str | None = None) -> pl.DataFrame | Extract:
        """The released result: a DataFrame of an aggregate's table (each cell's value, 95 %
        interval, mechanism and scale), or a synthetic extract's rows with its reports."""
        room, job_id = _target(job, room)
        released = self.transport.call("result", slug=room, id=job_id)
        if released.get("output_kind") != "synthetic":
            return table_frame(released["table"])
        names = {f["name"] for f in released["files"]}

        def file(name: str) -> bytes:
            return self.transport.download("result_file", slug=room, id=job_id, name=name)

        rows = (
            pl.read_parquet(io.BytesIO(file("extract.parquet")))
            if "extract.parquet" in names
            else pl.read_csv(io.BytesIO(file("extract.csv")), comment_prefix="#")
        )
        return Extract(
            data=rows,
            quality=json.loads(file("quality.json")),
            privacy=json.loads(file("privacy.json")),
            summary=released["extract"],
            differentially_private=released["differentially_private"],
            label=released["label"],
        )

    def bundle(self, room: str, path: str | Path | None = None) -> Path:
        """Download the room's audit bundle (a zip to verify offline with its verify.pyz)."""
        target = Path(path) if path else Path(f"{room}-audit-bundle.zip")
        target.write_bytes(self.transport.download("bundle", slug=room))
        return target

    # -------------------------------------------------------------------------------------

    def _query_body(
        self, sql, epsilon, delta, mechanism, receivers, output_kind, method, rows
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sql": sql,
            "epsilon": str(epsilon),
            "delta": str(delta),
            "requested_mechanism": mechanism,
            "receivers": receivers if receivers is not None else self._own_organizations(),
            "output_kind": output_kind,
        }
        if method is not None:
            body["synthetic_method"] = method
        if rows is not None:
            body["synthetic_rows"] = rows
        return body

    def _own_organizations(self) -> list[str]:
        return [org["slug"] for org in self.transport.call("organizations")]

    def _organization_id(self, slug: str) -> int:
        for org in self.transport.call("organizations"):
            if org["slug"] == slug:
                return org["id"]
        raise ApiError(
            "not_a_member", f"You are not a member of an organisation {slug!r}.", status=404
        )


def _target(thing: Query | Job | int, room: str | None) -> tuple[str, int]:
    if isinstance(thing, (Query, Job)):
        return thing.room, thing.id
    if room is None:
        raise ValueError("Name the room of a query or job given by its number.")
    return room, thing


def _qualified(dataset: str) -> tuple[str, str]:
    org, dot, slug = dataset.partition(".")
    if not dot or not org or not slug:
        raise ValueError(f"Name a dataset as org.dataset, e.g. charite.inpatients: {dataset!r}")
    return org, slug
