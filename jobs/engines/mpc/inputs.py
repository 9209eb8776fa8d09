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
form's terms only. Every step runs from its order (jobs/engines/orders.py), with no database.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from cleanroom.crypto.envelope import decrypt_stream
from dataplane.mpc import sharing
from dataplane.privacy.calibration import Measurement
from dataplane.privacy.release import ReleaseError, input_vectors
from dataplane.privacy.terms import TermsError, approved_measurements, read_terms
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import ColumnInfo, ParsedQuery, QueryError
from jobs.engines.base import EngineError, Recorder
from jobs.engines.mpc import certificates, inbox
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.mpc.inbox import input_context
from jobs.engines.orders import DatasetOrder, StepOrder
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused, SiteKeyRequest
from parties.keys import ordered_key_service
from parties.storage import jurisdiction_root


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


def query_context(canonical: dict[str, Any]) -> QueryContext:
    """The context from the approved canonical form's terms alone (dataplane.privacy.terms): the
    step's claim checked its digest and every owner's signature over it (`check_runnable`), so
    nothing the platform's catalog or a host says sets the bounds, the unit or the noise."""
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


def _decrypt(
    order: StepOrder, dataset: DatasetOrder, config: MpcConfig, recorder: Recorder
) -> pl.LazyFrame:
    """The owner's key service gives its own worker site the data key, deciding residency
    itself (a worker site where the rows may be read in plaintext, never another kind), for
    the query it approved (whose canonical form names the room, so a participation it
    suspended is refused there too)."""
    request = SiteKeyRequest(
        job=order.job,
        query=order.query,
        dataset=dataset.dataset,
        canonical=order.canonical,
        approval=dataset.approval,
        site=order.site,
        kek_id=dataset.kek_id,
        wrapped_key=dataset.wrapped_key,
        key_context=dataset.key_context,
    )
    try:
        data_key, reason = ordered_key_service(
            dataset.owner, dataset.key_service, config.key_services
        ).site_key(request)
    except (Refused, KeyServiceUnavailable) as exc:
        raise EngineError(f"Key service refuses {dataset.name}: {exc}") from None
    recorder.key_released(order.job, dataset=dataset.dataset, site=order.site, reason=reason)
    plain = io.BytesIO()
    with (jurisdiction_root(dataset.jurisdiction) / dataset.storage_path).open("rb") as source:
        decrypt_stream(source, plain, data_key)
    plain.seek(0)
    return pl.read_parquet(plain).lazy()


def run_input(order: StepOrder, config: MpcConfig, recorder: Recorder) -> dict[str, Any]:
    """Pre-aggregate, share and seal the step's dataset, and send each party its shares;
    returns the step's output: per party, the site, length and SHA-256 of what it was sent."""
    dataset = order.dataset
    if dataset is None:
        raise EngineError(f"The step '{order.name}' reads no dataset.")
    context = query_context(order.canonical)
    frame = _decrypt(order, dataset, config, recorder)
    try:
        vectors = input_vectors(
            {dataset.name: frame},
            context.parsed,
            context.columns,
            context.units,
            rows_per_unit=context.rows_per_unit,
        )
    except ReleaseError as exc:
        raise EngineError(f"{dataset.name} cannot be pre-aggregated: {exc}") from None
    del frame
    flat = [value for measure in context.layout for value in vectors[measure]]
    del vectors
    try:
        shares = sharing.split(flat, len(order.parties))
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    del flat
    # Every transfer is decided before any share is sent: one refusal sends none.
    for party in order.parties:
        if not recorder.shares_may_move(order.step, party.index):
            raise EngineError(f"Residency refuses shares of {dataset.name} at {party.site}.")
    # Each party's key only from its certificate, verified against this site's MPC CA; every
    # certificate is checked before any share is sent: one refusal sends none.
    keys = {
        party.index: certificates.party_public_key(
            config.credentials, party.site, certificates=config.certificates
        )
        for party in order.parties
    }
    own = certificates.sender_tls_files(config.credentials, order.site)
    sent = {}
    for party in order.parties:
        blob = sharing.seal_for_party(
            shares[party.index],
            keys[party.index],
            input_context(order.job, dataset.dataset, party.index),
        )
        delivery = inbox.Delivery(
            job=order.job,
            step=order.step,
            attempt=order.attempt,
            dataset=dataset.dataset,
            party=party.index,
            length=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        address = inbox.address_of(
            party.site, party.site_id, config.inbox_addresses, config.port_base
        )
        inbox.send(address, party.site, own, delivery, blob)
        sent[str(party.index)] = {
            "site": party.site,
            "sha256": delivery.sha256,
            "length": len(blob),
        }
    return {"length": len(shares[0]), "shares": sent}
