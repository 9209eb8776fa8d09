"""The MPC engine, host side: the steps of a job across sites.

An MPC job has one input step per dataset (`inputs.py`, at a worker site in the dataset's
jurisdiction), one compute step per MPC party (at an `mpc-party` site, at least three), and a
delivery. This module places them (`MpcEngine.place`: input sites in each dataset's
jurisdiction, compute parties one per jurisdiction first), creates their rows with the
delivery key, and does their work; the job lifecycle dispatches and claims them:

- `run_compute`: at a party's site, open the input shares sealed to this party (the owners'
  input steps sent them to its share inbox, inbox.py; it reads them from its own folder),
  start its MPyC party process (`parties.run_party`: a separate process with a minimal
  environment, TLS certificates from the deployment's MPC CA, a timeout) with the noise
  scales OpenDP calibrated, and seal the party's share of the *noisy* vector to the delivery
  key. No party opens an un-noised or a noisy value.
- `deliver`: once t + 1 output shares are stored, open and recombine them and post-process the
  noisy vectors into the released table, exactly as the enclave's (`noisy_table`).

Input shares travel sealed to their party (X25519) over mutual TLS to its share inbox; a
party's noisy output share travels sealed to the delivery key in the step's report to the
control plane, which relays it and cannot open it: no site reads or writes another site's
folder. The delivery key is made per job when the job is created, in the
token of the first receiver's own key service (`job<id>`, P-256): the parties seal their output
shares to its public half, only that key service opens them (for the step that delivers, once
the job is charged), and the job lifecycle has it destroyed in the token when the job ends.
`MpcEngine` puts these behind the step interface of jobs/engines/base.py.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import replace
from typing import Any

import opendp.prelude as dp
from cryptography.exceptions import InvalidTag

from cleanroom.residency import StepKind, decide
from dataplane.mechanisms import Mechanism, Stage
from dataplane.mpc import sharing
from dataplane.mpc.noise import deviation_bound
from dataplane.privacy.calibration import Measurement, inexact_draw
from dataplane.privacy.release import COUNT, ReleaseError, noisy_table
from dataplane.sql.plan import Output, ParsedQuery, Shape
from jobs.engines.base import (
    EngineError,
    Planned,
    PlannedStep,
    Recorder,
    StepEngine,
    active_sites,
    allowed_everywhere,
    canonical_of,
    compute_steps,
    dataset_of,
    dataset_orders,
    input_steps,
    party_of,
    site_of,
    transfer_rules,
)
from jobs.engines.mpc import certificates, inbox, inputs, parties
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.orders import DeliveryOrder, PartyOrder, SourceOrder, StepOrder
from jobs.models import Job, JobStep, RoomDataset
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused
from parties.keys import KeyServiceAccess, ordered_key_service, owner_key_service
from parties.models import Site

dp.enable_features("contrib")


def output_context(job_id: int, party: int) -> bytes:
    """What a party's sealed output share is bound to."""
    return f"cleanroom-mpc-output/v1\njob:{job_id}\nparty:{party}\n".encode()


# The delivery key -----------------------------------------------------------------------------


def delivery_purpose(job_id: int) -> str:
    """The delivery key's name in the receiver's key service."""
    return f"job{job_id}"


def new_delivery_key(job: Job, key_services: KeyServiceAccess) -> dict[str, str]:
    """The job's delivery key, made in the token of its first receiver's key service: the
    parties seal their noisy output shares to the public half, which is all the platform
    holds."""
    receiver = job.query.receivers.order_by("pk").first()
    if receiver is None:
        raise EngineError("The query names no receiver to deliver to.")
    public_key = owner_key_service(receiver, key_services).receiving_key(delivery_purpose(job.pk))
    return {"public_key": base64.b64encode(public_key).decode(), "receiver": receiver.slug}


def _output_share_opener(order: DeliveryOrder, config: MpcConfig):
    """How the delivery opens each output share: through the receiver's key service, which the
    delivery's order names; the control plane gives that order only to the site whose claim
    charged the job (`delivery_order`): whoever opens the noisy result has paid for it."""
    service = ordered_key_service(order.receiver, order.key_service, config.key_services)

    def open_share(blob: bytes, context: bytes) -> list[int]:
        try:
            opened = service.open_received(
                delivery_purpose(order.job),
                blob,
                context=context,
                reader=f"delivery of job:{order.job}",
            )
        except (Refused, KeyServiceUnavailable) as exc:
            raise EngineError(f"The receiver's key service refused: {exc}") from None
        return sharing.from_bytes(opened)

    return open_share


# Compute and delivery -------------------------------------------------------------------------


