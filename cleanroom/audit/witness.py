"""Witnesses: member organisations that check each new checkpoint extends the last one they
cosigned, and cosign it, so the operator cannot show two parties two different histories.

Cosignatures follow C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature): timestamped
`cosignature/v1` note signatures with Ed25519, key type 0x04. A witness keeps its own memory
(the size and root of each checkpoint it cosigned, in its `Cosignature` rows) and pins the log
keys it trusts when it is enrolled; it takes neither from the platform's word at cosigning
time. Its key is an Ed25519 key in the key service.

Cosigning writes no audit event: a cosignature is not a change of the clean room's state, and
an event would grow the log the witness has just cosigned (each run would ask for the next).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from cleanroom.audit import tree
from cleanroom.audit.checkpoints import (
    current_log_key,
    latest_checkpoint,
    log_vkeys,
    origin_of,
    origin_prefix,
)
from cleanroom.audit.models import Cosignature, Witness
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import verify_consistency
from cleanroom.audit.verifier.notes import (
    COSIGNATURE_ALGORITHM,
    cosigned_message,
    key_id,
    split_note,
    verify_checkpoint,
)
from cleanroom.crypto.keys import key_service
from cleanroom.errors import DomainError


class WitnessError(DomainError):
    code = "witness_refused"


@dataclass(frozen=True)
class WitnessResult:
    cosignature: Cosignature
    previous_size: int | None  # the size the consistency proof started from
    proof_length: int
    new: bool


def witness_for(organization) -> Witness:
    """The organisation's witness, enrolled on first use with a fresh key and the current
    log keys pinned."""
    existing = Witness.objects.filter(organization=organization).first()
    if existing is not None:
        return existing
    current_log_key()  # so there is a key to pin
    name = f"{origin_prefix()}/witness/{organization.slug}"
    service = key_service()
    service_key_id = service.create_signing_key()
    public_key = service.public_key(service_key_id)
    try:
        with transaction.atomic():
            return Witness.objects.create(
                organization=organization,
                name=name,
                key_id=service_key_id,
                note_key_id=cosigner_key_id(name, public_key),
                public_key=public_key,
                trusted_log_keys="\n".join(log_vkeys()) + "\n",
            )
    except IntegrityError:
        return Witness.objects.get(organization=organization)


def trusted_keys(witness: Witness) -> list[str]:
    return [line for line in witness.trusted_log_keys.splitlines() if line.strip()]


def witness_checkpoint(*, organization, log_name: str) -> WitnessResult:
    """Fetch the latest checkpoint of `log_name` and a consistency proof from the size this
    organisation last cosigned; verify both; cosign. Raises WitnessError naming the failure."""
    witness = witness_for(organization)
    checkpoint = latest_checkpoint(log_name)
    if checkpoint is None:
        raise WitnessError(f"The log {log_name} has no signed checkpoint yet.")
    try:
        seen, _ = verify_checkpoint(
            checkpoint.note, trusted_keys(witness), origin=origin_of(log_name)
        )
    except VerificationError as exc:
        raise WitnessError(f"The checkpoint of {log_name} does not verify: {exc}.") from exc
    if seen.size != checkpoint.size or seen.root_hash != bytes(checkpoint.root_hash):
        raise WitnessError(f"The checkpoint of {log_name} does not match its signed note.")

    last = (
        Cosignature.objects.filter(witness=witness, checkpoint__log__name=log_name)
        .order_by("-size")
        .first()
    )
    proof: list[bytes] = []
    if last is not None:
        last_root = bytes(last.root_hash)
        if seen.size < last.size:
            raise WitnessError(
                f"The log {log_name} went back from size {last.size}, which this witness "
                f"cosigned, to {seen.size}."
            )
        if seen.size == last.size:
            if seen.root_hash != last_root:
                raise WitnessError(
                    f"The log {log_name} shows a different root at size {seen.size} than the "
                    "one this witness cosigned: two histories."
                )
            return WitnessResult(last, last.size, 0, new=False)
        try:
            proof = tree.consistency_proof(checkpoint.log, last.size, seen.size)
        except (tree.MissingNodes, ValueError) as exc:
            raise WitnessError(
                f"The log {log_name} at size {seen.size} does not extend the size {last.size} "
                f"this witness cosigned: there is no consistency proof ({exc})."
            ) from exc
        try:
            verify_consistency(last.size, seen.size, proof, last_root, seen.root_hash)
        except VerificationError as exc:
            raise WitnessError(
                f"The log {log_name} at size {seen.size} does not extend the size {last.size} "
                f"this witness cosigned: {exc}."
            ) from exc

    text, _ = split_note(checkpoint.note)
    try:
        with transaction.atomic():
            cosignature = Cosignature.objects.create(
                checkpoint=checkpoint,
                witness=witness,
                size=seen.size,
                root_hash=seen.root_hash,
                signature=cosignature_line(witness, text, int(time.time())),
            )
    except IntegrityError:
        cosignature = Cosignature.objects.get(checkpoint=checkpoint, witness=witness)
        return WitnessResult(cosignature, last.size if last else None, len(proof), new=False)
    return WitnessResult(cosignature, last.size if last else None, len(proof), new=True)


def cosigner_key_id(name: str, public_key: bytes) -> str:
    """A witness's key ID: C2SP tlog-cosignature's, with the cosignature/v1 type byte 0x04."""
    return key_id(name, bytes([COSIGNATURE_ALGORITHM]) + public_key).hex()


def cosignature_line(witness: Witness, checkpoint_text: str, timestamp: int) -> str:
    """The witness's cosignature/v1 note signature line on a checkpoint, made in the key
    service: ``— <name> base64(key ID || timestamp (u64, big-endian) || Ed25519 signature)``."""
    signature = key_service().sign(witness.key_id, cosigned_message(checkpoint_text, timestamp))
    raw = bytes.fromhex(witness.note_key_id) + timestamp.to_bytes(8, "big") + signature
    return f"\u2014 {witness.name} {base64.b64encode(raw).decode('ascii')}\n"


def witness_vkeys() -> list[str]:
    return [w.vkey for w in Witness.objects.order_by("created_at", "pk")]
