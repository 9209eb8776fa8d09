"""What ties an attestation document to one job and one approved query version (the enclave
puts it in its document's user_data, and the verifier and the key release expect it there),
and what ties a data key sealed to that enclave to the job and dataset."""

from __future__ import annotations

import re

BINDING_PREFIX = b"cleanroom-job/v1\n"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def binding(job_id: int, query_digest: str) -> bytes:
    """The user_data that binds a document to one job and one approved query version."""
    if type(job_id) is not int or job_id < 0:
        raise ValueError("job_id must be a non-negative integer")
    if not _DIGEST.fullmatch(query_digest):
        raise ValueError("query_digest must be a lowercase SHA-256 hex digest")
    return BINDING_PREFIX + f"{job_id}\n{query_digest}\n".encode("ascii")


def key_context(job_id: int, dataset: str) -> bytes:
    """What a data key sealed to an enclave is bound to: it opens for this job and dataset only."""
    return f"cleanroom-key-release/v1\njob:{job_id}\n{dataset}\n".encode()