def _checked_noise(context: inputs.QueryContext) -> list[dict[str, Any]]:
    """The noise each party samples, per measurement, on the integer grid. OpenDP's privacy map
    of the discrete Laplace at that scale and the measurement's grid sensitivity must stay
    within its share of ε, or no party starts (nothing is drawn, the budget is refunded)."""
    noise = []
    for name in context.layout:
        measurement = context.measurements[name]
        refusal = inexact_draw(measurement)
        if refusal:
            raise EngineError(refusal)
        mechanism = dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T="i64")),
            dp.l1_distance(T="i64"),
            scale=measurement.grid_scale,
        )
        spent = mechanism.map(measurement.grid_sensitivity)
        if not spent <= measurement.epsilon:
            raise EngineError(
                f"{name}: OpenDP's privacy map gives ε = {spent} at scale "
                f"{measurement.grid_scale}, more than its share {measurement.epsilon}."
            )
        noise.append({"measure": name, "scale": measurement.grid_scale})
    return noise


def run_compute(order: StepOrder, config: MpcConfig) -> dict[str, Any]:
    """Run this party's MPyC process on its input shares; returns the step's output: its noisy
    output share sealed to the delivery, and what the party reports (traffic, timings)."""
    if order.party is None:
        raise EngineError(f"The step '{order.name}' is not a compute party.")
    party = order.party
    context = inputs.query_context(order.canonical)
    noise = _checked_noise(context)
    private_key = certificates.party_private_key(config.credentials, order.site)
    vectors = []
    for source in order.sources:
        delivery = inbox.Delivery(
            job=order.job,
            step=source.step,
            attempt=source.attempt,
            dataset=source.dataset,
            party=party,
            length=source.length,
            sha256=source.sha256,
        )
        # Only from this site's own inbox folder: what the inbox accepted from that step.
        blob = inbox.received(config.inbox_root, order.site, delivery)
        try:
            vectors.append(
                sharing.open_for_party(
                    blob, private_key, inputs.input_context(order.job, source.dataset, party)
                )
            )
        except (InvalidTag, ValueError) as exc:
            raise EngineError(
                f"The shares of input step {source.step} do not open here: {exc}"
            ) from None
    expected = context.groups * len(context.layout)
    if any(len(vector) != expected for vector in vectors):
        raise EngineError("An input share vector does not have the query's layout.")
    sites = [p.site for p in order.parties]
    spec = parties.PartySpec(
        job=order.job,
        index=party,
        sites=sites,
        addresses=parties.party_addresses(order.job, sites, config),
        inputs=vectors,
        layout={"groups": context.groups, "measures": context.layout},
        noise=noise,
    )
    party_output = parties.run_party(spec, config)
    blob = sharing.seal_for_receiver(
        party_output.output,
        base64.b64decode(order.delivery_key),
        output_context(order.job, party),
    )
    # The noisy output share travels with the step's report: sealed to the receiver's key
    # service, the platform relays it and cannot open it.
    return {
        "share": {
            "site": order.site,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "sealed": base64.b64encode(blob).decode(),
        },
        "bytes_sent": party_output.bytes_sent,
        "bytes_received": party_output.bytes_received,
        "seconds": party_output.seconds,
    }


def _output_share(step: JobStep) -> bytes:
    reference = step.output["share"]
    blob = base64.b64decode(reference["sealed"])
    if hashlib.sha256(blob).hexdigest() != reference["sha256"]:
        raise EngineError(f"The output share of {step.name} does not match its digest.")
    return blob


def deliver(order: DeliveryOrder, config: MpcConfig) -> dict[str, Any]:
    """Open and recombine the parties' noisy output shares (at least t + 1 of them) and build
    the released table; only differentially private values exist here."""
    context = inputs.query_context(order.canonical)
    open_share = _output_share_opener(order, config)
    shares = {
        party: open_share(blob, output_context(order.job, party))
        for party, blob in order.shares.items()
    }
    values = sharing.recombine(shares)
    groups = context.groups
    noisy: dict[str, list] = {}
    for position, name in enumerate(context.layout):
        vector = values[position * groups : (position + 1) * groups]
        shift = context.measurements[name].shift
        noisy[name] = [math.ldexp(v, -shift) for v in vector] if shift else vector
    if COUNT not in noisy:
        raise EngineError("No noisy count was computed, so no group can be suppressed.")
    try:
        table = noisy_table(
            context.parsed,
            context.columns,
            context.measurements,
            noisy,
            rows_per_unit=context.rows_per_unit,
            min_group_size=context.min_group_size,
        )
    except ReleaseError as exc:
        raise EngineError(str(exc)) from None
    return table.to_json()


# Orders, built by the control plane at each claim ----------------------------------------------


