"""The OpenAPI schema tells the truth about the API (issue #18): schemathesis sends requests it
generates from the schema to a live server, as an analyst, an owner, an auditor and a
regulator, and runs every one of its checks on each answer (server errors, undocumented status
codes, responses that do not match their schema, content types, headers, data the schema
allows refused or data it forbids accepted, authentication ignored); and every status the
authorization matrix sees on an API URL is one the schema documents for it.

The run is deterministic: Hypothesis is derandomized with no example database, the operations
run in the schema's order, and every path names the scene's own room, dataset, query, approval
and job, so a generated change (an approval, a suspension, a cancelled job) happens the same way
on every run and leaves the others their objects or a documented refusal.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.urls import resolve
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from cleanroom.audit import checkpoints
from cleanroom.audit.log import room_log_name
from jobs import tasks
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from tests import factories
from tests.factories import JOIN_SQL, propose, token_for
from tests.test_authorization_matrix import MATRIX, PERSONAS

TEE_SITE = "eu-frankfurt-tee"
PERSONAS_ASKING = ("bob", "alice", "dave", "rita")  # analyst, owner, auditor, regulator
EXAMPLES_PER_OPERATION = 5

# The schema describes the shape of a request; whether its SQL parses, the organisation it
# names exists or a policy allows it is for the server to say, with 400 in the error format.
# So a schema-valid request may be refused with 400 as well as with the check's defaults.
CHECKS_CONFIG = {
    "checks": {
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "400", "401", "403", "404", "409"],
        },
    },
}


def approve(world, query):
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


@pytest.fixture
def api_scene(world, tmp_path, monkeypatch):
    """The study room with a pending query, an approved one not run, and one run to a
    released result; jobs are run in this process (the broker is not involved)."""
    room = world.study(tmp_path)
    pending = propose(room, world.bob, world.pharma, title="Waiting for owners")
    ready = approve(world, propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Ready"))
    ran = approve(world, propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Ran"))
    monkeypatch.setenv("CLEANROOM_SITE", TEE_SITE)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    job = run_query(query=ran, by=world.bob)
    assert tasks.run_job(job.pk, TEE_SITE) == "released"
    checkpoints.sign_checkpoint(room_log_name(room.pk))
    return {
        "room": room.slug,
        "pending": pending.pk,
        "ready": ready.pk,
        "approval": ready.approvals.get(organization=world.charite).pk,
        "job": job.pk,
    }


def path_parameters(path: str, scene: dict) -> dict:
    """The scene's own objects for the operation's path."""
    if "{org}" in path:
        return {"org": "charite", "slug": "patients"}
    params = {"slug": scene["room"]} if "{slug}" in path else {}
    if "{approval_id}" in path:
        params.update(id=scene["ready"], approval_id=scene["approval"])
    elif "/jobs/{id}" in path:
        params["id"] = scene["job"]
    elif "{id}" in path:
        params["id"] = scene["pending"]
    if "{name}" in path:
        params["name"] = "extract.csv"
    return params


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_failure_as_any_persona(world, api_scene, live_server):
    config = schemathesis.config.SchemathesisConfig.from_dict(CHECKS_CONFIG)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/", config=config)
    failures = []
    for persona in PERSONAS_ASKING:
        headers = {"Authorization": f"Token {token_for(getattr(world, persona))}"}
        for result in schema.get_all_operations():
            operation = result.ok()
            modes = [GenerationMode.POSITIVE]
            if len(operation.body) or len(operation.query):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                params = path_parameters(operation.path, api_scene) or None
                try:
                    check(operation, mode, params, live_server.url, headers)
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"as {persona}, {mode.value} {operation.label}:\n{exc}")
    assert not failures, "\n\n".join(failures)


def check(operation, mode, params, base_url, headers) -> None:
    """Send the operation's generated requests and run every check on each answer."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=params))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case):
        case.call_and_validate(base_url=base_url, headers=headers)

    conforms()


def test_every_status_the_authorization_matrix_sees_is_documented(client):
    """The matrix, written by hand, is the other witness of what each API URL answers."""
    spec = client.get("/api/schema/?format=json").json()
    operations = {}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            example = path.replace("{org}", "o").replace("{slug}", "s").replace("{name}", "n")
            example = example.replace("{id}", "1").replace("{approval_id}", "1")
            operations[(resolve(example).url_name, method.upper())] = set(operation["responses"])
    undocumented = []
    for (name, method), row in MATRIX.items():
        if not name.startswith("api-") or name in ("api-schema", "api-docs", "api-redoc"):
            continue
        documented = operations[(name, method)]
        for persona, status in zip(PERSONAS, row.split(), strict=True):
            if status not in documented:
                undocumented.append(f"{method} {name} as {persona}: {status}")
    assert not undocumented, "\n".join(undocumented)


def test_every_refusal_in_the_schema_is_in_the_one_error_format(client):
    spec = client.get("/api/schema/?format=json").json()
    for methods in spec["paths"].values():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    content = response["content"]["application/json"]["schema"]
                    assert content == {"$ref": "#/components/schemas/Error"}
