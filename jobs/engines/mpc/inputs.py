"""The MPC input step, at a worker site in the dataset's jurisdiction: the only place its rows
are read.

The owner's step asks the key service for its own dataset's data key (residency decides again
there), decrypts the file, applies the policy's contribution bound and clamping and
pre-aggregates into the public group domain with the enclave's own code
(`dataplane.privacy.release.input_vectors`), secret-shares the vector with Shamir sharing
(`sharing.split`), and seals each compute party's shares to that party's X25519 key, taken
from the party's certificate once it verified against the deployment's MPC CA (never from a
key file: this site holds no party's key, certificates.py). Each share
transfer is decided and audited by the residency function (`receive_shares`) before it is
written. The exact vector exists only in this process's memory; rows never leave the site.

Also here, what every step of a job shares: the query's context (parsed query, catalog, bounds,
the MPC calibration, the layout of the shared vector), rebuilt from the approved canonical
form's terms only, and the sealed share files.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cleanroom.crypto.envelope import decrypt_stream
from dataplane.mpc import sharing
from dataplane.privacy.calibration import Measurement
from dataplane.privacy.release import ReleaseError, input_vectors
from dataplane.privacy.terms import TermsError, approved_measurements, read_terms
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import ColumnInfo, ParsedQuery, QueryError
from jobs.engines.base import (
    EngineError,
    Recorder,
    canonical_of,
    compute_steps,
    dataset_of,
    party_of,
    site_of,
)
from jobs.engines.mpc import certificates
from jobs.engines.mpc.config import MpcConfig
from jobs.models import Approval, Job, JobStep
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused, SiteKeyRequest
from parties.keys import owner_key_service
from parties.models import DatasetVersion, Site
from parties.storage import jurisdiction_root, stored_file


@dataclass(frozen=True)
class QueryContext:
    """What every step of a job derives from the approved query, the same way at each site."""

    parsed: ParsedQuery
    columns: dict[tuple[str, str], ColumnInfo]
    units: dict[str, str]
    rows_per_unit: int
    min_group_size: int
    measurements: dict[str, Measurement]

    @property
    def layout(self) -> list[str]:
        """The measurements in the order their vectors are concatenated for sharing."""
        return list(self.measurements)

    @property
    def groups(self) -> int:
        return math.prod(
            len(dict.fromkeys(self.columns[(d.column.dataset, d.column.column)].domain))
            for d in self.parsed.dimensions
        )


def query_context(job: Job) -> QueryContext:
    """The context from the approved canonical form's terms alone (dataplane.privacy.terms): the
    step's claim checked its digest and every owner's signature over it (`check_runnable`), so
    nothing the platform's catalog or a host says sets the bounds, the unit or the noise."""
    canonical = canonical_of(job.query)
    try:
        approved = read_terms(canonical)
        parsed = parse_query(canonical["sql"], approved.datasets)
        released = approved_measurements(canonical, parsed, approved)
    except (TermsError, QueryError) as exc:
        raise EngineError(f"The approved terms do not hold: {exc}") from None
    return QueryContext(
        parsed=parsed,
        columns=approved.columns,
        units=approved.units,
        rows_per_unit=approved.rows_per_unit,
        min_group_size=approved.min_group_size,
        measurements=released,
    )


# Sealed share files ---------------------------------------------------------------------------


def write_share(job_id: int, site: Site, filename: str, blob: bytes) -> dict[str, str]:
    """Store a sealed share for `site`, in its jurisdiction's storage root; returns the
    reference a step keeps in its output."""
    relative = f"mpc/job-{job_id}/{filename}"
    path = jurisdiction_root(site.jurisdiction.code) / relative
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(blob)
    return {"site": site.name, "file": relative, "sha256": hashlib.sha256(blob).hexdigest()}


def read_share(reference: dict[str, str]) -> bytes:
    site = Site.objects.select_related("jurisdiction").get(name=reference["site"])
    path = jurisdiction_root(site.jurisdiction.code) / reference["file"]
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        raise EngineError(f"A sealed share for {site.name} is missing.") from None
    if hashlib.sha256(blob).hexdigest() != reference["sha256"]:
        raise EngineError(f"A sealed share for {site.name} does not match its digest.")
    return blob


