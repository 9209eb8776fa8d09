"""What an owner's key service adds to a TEE job: one attested release, decided by the key
service itself, against the plain unwrap-and-seal a host would do with the key in hand.

Per release, best of several: the plain work (unwrap the data key inside a SoftHSM2 token, seal
it to the enclave's key); the key service's whole decision in process (recompute the digest,
verify the approval signature, verify the attestation document, residency, the release log,
then the same unwrap and seal); and the same through a real key service process over its
signed HTTP API, as a TEE host asks it. Peak memory is the key service process's peak RSS.
Prints `name: value unit` lines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.conf import settings

from cleanroom.attestation.binding import binding, key_context
from cleanroom.attestation.simulated import SimulatedEnclave, SimulatedRoot
from cleanroom.audit.verifier.approvals import (
    MACHINE_KEY,
    PinnedCredential,
    approval_message,
    machine_key_id,
)
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.crypto.sealing import public_bytes, seal
from cleanroom.residency import Place, SiteKind, TransferRules
from keyservice import config
from keyservice.client import RemoteKeyService
from keyservice.config import Caller
from keyservice.release import Dataset, Pinned, ReleaseLog, ReleaseRequest, decide_release
from keyservice.token import Token, init_softhsm
from tests.benchmarks.support import report

RUNS = 30
EU = TransferRules(
    code="EU",
    raw_processing_in=frozenset({"EU"}),
    enclave_processing_in=frozenset({"EU"}),
    shares_may_go_to=frozenset({"EU"}),
    outputs_may_go_to=frozenset({"EU", "US"}),
)
SITE = Place(name="eu-tee", kind=SiteKind.TEE, jurisdiction="EU")
PCRS = {0: hashlib.sha384(b"enclave").digest(), 1: hashlib.sha384(b"runtime").digest()}


def _pinned_machine_key(approver) -> PinnedCredential:
    public = approver.public_key().public_bytes_raw()
    return PinnedCredential("org:1", MACHINE_KEY, machine_key_id(public), public)


def _machine_key_approval(approver, digest: str) -> dict:
    """The organisation's machine key approving query:1, as the platform relays it."""
    pinned = _pinned_machine_key(approver)
    signature = approver.sign(approval_message("query:1", digest, "org:1", "approve"))
    return {
        "kind": MACHINE_KEY,
        "credential_id": base64.b64encode(pinned.credential_id).decode(),
        "public_key": base64.b64encode(pinned.public_key).decode(),
        "signature": base64.b64encode(signature).decode(),
    }


def _requests(root: SimulatedRoot, approver: Ed25519PrivateKey, kek: str, token: Token, first: int):
    canonical = {
        "format": "cleanroom-query/v2",
        "room": "room:1",
        "datasets": [{"name": "org.ds", "version": 1}],
    }
    digest = hashlib.sha256(canonical_json(canonical)).hexdigest()
    context = {"dataset": "1", "version": "1", "content_sha256": "ab" * 32}
    wrapped = token.wrap(kek, os.urandom(32), context=context)
    enclave = SimulatedEnclave(root)
    requests = []
    for job in range(first, first + RUNS):
        key = X25519PrivateKey.generate()
        requests.append(
            ReleaseRequest(
                job=job,
                query=1,
                dataset=1,
                canonical=canonical,
                approval=_machine_key_approval(approver, digest),
                document=enclave.attest(
                    pcrs=PCRS,
                    public_key=public_bytes(key),
                    user_data=binding(job, digest),
                    nonce=os.urandom(16),
                ),
                site=SITE.name,
                kek_id=kek,
                wrapped_key=wrapped,
                key_context=context,
            )
        )
    return requests


def _best(work, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        work(item)
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-keyservice-") as folder:
        state = Path(folder) / "state"
        init_softhsm(state, "bench")
        token = Token(state, "bench")
        kek = token.create_key()
        root = SimulatedRoot.generate()
        approver = Ed25519PrivateKey.generate()
        pinned = Pinned(
            organization=1,
            approvers=(_pinned_machine_key(approver),),
            datasets={1: Dataset(id=1, name="org.ds", rules=EU)},
            sites={SITE.name: SITE},
            trusted_roots=(root.certificate,),
            allowed_measurements=({0: PCRS[0]},),
        )
        enclave_key = public_bytes(X25519PrivateKey.generate())

        def plain(request: ReleaseRequest) -> bytes:
            data_key = token.unwrap(kek, request.wrapped_key, context=request.key_context)
            return seal(enclave_key, data_key, context=key_context(request.job, "org.ds"))

        requests = _requests(root, approver, kek, token, first=1)
        plain_seconds = _best(plain, requests)
        log = ReleaseLog(Path(folder) / "releases.jsonl")
        decided_seconds = _best(
            lambda r: decide_release(r, pinned, keys=token, log=log, at=datetime.now(UTC)),
            requests,
        )

        caller = Ed25519PrivateKey.generate()
        (state / "config.json").write_text(
            json.dumps(
                config.config_json(
                    organization=1,
                    approvers=list(pinned.approvers),
                    jurisdictions=[EU],
                    sites=pinned.sites,
                    trusted_roots=[root.certificate],
                    allowed_measurements=[{0: PCRS[0]}],
                    callers={
                        "host": Caller(
                            key=caller.public_key().public_bytes_raw(),
                            may=frozenset({"keys", "wrap", "release"}),
                        )
                    },
                )
            )
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", str(state), "--label", "bench"],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(settings.BASE_DIR)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = process.stdout.readline().split()[1]
            remote = RemoteKeyService(f"http://127.0.0.1:{port}", "host", caller)
            remote.wrap_dataset_key(
                kek,
                os.urandom(32),
                context=requests[0].key_context,
                name="org.ds",
                jurisdiction="EU",
            )
            over_http = _best(remote.release, _requests(root, approver, kek, token, first=1000))
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
            )
        finally:
            process.kill()
            process.wait(timeout=10)
            process.stdout.close()
    report("keyservice.plain_unwrap_and_seal", plain_seconds * 1000, "ms", 3)
    report("keyservice.release_decided_in_process", decided_seconds * 1000, "ms", 3)
    report("keyservice.release_decided_ratio", decided_seconds / plain_seconds, "x plain")
    report("keyservice.release_over_http", over_http * 1000, "ms", 3)
    report("keyservice.release_over_http_ratio", over_http / plain_seconds, "x plain")
    report("keyservice.process_peak_rss", peak / 1024, "MiB")
