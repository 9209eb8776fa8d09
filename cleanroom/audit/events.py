"""The audit vocabulary: every event type, the log it is written to and what its data holds.

One definition. The apps write events only through `record_room_event` and
`record_platform_event`, which refuse a type that is not listed here; the event table in
cleanroom/audit/README.md is this registry rendered (`event_table`), which a test holds it to;
and the offline verifier's domain rules read these types. A new event type is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Events:
    """Event types that share a log and a description of their data."""

    types: tuple[str, ...]
    log: str  # room, platform, or room or platform
    data: str  # what `data` holds, as the documented table says it


VOCABULARY: tuple[Events, ...] = (
    Events(
        ("organization.created", "membership.added"), "platform", "`jurisdiction`; `user`, `role`"
    ),
    Events(
        ("account.locked_out",),
        "platform",
        "`ip_address`, `failures`: a username refused after repeated wrong passwords",
    ),
    Events(
        ("account.token_created",),
        "platform",
        (
            "`token` (its id), `prefix` (its public first characters), `expires_at`; the secret "
            "is never recorded"
        ),
    ),
    Events(("account.token_revoked",), "platform", "`token`, `prefix`"),
    Events(
        ("account.sessions_ended",),
        "platform",
        "`sessions`: how many of the user's other sessions they signed out",
    ),
    Events(
        ("passkey.registered", "passkey.removed", "machine_key.registered", "machine_key.removed"),
        "platform",
        (
            "`organization` (empty for a passkey that only signs in), `credential` (`kind`, "
            "`credential_id`, `public_key`, `rp_id`), `name`, `holder`: a credential a member "
            "signs in with or an organisation's owners approve with"
        ),
    ),
    Events(
        ("dataset.registered", "dataset.version_added"),
        "platform",
        (
            "`organization`, `jurisdiction`, `version`, `content_sha256`, `ciphertext_sha256`, "
            "`row_count`, `columns`"
        ),
    ),
    Events(
        ("dataset.suspended", "dataset.resumed"),
        "room or platform",
        (
            "`dataset`, `owner`: the owner's kill switch, written to the platform log and to "
            "every room the dataset is in"
        ),
    ),
    Events(
        ("policy.changed",),
        "platform",
        "`version` and every policy setting; `allowed_receivers` as org ids",
    ),
    Events(
        ("room.created", "room.invited", "room.joined", "room.declined"), "room", "`organization`"
    ),
    Events(
        ("room.participation_suspended", "room.participation_resumed"),
        "room",
        (
            "`organization`, `datasets` (its datasets contributed to the room): the owner's kill "
            "switch for its participation in this room alone"
        ),
    ),
    Events(
        ("room.dataset_contributed",),
        "room",
        (
            "`dataset`, `version`, `policy_version`, `jurisdiction`, `owner`, `total_epsilon`, "
            "`total_delta`"
        ),
    ),
    Events(
        ("query.submitted",),
        "room",
        (
            "`query`, `lineage`, `version`, `digest`, `datasets` (each `dataset`, `version`, "
            "`policy_version`, `owner`, `jurisdiction`), `required_approvers`, `receivers`, "
            "`epsilon`, `delta`, `mechanism`, `output_kind`, `expires_at`, `residency` (the "
            "planner's decisions), for a synthetic extract `synthetic` (`method`, `rows`, "
            "`differentially_private`, `charge`); the query text as an attachment"
        ),
    ),
    Events(
        ("query.approved", "query.rejected"),
        "room",
        (
            "`query`, `digest`, `organization`, `approval`: the owner's evidence, a passkey's "
            "WebAuthn assertion or a machine key's signature over the approval message, with "
            "the credential's id and public key (`jobs/docs/queries-and-approvals.md`)"
        ),
    ),
    Events(
        ("query.approval_revoked", "query.expired", "query.superseded"),
        "room",
        "`query`, `organization` where one acted",
    ),
    Events(
        ("job.dispatched",),
        "room",
        "`job`, `query`, `digest`, `steps` (each `step`, `site`, `jurisdiction`)",
    ),
    Events(
        ("residency.decided",),
        "room",
        (
            "`job`, `step`, `site`, `site_jurisdiction`, `data_jurisdiction`, `kind` "
            "(`process_rows`, `receive_shares`, `deliver_output`), `allowed_jurisdictions`, "
            "`allowed`, `reason`, `checked_by` (`dispatcher`, `worker`, or an MPC input step "
            "sending shares), `dataset`"
        ),
    ),
    Events(
        ("attestation.verified", "attestation.refused"),
        "room",
        "`job`, `kind` (`hardware` or `simulated`), `measurements`, `evidence_sha256`, `reason`",
    ),
    Events(
        ("key.released",),
        "room",
        "`job`, `dataset`, `site` (the enclave's site, or an MPC input step's)",
    ),
    Events(
        ("key.refused",),
        "room",
        (
            "`job`, `reason` (the job's keys were already released, or it is not running or was "
            "cancelled)"
        ),
    ),
    Events(
        ("job.charged",),
        "room",
        (
            "`job`, `released` (`data keys` or `delivery key`): the keys are about to leave, so the"
            " job's reservation will be spent however it ends"
        ),
    ),
    Events(
        ("budget.reserved", "budget.spent", "budget.refunded"),
        "room",
        "`job`, `dataset`, `epsilon`, `delta`",
    ),
    Events(
        ("job.started", "job.failed", "job.succeeded", "job.cancelled"),
        "room",
        "`job`, `attempt`, `reason`",
    ),
    Events(
        ("job.lease_expired",),
        "room",
        (
            "`job`, `site` (the lease's holder), `attempt`, `expired_at`, `outcome` (`retried`, "
            "`failed` or `cancelled`); for a step also `step` and `kind`: its site stopped "
            'renewing the lease (`jobs/docs/running-queries.md`, "Jobs that cannot hang")'
        ),
    ),
    Events(
        ("job.cancel_requested",),
        "room",
        "`job`; the analyst asked a running job to stop at its next progress report",
    ),
    Events(
        ("job.step.started", "job.step.succeeded", "job.step.failed"),
        "room",
        (
            "`job`, `step` (its name), `kind` (`input`, `compute`, `deliver`), `site` (null for the"
            " delivery), `attempt`; an input step's success `shares` (each `party`, `site`, "
            "`sha256` of the sealed file), a compute step's `output_sha256`, `bytes_sent`, "
            "`bytes_received`; the delivery's start `shares_from`; a failure's `reason`"
        ),
    ),
    Events(
        ("result.released",),
        "room",
        (
            '`job`, `query`, `receivers`, `result_commitment` (salted: "Commitments, not hashes"), '
            "`mechanism`, `epsilon`; for a synthetic extract also `output_kind`, `method`, `rows`, "
            "`differentially_private`, `delta` and `files` (name → the salted commitment to each "
            "released file)"
        ),
    ),
    Events(
        ("access.refused",),
        "room or platform",
        "`what`, `reason`; for a step received at the wrong site also `step`, `site`",
    ),
    Events(("bundle.exported",), "room", "`format`, `tree_size`"),
)
EVENT_TYPES = frozenset(name for events in VOCABULARY for name in events.types)


class UnknownEventType(ValueError):
    """An event type outside the vocabulary: nothing is recorded."""


def registered(type: str) -> str:
    if type not in EVENT_TYPES:
        raise UnknownEventType(f"{type!r} is not an audit event type (cleanroom/audit/events.py)")
    return type


def event_table() -> str:
    """The documented table of event types (cleanroom/audit/README.md), from the vocabulary."""
    lines = ["| type | log | data |", "|---|---|---|"]
    for events in VOCABULARY:
        names = ", ".join(f"`{name}`" for name in events.types)
        lines.append(f"| {names} | {events.log} | {events.data} |")
    return "\n".join(lines) + "\n"
