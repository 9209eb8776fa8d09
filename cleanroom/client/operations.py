"""Every API operation the client calls: its method and path as the OpenAPI schema names them,
the request fields it may send and the response fields it reads.

This table is the client's contract with the server. The client calls nothing that is not here
and sends no field that is not listed (`Transport.call` refuses), and
`tests/client/test_schema_contract.py` checks each row against the live schema: a schema change
that breaks the client fails that test. A read is a dotted path into the response (for a list,
into each item); `[]` steps into an array's items.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    sends: frozenset[str] = frozenset()
    reads: tuple[str, ...] = ()
    # A page of `results` with a `next` link (the API's page numbers), followed to the end.
    paginated: bool = False

    def url(self, **params: object) -> str:
        return self.path.format(
            **{name: quote(str(value), safe="") for name, value in params.items()}
        )


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


QUERY_FIELDS = _fields(
    "sql",
    "requested_mechanism",
    "epsilon",
    "delta",
    "receivers",
    "output_kind",
    "synthetic_method",
    "synthetic_rows",
)

PLAN_READS = (
    "ok",
    "error",
    "output_kind",
    "mechanism.chosen",
    "mechanism.reason",
    "checks[].name",
    "checks[].ok",
    "checks[].message",
    "datasets[].name",
    "datasets[].owner.slug",
    "datasets[].jurisdiction",
    "datasets[].epsilon",
    "datasets[].delta",
    "datasets[].total_epsilon",
    "datasets[].remaining_epsilon",
    "datasets[].fits",
    "cells[].alias",
    "cells[].kind",
    "cells[].mechanism",
    "cells[].accuracy95",
    "steps[].step",
    "steps[].site",
    "steps[].jurisdiction",
    "steps[].decisions[].allowed",
    "steps[].decisions[].reason",
    "required_approvers",
)

QUERY_READS = (
    "id",
    "room",
    "title",
    "purpose",
    "sql",
    "status",
    "version",
    "digest",
    "canonical",
    "epsilon",
    "delta",
    "mechanism",
    "output_kind",
    "receivers",
    "plan",
)

DECISION_SENDS = _fields("organization", "comment", "assertion")

APPROVAL_READS = ("id", "organization", "decision", "digest", "verified")

JOB_READS = (
    "id",
    "query",
    "state",
    "mechanism",
    "site",
    "progress",
    "progress_message",
    "error",
    "has_result",
)

OPERATIONS: dict[str, Operation] = {
    "login": Operation(
        "POST",
        "/api/token/",
        sends=_fields("username", "password", "name", "expires_in_days"),
        reads=("token", "expires_at"),
    ),
    "organizations": Operation("GET", "/api/organizations/", reads=("id", "slug"), paginated=True),
    "rooms": Operation(
        "GET",
        "/api/rooms/",
        reads=(
            "slug",
            "name",
            "created_by_organization",
            "memberships[].organization",
            "memberships[].status",
            "contributions[].dataset",
        ),
        paginated=True,
    ),
    "room": Operation("GET", "/api/rooms/{slug}/", reads=("slug", "contributions[].dataset")),
    "datasets": Operation(
        "GET",
        "/api/datasets/",
        reads=("qualified_name", "name", "jurisdiction", "suspended_at"),
        paginated=True,
    ),
    "policy": Operation(
        "GET",
        "/api/datasets/{org}/{slug}/policy/",
        reads=(
            "version",
            "allowed_dimensions",
            "allowed_measures",
            "allowed_aggregates",
            "max_epsilon_per_query",
            "total_epsilon",
        ),
    ),
    "plan": Operation(
        "POST", "/api/rooms/{slug}/queries/plan/", sends=QUERY_FIELDS, reads=PLAN_READS
    ),
    "create_query": Operation(
        "POST",
        "/api/rooms/{slug}/queries/",
        sends=QUERY_FIELDS | _fields("title", "purpose", "expires_at", "submit"),
        reads=QUERY_READS,
    ),
    "query": Operation("GET", "/api/rooms/{slug}/queries/{id}/", reads=QUERY_READS),
    "approve": Operation(
        "POST",
        "/api/rooms/{slug}/queries/{id}/approve/",
        sends=DECISION_SENDS,
        reads=APPROVAL_READS,
    ),
    "reject": Operation(
        "POST",
        "/api/rooms/{slug}/queries/{id}/reject/",
        sends=DECISION_SENDS,
        reads=APPROVAL_READS,
    ),
    "run": Operation("POST", "/api/rooms/{slug}/queries/{id}/run/", reads=JOB_READS),
    "job": Operation("GET", "/api/rooms/{slug}/jobs/{id}/", reads=JOB_READS),
    "result": Operation(
        "GET",
        "/api/rooms/{slug}/jobs/{id}/result/",
        reads=(
            "output_kind",
            "differentially_private",
            "label",
            "extract",
            "table.dimensions",
            "table.columns",
            "table.rows",
            "files[].name",
        ),
    ),
    "result_file": Operation("GET", "/api/rooms/{slug}/jobs/{id}/result/files/{name}"),
    "budget": Operation(
        "GET",
        "/api/rooms/{slug}/budget/",
        reads=("dataset", "total_epsilon", "spent_epsilon", "remaining_epsilon"),
    ),
    "bundle": Operation("GET", "/api/audit/bundles/{slug}/"),
}