def step_order(step: JobStep, config: MpcConfig) -> StepOrder:
    """What the site of a claimed input or compute step needs, from the job's steps as placed:
    the approved canonical form, every party's site; an input step's dataset (with its owner's
    key service), or a compute step's input deliveries and the delivery key."""
    job = step.job
    query = job.query
    placed = tuple(
        PartyOrder(index=party_of(c), site=site_of(c).name, site_id=site_of(c).pk)
        for c in compute_steps(job.pk)
    )
    common = StepOrder(
        job=job.pk,
        step=step.pk,
        attempt=step.attempt,
        kind=str(step.kind),
        name=step.name,
        mechanism=job.mechanism,
        query=query.pk,
        site=site_of(step).name,
        canonical=canonical_of(query),
        parties=placed,
    )
    if step.kind == Stage.INPUT:
        reads = dataset_of(step).pk
        dataset = next(d for d in dataset_orders(query, config.key_services) if d.dataset == reads)
        return replace(common, dataset=dataset)
    party = party_of(step)
    sources = []
    for source in input_steps(job.pk):
        sent = source.output["shares"][str(party)]
        if sent["site"] != site_of(step).name:
            raise EngineError(f"The shares of {source.name} were sealed for another site.")
        sources.append(
            SourceOrder(
                step=source.pk,
                attempt=source.attempt,
                dataset=dataset_of(source).pk,
                length=int(sent["length"]),
                sha256=sent["sha256"],
            )
        )
    delivery = JobStep.objects.get(job=job, kind=Stage.DELIVER)
    return replace(
        common,
        party=party,
        sources=tuple(sources),
        delivery_key=delivery.output["public_key"],
    )


def delivery_order(delivery: JobStep, outputs: list[JobStep], config: MpcConfig) -> DeliveryOrder:
    """The claimed delivery's order: only for a delivery claimed and charged, whose key the job's
    end has not destroyed; its shares stay sealed to the receiver's key service."""
    job = delivery.job
    if delivery.output.get("shredded"):
        raise EngineError("The job has ended; its delivery key was destroyed.")
    if delivery.state != JobStep.State.RUNNING or job.charged_at is None:
        raise EngineError("The delivery was not claimed and charged; its shares stay sealed.")
    receiver = delivery.output["receiver"]
    return DeliveryOrder(
        job=job.pk,
        step=delivery.pk,
        attempt=delivery.attempt,
        mechanism=job.mechanism,
        canonical=canonical_of(job.query),
        receiver=receiver,
        key_service=config.key_services.urls.get(receiver, ""),
        shares={party_of(step): _output_share(step) for step in outputs},
    )


# Placement -------------------------------------------------------------------------------------

PARTIES = 3  # Shamir sharing with an honest majority: fewer parties give no secrecy


def compute_sites(contributions: list[RoomDataset]) -> list[Site]:
    """The MPC party sites that may receive shares of every dataset: one per jurisdiction
    first, so no single legal system holds a majority of shares."""
    rules = transfer_rules(contributions)
    eligible = [
        site
        for site in active_sites(Site.Kind.MPC_PARTY)
        if allowed_everywhere(StepKind.RECEIVE_SHARES, site, contributions, rules)
    ]
    chosen, seen = [], set()
    for site in sorted(eligible, key=lambda s: s.name):
        if site.jurisdiction.code not in seen:
            chosen.append(site)
            seen.add(site.jurisdiction.code)
    for site in eligible:
        if len(chosen) >= PARTIES:
            break
        if site not in chosen:
            chosen.append(site)
    return chosen[:PARTIES]


def input_site(contribution: RoomDataset) -> Site | None:
    """A worker site in the dataset's own jurisdiction, where its rows are read."""
    jurisdiction = contribution.dataset.jurisdiction
    for site in active_sites(Site.Kind.WORKER):
        if site.jurisdiction_id == jurisdiction.pk:
            return site
    return None


def sampling_statement(measurements: dict[str, Measurement], groups: int) -> dict[str, Any]:
    """How far noise sampled inside MPC may be from the exact discrete Laplace: per measurement
    the total variation per cell, computed from the sampler's own thresholds, and the δ that
    implies over every released cell, (1 + e^ε) · cells · deviation (stated, not charged)."""
    deviation = {name: deviation_bound(m.grid_scale) for name, m in measurements.items()}
    worst = max(deviation.values())
    cells = groups * len(measurements)
    delta = (1 + math.exp(sum(m.epsilon for m in measurements.values()))) * cells * worst
    return {
        "deviation": deviation,
        "summary": {
            "deviation_per_cell": worst,
            "cells": cells,
            "delta": delta,
            "statement": (
                f"Noise drawn inside MPC is within {worst:.2g} of the exact discrete Laplace per "
                f"cell in total variation (computed from the sampler's thresholds): over the "
                f"{cells} cells the release is ε-DP up to δ ≤ {delta:.2g}, stated, not charged."
            ),
        },
    }


