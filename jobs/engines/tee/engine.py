"""The TEE engine, host side: where an enclave may run a query, and running it from its work
order (jobs/engines/orders.py, no database): start the enclave process, have it attested,
release the keys to it, and collect the noised table (or the synthetic extract) it returns."""

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

from cleanroom.attestation.simulated import SimulatedEnclave
from cleanroom.attestation.verify import AttestationError
from cleanroom.residency import StepKind, decide
from dataplane.enclave import EXTRACT_DIRECTORY
from dataplane.mechanisms import Mechanism, Stage
from dataplane.sql.plan import ParsedQuery
from jobs.engines.base import (
    EngineError,
    Planned,
    PlannedStep,
    Progress,
    Recorder,
    SiteEngine,
    active_sites,
    allowed_everywhere,
    canonical_of,
    dataset_orders,
    dies_with_its_host,
    job_site_of,
    minimal_environment,
    transfer_rules,
)
from jobs.engines.orders import WorkOrder
from jobs.engines.tee import trust
from jobs.engines.tee.key_release import release_keys
from jobs.models import Job, JobStep, Query, RoomDataset
from parties.models import Site
from parties.storage import jurisdiction_root


def _job_message(order: WorkOrder, config: trust.TeeConfig) -> dict[str, Any]:
    message = {
        "job": order.job,
        # The approved canonical form itself: the enclave hashes it into the digest it is
        # attested with and takes the SQL, ε, δ, extract terms and every term that sets the
        # noise from it, so a host that changes any of them gets no keys.
        "query": order.canonical,
        # Each dataset's encrypted file, under this site's root for its jurisdiction.
        "files": {
            d.name: str(jurisdiction_root(d.jurisdiction) / d.storage_path) for d in order.datasets
        },
    }
    if order.synthetic:
        message["time_limit"] = config.synthesis_time_limit
    return message


def work_order(job: Job, config: trust.TeeConfig) -> WorkOrder:
    """The work order of a claimed attempt: what its site needs to run it, including where each
    owner's key service is, as this deployment configures them."""
    query = job.query
    canonical = canonical_of(query)
    return WorkOrder(
        job=job.pk,
        attempt=job.attempt,
        mechanism=job.mechanism,
        query=query.pk,
        digest=query.digest,
        site=job_site_of(job).name,
        canonical=canonical,
        synthetic=query.output_kind == Query.OutputKind.SYNTHETIC,
        datasets=tuple(dataset_orders(query, config.key_services)),
    )


def enclave_site(contributions: list[RoomDataset]) -> Site | None:
    """The TEE site that may process rows of every dataset, its home jurisdiction's first."""
    home = contributions[0].dataset.jurisdiction.code
    rules = transfer_rules(contributions)
    candidates = sorted(
        active_sites(Site.Kind.TEE), key=lambda s: (s.jurisdiction.code != home, s.name)
    )
    for site in candidates:
        if allowed_everywhere(StepKind.PROCESS_ROWS, site, contributions, rules):
            return site
    return None


NO_ENCLAVE_SITE = "no TEE site may process rows of every dataset under their jurisdictions' rules"


class TeeEngine(SiteEngine):
    """Runs a job as one step at one site: an attested enclave (simulated on this machine
    unless a Nitro document comes from real hardware; the verifier labels which)."""

    name = Mechanism.TEE

    in_steps = False
    Config = trust.TeeConfig

    def __init__(self, config: trust.TeeConfig, recorder: Recorder):
        self.config = config
        self.recorder = recorder

    @classmethod
    def refusal(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> str | None:
        refusing = [
            c.dataset.qualified_name
            for c in contributions
            if Mechanism.TEE not in c.policy.allowed_mechanisms
        ]
        if refusing:
            return f"the policy of {', '.join(refusing)} does not allow the TEE"
        if enclave_site(contributions) is None:
            return NO_ENCLAVE_SITE
        return None

    @classmethod
    def place(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> Planned:
        site = enclave_site(contributions)
        if site is None:
            return Planned(problems=[NO_ENCLAVE_SITE])
        step = PlannedStep.at(
            "enclave",
            Stage.ENCLAVE,
            site,
            [
                decide(StepKind.PROCESS_ROWS, data=rules, site=site.place())
                for rules in transfer_rules(contributions).values()
            ],
            reads=tuple(c.dataset.qualified_name for c in contributions),
        )
        return Planned(steps=[step])

    @classmethod
    def create_steps(
        cls, job: Job, planned: list[PlannedStep], config: trust.TeeConfig
    ) -> list[JobStep]:
        return []

    @classmethod
    def work_order(cls, job: Job, config: trust.TeeConfig) -> WorkOrder:
        return work_order(job, config)

    @classmethod
    def noise_statement(cls, measurements: dict[str, Any], groups: int) -> dict[str, Any]:
        return {}

    def measurements(self) -> dict[int, bytes]:
        return trust.enclave_measurements(self.config)

    def release_keys(self, order: WorkOrder, document: bytes) -> dict[str, str]:
        return release_keys(order, document, config=self.config, recorder=self.recorder)

    def _simulated_nsm(self) -> SimulatedEnclave:
        """This machine has no enclave hardware: a simulated security module measures the
        enclave code and signs its document with the deployment's simulated root, which the
        verifier marks `simulated` and production settings refuse to trust."""
        try:
            return trust.simulated_enclave(self.config)
        except AttestationError as exc:
            raise EngineError(f"No enclave hardware here, and {exc}.") from None

    def run(self, order: WorkOrder, progress: Progress) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="enclave-") as home:
            enclave = subprocess.Popen(
                [sys.executable, "-m", "dataplane.enclave"],
                cwd=home,
                env=minimal_environment(home, self.config.code_root),
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=dies_with_its_host(),  # two system calls: see there
            )
            try:
                return self._converse(order, enclave, progress, Path(home))
            finally:
                if enclave.poll() is None:
                    enclave.kill()
                enclave.wait(timeout=self.config.enclave_timeout)
                for stream in filter(None, (enclave.stdin, enclave.stdout, enclave.stderr)):
                    # A dead enclave leaves unsent bytes behind; they must not mask the error.
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()

    def _converse(
        self, order: WorkOrder, enclave: subprocess.Popen[str], progress: Progress, home: Path
    ) -> dict[str, Any]:
        # `run` starts the enclave with all three pipes.
        assert enclave.stdin and enclave.stdout and enclave.stderr
        stdin, stdout, stderr = enclave.stdin, enclave.stdout, enclave.stderr

        def stopped() -> EngineError:
            enclave.wait(timeout=self.config.enclave_timeout)
            return EngineError(f"The enclave stopped: {stderr.read()[-2000:]}")

        def send(message: dict[str, Any]) -> None:
            try:
                stdin.write(json.dumps(message) + "\n")
                stdin.flush()
            except BrokenPipeError:
                raise stopped() from None

        def receive() -> dict[str, Any]:
            line = stdout.readline()
            if not line:
                raise stopped()
            return json.loads(line)

        def report(percent: int, message: str) -> None:
            # Every report is a point where a cancellation stops the job, the noise's included.
            if not progress(percent, message):
                raise EngineError("Cancelled while running.")

        send(_job_message(order, self.config))
        request = receive()["attest"]
        document = self._simulated_nsm().attest(
            pcrs=self.measurements(),
            public_key=base64.b64decode(request["public_key"]),
            user_data=base64.b64decode(request["user_data"]),
            nonce=os.urandom(16),
        )
        report(25, "Enclave attested")
        try:
            keys = self.release_keys(order, document)
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
