"""The client is checked against the API's live OpenAPI schema: every operation it calls
(`cleanroom/client/operations.py`) exists with its method, takes every field the client sends
and answers with every field the client reads. A schema change that would break the client
fails here, before an analyst's notebook does."""

from __future__ import annotations

import copy

import pytest

from cleanroom.client.operations import OPERATIONS, Operation
from cleanroom.client.transport import Transport


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from django.test import Client as DjangoClient

    with django_db_blocker.unblock():
        return DjangoClient().get("/api/schema/?format=json").json()


def resolve(spec: dict, node: dict) -> dict:
    """Follow `$ref` and drf-spectacular's single-member `allOf` to the schema itself."""
    while True:
        if "$ref" in node:
            node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
        elif len(node.get("allOf", ())) == 1:
            node = node["allOf"][0]
        else:
            return node


def field_at(spec: dict, node: dict, path: str) -> dict | None:
    """The schema of the dotted `path` (`[]` steps into an array's items), or None."""
    for part in path.split("."):
        many = part.endswith("[]")
        node = resolve(spec, node).get("properties", {}).get(part.removesuffix("[]"))
        if node is None:
            return None
        if many:
            node = resolve(spec, node)
            if node.get("type") != "array":
                return None
            node = node["items"]
    return resolve(spec, node)


def problems_of(spec: dict, name: str, operation: Operation) -> list[str]:
    described = spec["paths"].get(operation.path, {}).get(operation.method.lower())
    if described is None:
        return [f"{name}: {operation.method} {operation.path} is not in the schema"]
    problems = []
    if operation.sends:
        body = described.get("requestBody", {}).get("content", {}).get("application/json")
        accepted = set(resolve(spec, body["schema"]).get("properties", {})) if body else set()
        problems += [
            f"{name}: the request has no field {field!r}"
            for field in sorted(operation.sends - accepted)
        ]
    if operation.reads:
        [answer] = [
            described["responses"][s] for s in ("200", "201") if s in described["responses"]
        ]
        node = resolve(spec, answer["content"]["application/json"]["schema"])
        if operation.paginated:
            node = resolve(spec, field_at(spec, node, "results[]") or {})
        elif node.get("type") == "array":
            node = resolve(spec, node["items"])
        problems += [
            f"{name}: the response has no field {read!r}"
            for read in operation.reads
            if field_at(spec, node, read) is None
        ]
    return problems


def test_every_operation_the_client_calls_is_in_the_schema_as_the_client_uses_it(schema):
    problems = [p for name, op in OPERATIONS.items() for p in problems_of(schema, name, op)]
    assert not problems, "\n".join(problems)


def test_a_schema_that_drops_a_field_the_client_reads_fails_the_check(schema):
    """The check's adversary: the server stops describing what the plan charges a dataset."""
    changed = copy.deepcopy(schema)
    del changed["components"]["schemas"]["PlanDataset"]["properties"]["remaining_epsilon"]
    assert problems_of(changed, "plan", OPERATIONS["plan"]) == [
        "plan: the response has no field 'datasets[].remaining_epsilon'"
    ]


def test_a_schema_that_renames_a_request_field_or_moves_a_path_fails_the_check(schema):
    changed = copy.deepcopy(schema)
    plan_input = changed["components"]["schemas"]["PlanInputRequest"]["properties"]
    plan_input["mechanism"] = plan_input.pop("requested_mechanism")
    changed["paths"]["/api/rooms/{slug}/jobs/{id}/status/"] = changed["paths"].pop(
        "/api/rooms/{slug}/jobs/{id}/"
    )
    assert problems_of(changed, "plan", OPERATIONS["plan"]) == [
        "plan: the request has no field 'requested_mechanism'"
    ]
    assert problems_of(changed, "job", OPERATIONS["job"]) == [
        "job: GET /api/rooms/{slug}/jobs/{id}/ is not in the schema"
    ]


def test_the_client_sends_no_field_its_operations_do_not_declare():
    """What the schema test checks is all the client sends: an undeclared field is refused
    before anything goes out."""
    transport = Transport("http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"plan does not declare the fields \['epsilon_total'\]"):
        transport.call("plan", {"sql": "SELECT 1", "epsilon_total": "1"}, slug="room")