def input_context(job_id: int, dataset_id: int, party: int) -> bytes:
    """What a sealed input share is bound to: it opens only for this job, dataset and party."""
    return f"cleanroom-mpc-input/v1\njob:{job_id}\ndataset:{dataset_id}\nparty:{party}\n".encode()


def _decrypt(
    version: DatasetVersion, step: JobStep, config: MpcConfig, recorder: Recorder
) -> pl.LazyFrame:
    """The owner's key service gives its own worker site the data key, deciding residency
    itself (a worker site where the rows may be read in plaintext, never another kind), for
    the query it approved (whose canonical form names the room, so a participation it
    suspended is refused there too)."""
    name = version.dataset.qualified_name
    query = step.job.query
    approval = Approval.objects.get(
        query=query, organization=version.dataset.organization, decision=Approval.Decision.APPROVE
    )
    request = SiteKeyRequest(
        job=step.job_id,
        query=query.pk,
        dataset=version.dataset_id,
        canonical=canonical_of(query),
        approval=approval.evidence,
        site=site_of(step).name,
        kek_id=version.kek_id,
        wrapped_key=bytes(version.wrapped_data_key),
        key_context=version.key_context,
    )
    try:
        data_key, reason = owner_key_service(
            version.dataset.organization, config.key_services
        ).site_key(request)
    except (Refused, KeyServiceUnavailable) as exc:
        raise EngineError(f"Key service refuses {name}: {exc}") from None
    recorder.key_released(
        step.job_id, dataset=version.dataset_id, site=site_of(step).name, reason=reason
    )
    plain = io.BytesIO()
    with Path(stored_file(version)).open("rb") as source:
        decrypt_stream(source, plain, data_key)
    plain.seek(0)
    return pl.read_parquet(plain).lazy()


def run_input(step: JobStep, config: MpcConfig, recorder: Recorder) -> dict[str, Any]:
    """Pre-aggregate, share and seal the step's dataset; returns the step's output reference:
    per party, the sealed share file and its SHA-256."""
    job = step.job
    context = query_context(job)
    dataset = dataset_of(step)
    name = dataset.qualified_name
    item = next(i for i in canonical_of(job.query)["datasets"] if i["name"] == name)
    version = DatasetVersion.objects.select_related(
        "dataset__jurisdiction", "dataset__organization"
    ).get(dataset=dataset, number=item["version"])
    frame = _decrypt(version, step, config, recorder)
    try:
        vectors = input_vectors(
            {name: frame},
            context.parsed,
            context.columns,
            context.units,
            rows_per_unit=context.rows_per_unit,
        )
    except ReleaseError as exc:
        raise EngineError(f"{name} cannot be pre-aggregated: {exc}") from None
    del frame
    flat = [value for measure in context.layout for value in vectors[measure]]
    del vectors
    compute = compute_steps(job.pk)
    sites = {party_of(party): site_of(party) for party in compute}
    try:
        shares = sharing.split(flat, len(sites))
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    del flat
    # Every transfer is decided before any share is written: one refusal sends none.
    for party in compute:
        if not recorder.shares_may_move(step, party):
            raise EngineError(f"Residency refuses shares of {name} at {site_of(party).name}.")
    # Each party's key only from its certificate, verified against this site's MPC CA; every
    # certificate is checked before any share is written: one refusal sends none.
    keys = {
        index: certificates.party_public_key(
            config.credentials, site.name, certificates=config.certificates
        )
        for index, site in sites.items()
    }
    sent = {}
    for index, site in sites.items():
        blob = sharing.seal_for_party(
            shares[index], keys[index], input_context(job.pk, dataset.pk, index)
        )
        sent[str(index)] = write_share(
            job.pk, site, f"input-{dataset.pk}-party{index}.sealed", blob
        )
    return {"length": len(shares[0]), "shares": sent}