class MpcEngine(StepEngine):
    """Runs a job as steps at several sites: input steps at each owner's site, compute parties
    on secret shares, and the delivery that opens only noisy values."""

    name = Mechanism.MPC

    in_steps = True
    Config = MpcConfig

    def __init__(self, config: MpcConfig, recorder: Recorder):
        self.config = config
        self.recorder = recorder

    @classmethod
    def refusal(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> str | None:
        if parsed.output is Output.SYNTHETIC:
            return "a synthetic extract fits a model to rows, which runs in the TEE only"
        if parsed.shape == Shape.JOIN:
            return (
                "it joins datasets on a key (the vertical case), which MPC does not do yet: "
                "joins run in the TEE"
            )
        refusing = [
            c.dataset.qualified_name
            for c in contributions
            if Mechanism.MPC not in c.policy.allowed_mechanisms
        ]
        if refusing:
            return f"the policy of {', '.join(refusing)} does not allow MPC"
        sites = compute_sites(contributions)
        if len(sites) < PARTIES:
            return (
                f"only {len(sites)} MPC party site{'' if len(sites) == 1 else 's'} may receive "
                f"shares of every dataset, and MPC needs {PARTIES}: with 2 parties Shamir "
                "sharing has threshold 0, so each share would be the secret itself"
            )
        return None

    @classmethod
    def place(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> Planned:
        planned = Planned()
        for contribution in contributions:
            site = input_site(contribution)
            name, jurisdiction = (
                contribution.dataset.qualified_name,
                contribution.dataset.jurisdiction,
            )
            if site is None:
                planned.problems.append(f"No active worker site in {jurisdiction.code} for {name}.")
                continue
            planned.steps.append(
                PlannedStep.at(
                    f"input {name}",
                    Stage.INPUT,
                    site,
                    [decide(StepKind.PROCESS_ROWS, data=jurisdiction.rules(), site=site.place())],
                    reads=(name,),
                )
            )
        for index, site in enumerate(compute_sites(contributions), start=1):
            planned.steps.append(
                PlannedStep.at(
                    f"compute party {index}",
                    Stage.COMPUTE,
                    site,
                    [
                        decide(
                            StepKind.RECEIVE_SHARES,
                            data=c.dataset.jurisdiction.rules(),
                            site=site.place(),
                        )
                        for c in contributions
                    ],
                    party=index - 1,
                )
            )
        return planned

    @classmethod
    def create_steps(cls, job: Job, planned: list[PlannedStep], config: MpcConfig) -> list[JobStep]:
        """The job's steps as the plan placed them, and its delivery (with the key the
        parties seal their noisy output shares to)."""
        sites = {
            s.name: s
            for s in Site.objects.filter(
                name__in=[s.site for s in planned if s.site]
            ).select_related("jurisdiction")
        }
        datasets = {c.dataset.qualified_name: c.dataset for c in job.query.room.contributions.all()}
        steps = []
        for step in planned:
            if step.stage == Stage.INPUT and step.site:
                steps.append(
                    JobStep(
                        job=job,
                        name=step.name,
                        kind=Stage.INPUT,
                        site=sites[step.site],
                        dataset=datasets[step.reads[0]],
                    )
                )
            elif step.stage == Stage.COMPUTE and step.site:
                steps.append(
                    JobStep(
                        job=job,
                        name=step.name,
                        kind=Stage.COMPUTE,
                        site=sites[step.site],
                        party=step.party,
                    )
                )
        steps.append(
            JobStep(
                job=job,
                name="delivery",
                kind=Stage.DELIVER,
                output=new_delivery_key(job, config.key_services),
            )
        )
        return JobStep.objects.bulk_create(steps)

    @classmethod
    def noise_statement(cls, measurements: dict[str, Any], groups: int) -> dict[str, Any]:
        return sampling_statement(measurements, groups)

    @classmethod
    def outputs_needed(cls, compute_steps: int) -> int:
        """t + 1 output shares open a value, t = (parties - 1) // 2 (Shamir, honest majority)."""
        return (compute_steps - 1) // 2 + 1

    @classmethod
    def step_order(cls, step: JobStep, config: MpcConfig) -> StepOrder:
        return step_order(step, config)

    @classmethod
    def delivery_order(
        cls, delivery: JobStep, outputs: list[JobStep], config: MpcConfig
    ) -> DeliveryOrder:
        return delivery_order(delivery, outputs, config)

    def run_step(self, order: StepOrder) -> dict[str, Any]:
        if order.kind == Stage.INPUT:
            return inputs.run_input(order, self.config, self.recorder)
        return run_compute(order, self.config)

    def deliver(self, order: DeliveryOrder) -> dict[str, Any]:
        return deliver(order, self.config)
