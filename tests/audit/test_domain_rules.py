"""The verifier's domain rules over a room log: each broken rule is named, each kept one passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.rules import RESULT_OPENING, check_domain_rules, check_opening
from tests.audit.domain import (
    CHARITE,
    OUTSIDER,
    USZ,
    as_bodies,
    happy_run,
    index_of,
    mutate,
)


def check(run, **kwargs) -> None:
    check_domain_rules(as_bodies(run), **kwargs)


def test_a_query_run_by_the_rules_passes() -> None:
    check(happy_run())


def test_a_run_with_no_queries_at_all_passes() -> None:
    check(happy_run()[:2])


def without(kind: str, nth: int = 0):
    def change(run) -> None:
        del run[index_of(run, kind, nth)]

    return change


def set_data(event_type: str, nth: int = 0, /, **values):
    def change(run) -> None:
        run[index_of(run, event_type, nth)][1].update(values)

    return change


def insert_before(kind: str, new: tuple[str, dict], nth: int = 0):
    def change(run) -> None:
        run.insert(index_of(run, kind, nth), new)

    return change


BROKEN = {
    "an owner never approved": (
        without("query.approved", 1),
        f"job:5 ran query:7 without the approval of {USZ}",
    ),
    "an approval was revoked before the run": (
        insert_before(
            "job.dispatched",
            ("query.approval_revoked", {"query": "query:7", "organization": CHARITE}),
        ),
        f"job:5 ran query:7 although {CHARITE}'s approval was revoked",
    ),
    "an owner rejected after approving": (
        insert_before(
            "job.dispatched",
            ("query.rejected", {"query": "query:7", "digest": "d" * 64, "organization": USZ}),
        ),
        f"although {USZ}'s approval was a rejection",
    ),
    "an approval was for another version": (
        set_data("query.approved", 1, digest="a" * 64),
        f"{USZ} approved digest {'a' * 64} of query:7, not the digest",
    ),
    "the job ran another digest than the one submitted": (
        set_data("job.dispatched", digest="b" * 64),
        "job:5 ran query:7 with digest " + "b" * 64,
    ),
    "the job ran a query never submitted": (
        set_data("job.dispatched", query="query:8"),
        "job:5 ran query:8, which was never submitted",
    ),
    "the query had expired": (
        lambda run: run[index_of(run, "query.submitted")][1].update(
            expires_at=(datetime.now(UTC) - timedelta(days=1)).isoformat()
        ),
        "job:5 ran query:7 after it expired",
    ),
    "the query had been superseded": (
        insert_before("job.dispatched", ("query.superseded", {"query": "query:7"})),
        "job:5 ran query:7 after query.superseded",
    ),
    "a dataset owner was left out of the approvers": (
        set_data("query.submitted", required_approvers=[CHARITE]),
        f"query:7 does not require the approval of {USZ}, owner of dataset:2",
    ),
    "a step ran outside the jurisdictions its data allows": (
        set_data("residency.decided", 1, site_jurisdiction="US", site="us-east"),
        "step input-2 of job:5 ran at us-east in US, but its data allows only CH",
    ),
    "a data key went to a site residency refused": (
        set_data("residency.decided", 0, allowed=False, reason="no"),
        "a data key of job:5 went to eu-frankfurt after residency refused that site",
    ),
    "a dataset's budget was overspent": (
        set_data("budget.reserved", 0, epsilon="3.5"),
        "dataset:1 is charged ε 3.5 out of a budget of 3",
    ),
    "a dataset's delta was overspent": (
        set_data("budget.reserved", 1, delta="0.1"),
        "dataset:2 is charged δ 0.1 out of a budget of 0",
    ),
    "a refund exceeded the reservation": (
        insert_before(
            "job.succeeded",
            (
                "budget.refunded",
                {"job": "job:5", "dataset": "dataset:1", "epsilon": "2", "delta": "0"},
            ),
        ),
        "job:5 refunded more of dataset:1 than it reserved",
    ),
    "budget was charged to a dataset not in the room": (
        set_data("budget.reserved", 0, dataset="dataset:77"),
        "budget of dataset:77, never contributed to this room",
    ),
    "a result went to an unapproved receiver": (
        set_data("result.released", receivers=["org:3", OUTSIDER]),
        f"the result of job:5 went to {OUTSIDER}, not a receiver approved for query:7",
    ),
    "a result of a job never dispatched was released": (
        set_data("result.released", job="job:6"),
        "a result of job:6, which was never dispatched",
    ),
    "the TEE was simulated": (
        set_data("attestation.verified", kind="simulated"),
        "job:5 ran on a simulated TEE, not hardware-backed",
    ),
    "the attestation kind is unknown": (
        set_data("attestation.verified", kind="trust-me"),
        "unknown attestation kind 'trust-me'",
    ),
    "an event lacks a field the rules need": (
        lambda run: run[index_of(run, "job.dispatched")][1].pop("query"),
        "(job.dispatched) lacks the field 'query'",
    ),
    "an epsilon is not a decimal string": (
        set_data("budget.reserved", 0, epsilon="lots"),
        "'lots' is not a decimal string",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_a_broken_rule_is_refused_naming_the_event_and_what_broke(case: str) -> None:
    change, message = BROKEN[case]
    with pytest.raises(VerificationError, match=r"^event [0-9]+ ") as failure:
        check(mutate(change))
    assert message in str(failure.value)


def test_a_simulated_tee_passes_when_the_trust_file_allows_it() -> None:
    check(mutate(set_data("attestation.verified", kind="simulated")), allow_simulated_tee=True)


def test_a_refused_residency_decision_is_fine_when_the_step_never_got_a_key() -> None:
    def refuse_and_move(run) -> None:
        run[index_of(run, "residency.decided", 1)][1].update(allowed=False, reason="no")

    check(mutate(refuse_and_move))


def test_a_refund_gives_budget_back_for_a_later_job() -> None:
    run = happy_run()
    refund = [
        ("budget.refunded", {"job": "job:5", "dataset": "dataset:1", "epsilon": "1", "delta": "0"})
    ]
    again = [
        (
            "budget.reserved",
            {"job": f"job:{n}", "dataset": "dataset:1", "epsilon": "1", "delta": "0"},
        )
        for n in (10, 11)
    ]
    check(run + refund + again)  # 1 + 1 - 1 + 1 + 1 = 3, the whole budget
    with pytest.raises(VerificationError, match="charged ε 4 out of a budget of 3"):
        check(run + again + again[:1])


def test_the_latest_contribution_sets_the_budget_a_dataset_is_held_to() -> None:
    raised = (
        "room.dataset_contributed",
        {
            "dataset": "dataset:1",
            "version": 2,
            "policy_version": 3,
            "jurisdiction": "EU",
            "owner": CHARITE,
            "total_epsilon": "5",
            "total_delta": "0",
        },
    )
    run = mutate(set_data("budget.reserved", 0, epsilon="4"))
    with pytest.raises(VerificationError, match="charged ε 4 out of a budget of 3"):
        check(run)
    check(mutate(insert_before("budget.reserved", raised), run))


@pytest.mark.parametrize("job", [None, 7, ["job:1"], {"job:1": 1}])
def test_an_opening_that_names_no_job_is_refused_clearly(job) -> None:
    # A receiver's opening is a file anyone can hand the verifier: its job is whatever it says.
    opening = {"format": RESULT_OPENING, "job": job, "salt": "00" * 32, "result": ""}
    with pytest.raises(VerificationError, match="the opening names no job"):
        check_opening(opening, {"job:1": {"result_commitment": ""}})
