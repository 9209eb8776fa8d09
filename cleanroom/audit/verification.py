"""The platform's own verification of its logs, with the same checks the offline verifier runs.

- :func:`prove_events`: each event's inclusion proof against its log's latest signed
  checkpoint, actually verified (the "verified" marks of the trail page and API);
- :func:`verify_log`: a whole log, from the database rows: sequence, canonical bytes, the
  leaf hashes stored at append time, the root against a checkpoint signed by a trusted key,
  optionally consistency with a checkpoint saved earlier, the attachments, and the domain
  rules. Raises VerificationError naming the first failure.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cleanroom.audit import tree
from cleanroom.audit.checkpoints import (
    latest_checkpoint,
    log_vkeys,
    note_with_cosignatures,
    origin_of,
)
from cleanroom.audit.models import AuditAttachment, AuditEvent, AuditLog, Checkpoint
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.canonical import parse_canonical_event
from cleanroom.audit.verifier.merkle import CompactRange, leaf_hash, verify_inclusion
from cleanroom.audit.verifier.notes import Checkpoint as ParsedCheckpoint
from cleanroom.audit.verifier.notes import verify_checkpoint, verify_cosignatures
from cleanroom.audit.verifier.rules import DomainRules

VERIFIED, PENDING, FAILED = "verified", "pending", "failed"


@dataclass
class ProvenEvent:
    """An event with the evidence that it is in its log, and the verdict."""

    event: AuditEvent
    body: dict[str, Any]
    status: str
    reason: str = ""
    checkpoint: Checkpoint | None = None
    proof: list[bytes] = field(default_factory=list)
    cosigned_by: list[str] = field(default_factory=list)

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(bytes(self.event.canonical))


@dataclass
class _LogEvidence:
    checkpoint: Checkpoint | None
    parsed: ParsedCheckpoint | None
    cosigned_by: list[str]
    error: str = ""


def _evidence(log: AuditLog, trusted: Sequence[str]) -> _LogEvidence:
    checkpoint = latest_checkpoint(log.name)
    if checkpoint is None:
        return _LogEvidence(None, None, [])
    try:
        parsed, _ = verify_checkpoint(checkpoint.note, trusted, origin=origin_of(log.name))
    except VerificationError as exc:
        return _LogEvidence(checkpoint, None, [], f"checkpoint does not verify: {exc}")
    cosigned_by = []
    for cosignature in checkpoint.cosignatures.select_related("witness"):
        try:
            found = verify_cosignatures(
                checkpoint.note + cosignature.signature, [cosignature.witness.vkey]
            )
        except VerificationError:
            continue
        cosigned_by += list(found)
    return _LogEvidence(checkpoint, parsed, cosigned_by)


def prove_events(
    events: Iterable[AuditEvent], *, trusted: Sequence[str] | None = None
) -> list[ProvenEvent]:
    """Each event's inclusion proof against its log's latest checkpoint, verified.

    One checkpoint and one node query per log, whatever the number of events.
    """
    events = list(events)
    trusted = list(trusted) if trusted is not None else log_vkeys()
    by_log: dict[int, list[AuditEvent]] = defaultdict(list)
    for event in events:
        by_log[event.log_id].append(event)
    verdicts: dict[int, ProvenEvent] = {}
    logs = AuditLog.objects.in_bulk(list(by_log))
    for log_id, log_events in by_log.items():
        log = logs[log_id]
        evidence = _evidence(log, trusted)
        size = evidence.parsed.size if evidence.parsed else 0
        wanted = [e.seq for e in log_events if e.seq < size]
        proofs: dict[int, list[bytes]] = {}
        if evidence.parsed and wanted:
            try:
                proofs = tree.inclusion_proofs(log, wanted, size)
            except tree.MissingNodes as exc:
                evidence.error = str(exc)
        for event in log_events:
            verdicts[event.pk] = _verdict(log, event, evidence, proofs.get(event.seq, []))
    return [verdicts[e.pk] for e in events]


def _verdict(
    log: AuditLog, event: AuditEvent, evidence: _LogEvidence, proof: list[bytes]
) -> ProvenEvent:
    canonical = bytes(event.canonical)
    try:
        body = json.loads(canonical)
    except ValueError:
        body = {}
    result = ProvenEvent(
        event,
        body,
        FAILED,
        checkpoint=evidence.checkpoint,
        proof=proof,
        cosigned_by=evidence.cosigned_by,
    )
    if body.get("log") != log.name or body.get("seq") != event.seq:
        result.reason = f"the event's content does not say it is {log.name} #{event.seq}"
    elif evidence.error:
        result.reason = evidence.error
    elif evidence.parsed is None or event.seq >= evidence.parsed.size:
        result.status, result.reason = PENDING, "not yet covered by a signed checkpoint"
    else:
        try:
            verify_inclusion(
                leaf_hash(canonical),
                event.seq,
                evidence.parsed.size,
                proof,
                evidence.parsed.root_hash,
            )
        except VerificationError as exc:
            result.reason = f"inclusion proof fails: {exc}"
        else:
            result.status = VERIFIED
    return result


# -- a whole log ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogReport:
    log: str
    size: int
    root: bytes
    signed_by: list[str]
    attachments: int


def verify_log(
    log_name: str,
    *,
    trusted: Sequence[str] | None = None,
    previous: str | None = None,
    allow_simulated_tee: bool = False,
) -> LogReport:
    """Verify a whole log from the database; raise VerificationError naming the first failure.

    `trusted` are the vkeys to accept checkpoints from (default: the platform's own record of
    its log keys; pass a regulator's or witness's list to not depend on that record).
    `previous` is a signed checkpoint saved earlier: the log must extend it.
    """
    trusted = list(trusted) if trusted is not None else log_vkeys()
    head = AuditLog.objects.filter(name=log_name).first()
    if head is None:
        raise VerificationError(f"there is no log {log_name}")
    checkpoint = latest_checkpoint(log_name)
    if checkpoint is None:
        raise VerificationError(f"{log_name} has no signed checkpoint")
    parsed, signed_by = verify_checkpoint(
        note_with_cosignatures(checkpoint), trusted, origin=origin_of(log_name)
    )
    stored = tree.leaf_hashes(head, 0, parsed.size)
    compact = CompactRange()
    old = None
    if previous is not None:
        old, _ = verify_checkpoint(previous, trusted, origin=origin_of(log_name))
    previous_root = None
    referenced: set[str] = set()
    rules = DomainRules(allow_simulated_tee=allow_simulated_tee)
    rule_failure: VerificationError | None = None
    rows = (
        AuditEvent.objects.filter(log=head, seq__lt=parsed.size)
        .order_by("seq")
        .values_list("seq", "canonical")
    )
    for seq, canonical in rows.iterator(chunk_size=2000):
        position = compact.size
        canonical = bytes(canonical)
        if seq != position:
            raise VerificationError(
                f"event {position} is missing" if seq > position else f"event {seq} appears twice"
            )
        body = parse_canonical_event(canonical, f"event {position}")
        if body.get("log") != log_name or body.get("seq") != position:
            raise VerificationError(
                f"event {position} says it is {body.get('log')} #{body.get('seq')}: "
                "events were reordered or moved"
            )
        leaf = leaf_hash(canonical)
        if stored.get(position) != leaf:
            raise VerificationError(f"event {position} was changed after it was appended")
        compact.append(leaf)
        if old is not None and compact.size == old.size:
            previous_root = compact.root()
        found = body.get("attachments", [])
        if not isinstance(found, list) or not all(isinstance(sha, str) for sha in found):
            raise VerificationError(f"event {position} has malformed attachments")
        referenced.update(found)
        if rule_failure is None:
            try:
                rules.feed(position, body)
            except VerificationError as exc:
                rule_failure = exc
    if compact.size != parsed.size:
        raise VerificationError(f"event {compact.size} is missing")
    root = compact.root()
    if root != parsed.root_hash:
        raise VerificationError(
            f"the root of the {parsed.size} events does not match the signed checkpoint"
        )
    if old is not None and previous_root != old.root_hash:
        raise VerificationError(
            f"the log does not extend the previous checkpoint at size {old.size}"
        )
    attachments = _check_attachments(referenced)
    if rule_failure is not None:
        raise rule_failure
    rules.finish()
    return LogReport(log_name, parsed.size, root, signed_by, attachments)


def _check_attachments(wanted: set[str]) -> int:
    found = AuditAttachment.objects.filter(sha256__in=wanted)
    seen = set()
    for attachment in found.iterator(chunk_size=100):
        if hashlib.sha256(bytes(attachment.content)).hexdigest() != attachment.sha256:
            raise VerificationError(f"attachment {attachment.sha256} does not match its hash")
        seen.add(attachment.sha256)
    missing = sorted(wanted - seen)
    if missing:
        raise VerificationError(f"attachment {missing[0]} is missing")
    return len(seen)
