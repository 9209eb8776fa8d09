"""The MPC input step, at a worker site in the dataset's jurisdiction: the only place its rows
are read.

The owner's step asks the key service for its own dataset's data key (residency decides again
there), decrypts the file, applies the policy's contribution bound and clamping and
pre-aggregates into the public group domain with the enclave's own code
(`dataplane.privacy.release.input_vectors`), secret-shares the vector with Shamir sharing
(`sharing.split`), and seals each compute party's shares to that party's X25519 key, taken
from the party's certificate once it verified against the deployment's MPC CA (never from a
key file: this site holds no party's key, certificates.py), and sends each party its sealed
shares over mutual TLS to that party's share inbox (inbox.py), after checking that the inbox's
certificate names the party's site: nothing is written into another site's storage. Each share
transfer is decided and audited by the residency function (`receive_shares`) before it is
sent. The exact vector exists only in this process's memory; rows never leave the site.

Also here, what every step of a job shares: the query's context (parsed query, catalog, bounds,
the MPC calibration, the layout of the shared vector), rebuilt from the approved canonical
form's terms only; and what a party's inbox asks of the job's placement before it stores a
delivery (`placement_refusal`).
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
from dataplane.mechanisms import Stage
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
from jobs.engines.mpc import certificates, inbox
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.mpc.inbox import input_context
from jobs.models import Approval, Job, JobStep
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused, SiteKeyRequest
from parties.keys import owner_key_service
from parties.models import DatasetVersion
from parties.storage import stored_file


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


# Shares over the network (inbox.py) ----------------------------------------------------------


def placement_refusal(delivery: inbox.Delivery, sender: str, own_site: str) -> str | None:
    """Why a party's inbox must refuse a delivery, from the job's steps as the platform placed
    them: only the running attempt of the job's input step for that dataset, from that step's
    site, for a party index the job places at this inbox's site."""
    step = (
        JobStep.objects.filter(pk=delivery.step, job_id=delivery.job, kind=Stage.INPUT)
        .select_related("site")
        .first()
    )
    if step is None:
        return f"job {delivery.job} has no input step {delivery.step}"
    if step.site is None or step.site.name != sender:
        return f"{sender} is not the site of input step {delivery.step} of job {delivery.job}"
    if step.dataset_id != delivery.dataset:
        return f"input step {delivery.step} does not read dataset {delivery.dataset}"
    if step.state != JobStep.State.RUNNING or step.attempt != delivery.attempt:
        return f"attempt {delivery.attempt} of input step {delivery.step} is not running"
    placed = JobStep.objects.filter(
        job_id=delivery.job, kind=Stage.COMPUTE, party=delivery.party, site__name=own_site
    )
    if not placed.exists():
        return f"job {delivery.job} places no party {delivery.party} at {own_site}"
    return None


def input_delivery(source: JobStep, party: int) -> inbox.Delivery:
    """The delivery of `source`'s shares for `party`, as its output records it."""
    reference = source.output["shares"][str(party)]
    return inbox.Delivery(
        job=source.job_id,
        step=source.pk,
        attempt=source.attempt,
        dataset=dataset_of(source).pk,
        party=party,
        length=int(reference["length"]),
        sha256=reference["sha256"],
    )


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
    # Every transfer is decided before any share is sent: one refusal sends none.
    for party in compute:
        if not recorder.shares_may_move(step, party):
            raise EngineError(f"Residency refuses shares of {name} at {site_of(party).name}.")
    # Each party's key only from its certificate, verified against this site's MPC CA; every
    # certificate is checked before any share is sent: one refusal sends none.
    keys = {
        index: certificates.party_public_key(
            config.credentials, site.name, certificates=config.certificates
        )
        for index, site in sites.items()
    }
    own = certificates.sender_tls_files(config.credentials, site_of(step).name)
    sent = {}
    for index, site in sites.items():
        blob = sharing.seal_for_party(
            shares[index], keys[index], input_context(job.pk, dataset.pk, index)
        )
        delivery = inbox.Delivery(
            job=job.pk,
            step=step.pk,
            attempt=step.attempt,
            dataset=dataset.pk,
            party=index,
            length=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        address = inbox.address_of(site.name, site.pk, config.inbox_addresses, config.port_base)
        inbox.send(address, site.name, own, delivery, blob)
        sent[str(index)] = {"site": site.name, "sha256": delivery.sha256, "length": len(blob)}
    return {"length": len(shares[0]), "shares": sent}
