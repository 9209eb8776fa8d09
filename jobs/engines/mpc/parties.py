"""Compute parties, host side: start a party process for a job and collect its output shares.

Each party runs `python -m dataplane.mpc.party` (dataplane/mpc/party.py) in a temporary
folder holding only its own TLS key and certificate and the deployment's MPC CA, with a minimal
environment (no database URL, no other secrets), and gets its job document on stdin: its own
input shares, never another party's. A party that does not finish within the timeout is killed;
that, a non-zero exit or unreadable output raise EngineError with the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplane.mpc import sharing
from jobs.engines.base import EngineError, dies_with_its_host, minimal_environment
from jobs.engines.mpc.certificates import party_tls_files
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.mpc.inbox import PORT_SPAN

PORTS_PER_JOB = 8  # parties per job at most


@dataclass(frozen=True)
class PartySpec:
    """One party's part of a job; cell order in every vector is measure-major (k * G + g)."""

    job: int
    index: int
    sites: Sequence[str]  # every party's site, by index
    addresses: Sequence[tuple[str, int]]  # every party's (host, port), by index
    inputs: Sequence[Sequence[int]]  # this party's share vector of each owner
    layout: Mapping[str, Any]  # {"groups": G, "measures": [name, ...]}
    noise: Sequence[Mapping[str, Any]]  # [{"measure": name, "scale": float}, ...], layout order

    @property
    def site(self) -> str:
        return self.sites[self.index]


@dataclass(frozen=True)
class PartyOutput:
    output: list[int]  # this party's Shamir share of each noisy cell
    bytes_sent: int
    bytes_received: int
    seconds: dict[str, float] = field(default_factory=dict)  # "mpc", "noise"
    peak_memory_bytes: int = 0  # the party process's peak resident memory


def party_addresses(job_id: int, sites: list[str], config: MpcConfig) -> list[tuple[str, int]]:
    """Where each party of a job listens: its site's configured host, and a port per job and
    party index, so concurrent jobs do not collide."""
    if len(sites) > PORTS_PER_JOB:
        raise EngineError(f"At most {PORTS_PER_JOB} MPC parties per job.")
    return [
        (
            config.party_hosts.get(site, "127.0.0.1"),
            config.port_base + (job_id * PORTS_PER_JOB + index) % PORT_SPAN,
        )
        for index, site in enumerate(sites)
    ]


def _check(spec: PartySpec) -> None:
    parties = len(spec.sites)
    if parties < sharing.MIN_PARTIES:
        raise EngineError(
            f"MPC needs at least {sharing.MIN_PARTIES} compute parties, not {parties}: with"
            f" {parties}, Shamir's threshold is {sharing.threshold(parties)} and a share is the"
            " secret itself."
        )
    if len(set(spec.sites)) != parties:
        raise EngineError("Each MPC compute party must be at a site of its own.")
    if len(spec.addresses) != parties or not 0 <= spec.index < parties:
        raise EngineError("The MPC parties' sites, addresses and index do not agree.")


@dataclass
class RunningParty:
    spec: PartySpec
    process: subprocess.Popen
    folder: tempfile.TemporaryDirectory
    started: float

    def wait(self, timeout: float) -> PartyOutput:
        """The party's output, or EngineError once it fails or `timeout` seconds after it
        started."""
        name = f"MPC party {self.spec.index} ({self.spec.site})"
        try:
            remaining = max(0.0, self.started + timeout - time.monotonic())
            stdout, stderr = self.process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
                raise EngineError(f"{name} did not finish within {timeout:g} s.") from None
            stdout, stderr = self.process.communicate()  # it ended, but after the deadline
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
            self.folder.cleanup()
        if self.process.returncode != 0:
            reason = stderr.strip().splitlines()[-1:] or [f"exit status {self.process.returncode}"]
            raise EngineError(f"{name} failed: {reason[0]}")
        try:
            result = json.loads(stdout.strip().splitlines()[-1])
            return PartyOutput(
                output=[int(v) for v in result["output"]],
                bytes_sent=int(result["bytes_sent"]),
                bytes_received=int(result["bytes_received"]),
                seconds={k: float(v) for k, v in result["seconds"].items()},
                peak_memory_bytes=int(result.get("peak_memory_bytes", 0)),
            )
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError(f"{name} printed no readable output.") from None


def start_party(
    spec: PartySpec,
    config: MpcConfig,
    *,
    launcher: Sequence[str] = (),
    time_limit: float | None = None,
) -> RunningParty:
    """Start the party process and hand it its job document; `wait` collects the result.

    `launcher` prefixes the command, to place the process: `ip netns exec <namespace>`, a
    sandbox or a container runner. The process ends itself a little after `time_limit`
    seconds (default: the configured party timeout), should nobody wait for it."""
    _check(spec)
    tls = party_tls_files(config.credentials, spec.site)
    folder = tempfile.TemporaryDirectory(prefix=f"mpc-party-{spec.job}-{spec.index}-")
    mpyc_files = Path(folder.name) / ".config"
    mpyc_files.mkdir(mode=0o700)
    # The file names MPyC's --ssl reads, relative to the working directory.
    shutil.copyfile(tls.ca, mpyc_files / "mpyc_ca.crt")
    shutil.copyfile(tls.certificate, mpyc_files / f"party_{spec.index}.crt")
    shutil.copyfile(tls.key, mpyc_files / f"party_{spec.index}.key")
    document = {
        "job": spec.job,
        "index": spec.index,
        "parties": [
            {"host": host, "port": port, "site": site}
            for (host, port), site in zip(spec.addresses, spec.sites, strict=True)
        ],
        "inputs": [[int(v) for v in vector] for vector in spec.inputs],
        "layout": {"groups": spec.layout["groups"], "measures": list(spec.layout["measures"])},
        "noise": [{"measure": n["measure"], "scale": float(n["scale"])} for n in spec.noise],
        "time_limit": math.ceil(time_limit or config.party_timeout) + 10,
    }
    arguments = [
        f"-M{len(spec.sites)}",
        f"-I{spec.index}",
        *(arg for host, port in spec.addresses for arg in ("-P", f"{host}:{port}")),
        "--ssl",
        "--no-log",
    ]
    # The launcher comes from the deployment's code or configuration, never from a request.
    process = subprocess.Popen(  # noqa: S603
        [*launcher, sys.executable, "-m", "dataplane.mpc.party", *arguments],
        cwd=folder.name,
        env=minimal_environment(folder.name, config.code_root),
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=dies_with_its_host(),  # two system calls: see there
    )
    started = time.monotonic()
    assert process.stdin  # started with stdin=PIPE
    # A dead process leaves the pipe closed; `wait` reports why it died.
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(json.dumps(document) + "\n")
        process.stdin.flush()
    return RunningParty(spec, process, folder, started)


def run_party(spec: PartySpec, config: MpcConfig) -> PartyOutput:
    """Run one party of a job to its end; raises EngineError if it fails or times out."""
    return start_party(spec, config, time_limit=config.party_timeout).wait(config.party_timeout)
