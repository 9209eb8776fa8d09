"""Released results at rest: each encrypted under its own data key, sealed to the results key
of every receiver organisation's own key service, with a salted commitment the audit log holds;
and a synthetic extract's files, encrypted beside it outside the database.

Only a receiver's key service opens a result's data key (`result_data_key`), for a reader it
logs; with it come the result, the salt that opens its commitment (`result_opening`, for
`verify.pyz --result`) and its files. The platform keeps no key that opens a stored result."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.contrib.auth.models import User

from cleanroom.audit.verifier.rules import RESULT_OPENING, result_commitment
from cleanroom.crypto.sealing import seal_for_receiver
from jobs.models import Job, Result, ResultFile, ResultKey
from keyservice.service import RESULTS
from parties.keys import KeyServiceAccess, owner_key_service
from parties.models import Organization


@dataclass(frozen=True)
class StoredResult:
    result: Result
    data_key: bytes  # for the files released with it
    salt: bytes  # of the commitments to it and its files
    receivers: list[Organization]


def _result_aad(job_id: int, part: str = "") -> bytes:
    return f"cleanroom-result/v1:job:{job_id}{part}".encode()


def _seal(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def _key_service(organization: Organization):
    return owner_key_service(organization, KeyServiceAccess.from_settings(settings))


def receiving_keys(job: Job) -> dict[Organization, bytes]:
    """Each receiver's results key, from its own key service: asked before the release's
    transaction, so no lock waits on the network."""
    return {org: _key_service(org).receiving_key(RESULTS) for org in job.query.receivers.all()}


def store_result(
    job: Job, plaintext: bytes, receivers: dict[Organization, bytes], **fields: Any
) -> StoredResult:
    """Encrypt a result under a fresh data key sealed to each receiver's results key, with a
    salted commitment to it for the log: the salt is stored only encrypted under the same key,
    so the commitment reveals nothing to whoever reads the log without the result."""
    data_key = AESGCM.generate_key(bit_length=256)
    salt = os.urandom(32)
    result = Result.objects.create(
        job=job,
        ciphertext=_seal(data_key, plaintext, _result_aad(job.pk)),
        commitment=result_commitment(salt, plaintext),
        sealed_salt=_seal(data_key, salt, _result_aad(job.pk, ":salt")),
        mechanism=job.mechanism,
        simulated_tee=(job.attestation or {}).get("kind") == "simulated",
        **fields,
    )
    for org, public_key in receivers.items():
        ResultKey.objects.create(
            result=result,
            organization=org,
            wrapped_key=seal_for_receiver(public_key, data_key, context=_key_context(job.pk, org)),
        )
    return StoredResult(result, data_key, salt, list(receivers))


def _key_context(job_id: int, organization: Organization) -> bytes:
    return f"cleanroom-result-key/v1\njob:{job_id}\norganization:{organization.slug}\n".encode()


def result_data_key(result: Result, organization: Organization, reader: User) -> bytes:
    """A result's data key, opened by the receiver organisation's key service for `reader`
    (its log names them)."""
    sealed = bytes(result.keys.get(organization=organization).wrapped_key)
    return _key_service(organization).open_received(
        RESULTS,
        sealed,
        context=_key_context(result.job_id, organization),
        reader=f"{reader.username}@{organization.slug}",
    )


def _open(data_key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(data_key).decrypt(blob[:12], blob[12:], aad)


def read_result(result: Result, organization: Organization, reader: User) -> dict[str, Any]:
    """Decrypt a result for a receiver organisation's member (the caller checked membership)."""
    data_key = result_data_key(result, organization, reader)
    return json.loads(_open(data_key, bytes(result.ciphertext), _result_aad(result.job_id)))


def result_salt(result: Result, data_key: bytes) -> bytes:
    return _open(data_key, bytes(result.sealed_salt), _result_aad(result.job_id, ":salt"))


def result_opening(result: Result, organization: Organization, reader: User) -> dict[str, Any]:
    """What a receiver gives a regulator to check its result against the log's commitment
    (`verify.pyz --result`): the exact bytes released, and the salt. Files travel separately."""
    return _opening(result, result_data_key(result, organization, reader))


def read_result_with_opening(
    result: Result, organization: Organization, reader: User
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result and its opening from one call to the receiver's key service (a request that
    shows both asks, and is logged, once)."""
    data_key = result_data_key(result, organization, reader)
    plaintext = _open(data_key, bytes(result.ciphertext), _result_aad(result.job_id))
    return json.loads(plaintext), _opening(result, data_key, plaintext)


def _opening(result: Result, data_key: bytes, plaintext: bytes | None = None) -> dict[str, Any]:
    if plaintext is None:
        plaintext = _open(data_key, bytes(result.ciphertext), _result_aad(result.job_id))
    return {
        "format": RESULT_OPENING,
        "job": f"job:{result.job_id}",
        "commitment": result.commitment,
        "salt": result_salt(result, data_key).hex(),
        "result": base64.b64encode(plaintext).decode(),
    }


def root() -> Path:
    return Path(settings.STORAGE_ROOT) / "results"


def _context(job_id: int, name: str) -> bytes:
    return f"cleanroom-result-file/v1:job:{job_id}:{name}".encode()


def store_file(stored: StoredResult, name: str, content: bytes) -> ResultFile:
    """Encrypt one released file to disk and record it, with its salted commitment; call
    inside the release transaction."""
    result, data_key = stored.result, stored.data_key
    relative = f"job-{result.job_id}/{name}.enc"
    path = root() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nonce = os.urandom(12)
    path.write_bytes(
        nonce + AESGCM(data_key).encrypt(nonce, content, _context(result.job_id, name))
    )
    return ResultFile.objects.create(
        result=result,
        name=name,
        commitment=result_commitment(stored.salt, content, name),
        size=len(content),
        storage_path=relative,
    )


def read_file_for(result_file: ResultFile, organization: Organization, reader: User) -> bytes:
    """Decrypt a released file for a receiver's member (the caller checked membership)."""
    return read_file(result_file, result_data_key(result_file.result, organization, reader))


def read_file(result_file: ResultFile, data_key: bytes) -> bytes:
    """The plaintext of a released file, checked against the commitment the audit log holds."""
    blob = (root() / result_file.storage_path).read_bytes()
    content = AESGCM(data_key).decrypt(
        blob[:12], blob[12:], _context(result_file.result.job_id, result_file.name)
    )
    salt = result_salt(result_file.result, data_key)
    if result_commitment(salt, content, result_file.name) != result_file.commitment:
        raise ValueError(f"{result_file.name} does not match its released commitment")
    return content
