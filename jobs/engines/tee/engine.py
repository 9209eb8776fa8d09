"""The TEE engine, host side: start the enclave process, have it attested, release the keys
to it, and collect the noised table it prints."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from dataplane.enclave import EXTRACT_DIRECTORY
from jobs.engines.base import EngineError, Progress, minimal_environment
from jobs.engines.tee import attestation, trust
from jobs.engines.tee.key_release import enclave_measurements, release_keys
from jobs.models import Job, Query
from parties.models import DatasetVersion
from parties.storage import stored_file


def _job_message(job: Job) -> dict[str, Any]:
    query = job.query
    files = {}
    for dataset_id, item in zip(query.dataset_ids, query.canonical["datasets"], strict=True):
        version = DatasetVersion.objects.select_related("dataset__jurisdiction").get(
            dataset_id=dataset_id, number=item["version"]
        )
        files[item["name"]] = str(stored_file(version))
    message = {
        "job": job.pk,
        # The approved canonical form itself: the enclave hashes it into the digest it is
        # attested with and takes the SQL, ε, δ, extract terms and every term that sets the
        # noise from it, so a host that changes any of them gets no keys.
        "query": query.canonical,
        "files": files,
    }
    if query.output_kind == Query.OutputKind.SYNTHETIC:
        message["time_limit"] = settings.SYNTHESIS_TIME_LIMIT
    return message


def _simulated_nsm() -> attestation.SimulatedEnclave:
    """This machine has no enclave hardware: a simulated security module measures the enclave
    code and signs its document with the deployment's simulated root, which the verifier marks
    `simulated` and production settings refuse to trust."""
    try:
        return trust.simulated_enclave()
    except attestation.AttestationError as exc:
        raise EngineError(f"No enclave hardware here, and {exc}.") from None


class TeeEngine:
    name = "tee"

    def run(self, job: Job, progress: Progress) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="enclave-") as home:
            enclave = subprocess.Popen(
                [sys.executable, "-m", "dataplane.enclave"],
                cwd=home,
                env=minimal_environment(home),
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                return self._converse(job, enclave, progress, Path(home))
            finally:
                if enclave.poll() is None:
                    enclave.kill()
                enclave.wait(timeout=settings.TEE_ENCLAVE_TIMEOUT)
                for stream in (enclave.stdin, enclave.stdout, enclave.stderr):
                    # A dead enclave leaves unsent bytes behind; they must not mask the error.
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()

    def _converse(
        self, job: Job, enclave: subprocess.Popen, progress: Progress, home: Path
    ) -> dict:
        def stopped() -> EngineError:
            enclave.wait(timeout=settings.TEE_ENCLAVE_TIMEOUT)
            return EngineError(f"The enclave stopped: {enclave.stderr.read()[-2000:]}")

        def send(message: dict) -> None:
            try:
                enclave.stdin.write(json.dumps(message) + "\n")
                enclave.stdin.flush()
            except BrokenPipeError:
                raise stopped() from None

        def receive() -> dict:
            line = enclave.stdout.readline()
            if not line:
                raise stopped()
            return json.loads(line)

        def report(percent: int, message: str) -> None:
            # Every report is a point where a cancellation stops the job, the noise's included.
            if not progress(percent, message):
                raise EngineError("Cancelled while running.")

        send(_job_message(job))
        request = receive()["attest"]
        document = _simulated_nsm().attest(
            pcrs=enclave_measurements(),
            public_key=base64.b64decode(request["public_key"]),
            user_data=base64.b64decode(request["user_data"]),
            nonce=os.urandom(16),
        )
        report(25, "Enclave attested")
        try:
            keys = release_keys(job, document)
        except EngineError as exc:
            send({"abort": str(exc)})
            raise
        send({"keys": keys})
        report(40, "Keys released to the enclave")
        while True:
            message = receive()
            if "progress" in message:
                report(*message["progress"])
            elif "result" in message:
                return message["result"]
            elif "extract" in message:
                return {"extract": message["extract"], "files": _extract_files(home, message)}


def _extract_files(home: Path, message: dict) -> dict[str, bytes]:
    """The files the enclave wrote, each checked against the digest it reported."""
    files = {}
    for name, sha256 in message["extract"]["files"].items():
        path = home / EXTRACT_DIRECTORY / name
        if Path(name).name != name or not path.is_file():
            raise EngineError(f"The enclave reported a file it did not write: {name!r}.")
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != sha256:
            raise EngineError(f"The extract file {name} does not match its digest.")
        files[name] = content
    return files
