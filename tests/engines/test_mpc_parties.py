"""MPC compute parties as real, separate processes over TLS: they release the owners' sum plus
discrete Laplace noise drawn inside MPC, a party's view does not depend on the inputs, and a
stranger, a dead party or a two-party configuration fails the run cleanly.

Never imports mpyc.runtime here: each party is its own process (dataplane/mpc/party.py).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from dataplane.mpc import noise, sharing
from dataplane.mpc.party import PartyFailure, PartyNetwork
from jobs.engines.base import EngineError
from jobs.engines.mpc.certificates import ensure_credentials
from jobs.engines.mpc.parties import PartyOutput, PartySpec, run_party, start_party
from tests.bed.network import Host, Network
from tests.engines.support import mpc_config

SITES = ["eu-paris-mpc", "ch-geneva-mpc", "uk-manchester-mpc"]
TIMEOUT = 60


@pytest.fixture
def credentials(settings, tmp_path):
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    ensure_credentials(mpc_config().credentials, SITES)
    return settings.MPC_CREDENTIALS_DIR


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def specs(
    owners: list[list[int]],
    layout: dict,
    scales: list[float],
    *,
    hosts: list[str] | None = None,
    sites: list[str] = SITES,
) -> list[PartySpec]:
    hosts = hosts or ["127.0.0.1"] * len(sites)
    addresses = list(zip(hosts, free_ports(len(sites)), strict=True))
    shares = [sharing.split(vector, len(sites)) for vector in owners]
    return [
        PartySpec(
            job=7,
            index=index,
            sites=sites,
            addresses=addresses,
            inputs=[owner[index] for owner in shares],
            layout=layout,
            noise=[
                {"measure": m, "scale": s} for m, s in zip(layout["measures"], scales, strict=True)
            ],
        )
        for index in range(len(sites))
    ]


def run_all(
    party_specs: list[PartySpec],
    launchers: dict[int, list[str]] | None = None,
    timeout: float = TIMEOUT,
) -> list[PartyOutput | EngineError]:
    """Run every party at once, as the job's sites would, and collect outputs or errors."""

    def run(spec: PartySpec) -> PartyOutput | EngineError:
        launcher = (launchers or {}).get(spec.index, [])
        try:
            return start_party(spec, mpc_config(), launcher=launcher).wait(timeout)
        except EngineError as error:
            return error

    with ThreadPoolExecutor(len(party_specs)) as pool:
        return list(pool.map(run, party_specs))


def chi_square_pvalue(drawn: np.ndarray, scale: float, edges: list[int]) -> float:
    """Chi-square of draws against the discrete Laplace, in the bins the edges make."""
    support = np.arange(-60 * int(scale + 1), 60 * int(scale + 1) + 1)
    pmf = noise.discrete_laplace_pmf(support, scale)
    bins = np.searchsorted(edges, support, side="right")  # bin i: edges[i-1] <= x < edges[i]
    expected = np.bincount(bins, weights=pmf, minlength=len(edges) + 1) * len(drawn)
    observed = np.bincount(np.searchsorted(edges, drawn, side="right"), minlength=len(edges) + 1)
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.slow
def test_parties_release_the_sum_plus_discrete_laplace_noise_and_never_an_unnoised_value(
    credentials,
):
    rng = np.random.default_rng(5)
    groups, scales = 120, [1.0, 40.0]
    owners = [rng.integers(0, 10**6, size=2 * groups).tolist() for _ in range(3)]
    # The second measure's cells hold 0 in the first half and large sums in the second.
    owners[0][groups : groups + groups // 2] = [0] * (groups // 2)
    layout = {"groups": groups, "measures": ["count", "sum(visits)"]}

    outputs = run_all(specs(owners, layout, scales))

    assert all(isinstance(o, PartyOutput) for o in outputs), outputs
    plain = np.sum(owners, axis=0)
    released = np.array(sharing.recombine({i: o.output for i, o in enumerate(outputs)}))
    # Any t + 1 = 2 parties' output shares give the same values.
    assert released.tolist() == sharing.recombine({0: outputs[0].output, 2: outputs[2].output})
    counts, sums = released[:groups] - plain[:groups], released[groups:] - plain[groups:]
    # P(|noise| >= 40 scales) < 1e-17 per cell
    assert np.abs(counts).max() < 40 and np.abs(sums).max() < 40 * 40

    # The noise has the declared distribution in each measure: chi-square against the pmf.
    assert chi_square_pvalue(counts, scales[0], [-1, 0, 1, 2]) > 1e-4
    assert chi_square_pvalue(sums, scales[1], [-60, -25, -8, 0, 9, 26, 61]) > 1e-4

    # Party 0's view: its output shares of small and of large values look alike (uniform).
    own = np.array(outputs[0].output, dtype=float) / sharing.MODULUS
    small, large = own[groups : groups + groups // 2], own[groups + groups // 2 :]
    assert stats.ks_2samp(small, large).pvalue > 1e-4
    assert all(o.bytes_sent > 0 and o.bytes_received > 0 for o in outputs)
    assert all(0 < o.seconds["noise"] <= o.seconds["mpc"] for o in outputs)


def test_two_compute_parties_are_refused_before_anything_starts(credentials):
    spec = specs([[1, 2]], {"groups": 2, "measures": ["count"]}, [1.0])[0]
    two = replace(spec, sites=SITES[:2], addresses=spec.addresses[:2])
    with pytest.raises(EngineError, match="at least 3 compute parties"):
        run_party(two, replace(mpc_config(), party_timeout=TIMEOUT))


def test_the_party_program_itself_refuses_two_parties(credentials):
    document = (
        '{"job": 1, "index": 0, "parties": [{"host": "127.0.0.1", "port": 1, "site": "a"},'
        ' {"host": "127.0.0.1", "port": 2, "site": "b"}], "inputs": [[1]],'
        ' "layout": {"groups": 1, "measures": ["count"]},'
        ' "noise": [{"measure": "count", "scale": 1.0}], "time_limit": 30}\n'
    )
    party = subprocess.run(
        [sys.executable, "-m", "dataplane.mpc.party", "--ssl"],
        input=document,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert party.returncode == 2
    assert "at least 3 parties" in party.stderr


@contextmanager
def another_deployments_credentials(settings, tmp_path, site):
    own = settings.MPC_CREDENTIALS_DIR
    settings.MPC_CREDENTIALS_DIR = tmp_path / "other-ca"
    ensure_credentials(mpc_config().credentials, [site])
    try:
        yield
    finally:
        settings.MPC_CREDENTIALS_DIR = own


@pytest.mark.slow
def test_a_party_with_a_certificate_from_another_ca_cannot_join(credentials, settings, tmp_path):
    party_specs = specs([[3, 4]], {"groups": 2, "measures": ["count"]}, [1.0])
    # The last party listens for the others; its certificate names the right site, but
    # another CA signed it.
    with another_deployments_credentials(settings, tmp_path, SITES[2]):
        stranger = start_party(party_specs[2], mpc_config())
    honest = [start_party(spec, mpc_config()) for spec in party_specs[:2]]

    errors = []
    for party in [*honest, stranger]:
        with pytest.raises(EngineError) as failure:
            party.wait(5)
        errors.append(str(failure.value))

    # Both honest parties connect to the stranger. Whichever checks its certificate first
    # refuses it and stops; the other refuses it too, finds that party gone, or waits in vain
    # until its timeout, as the stranger does. No run completes.
    refusal = (
        f"Party 2 at 127.0.0.1:{party_specs[2].addresses[2][1]} is not {SITES[2]} of this "
        "deployment's MPC CA: self-signed certificate in certificate chain."
    )
    named = [i for i in (0, 1) if errors[i] == f"MPC party {i} ({SITES[i]}) failed: {refusal}"]
    assert named, errors
    for i in {0, 1} - set(named):
        # The connection is lost as the peer stops: closed, or reset by the peer's kernel.
        timed_out = f"MPC party {i} ({SITES[i]}) did not finish within 5 s."
        lost = f"MPC party {i} ({SITES[i]}) failed: Lost the connection to party {1 - i} before"
        assert errors[i] == timed_out or errors[i].startswith(lost), errors
    assert errors[2] == f"MPC party 2 ({SITES[2]}) did not finish within 5 s."


@pytest.mark.slow
def test_a_killed_party_fails_the_run_within_the_timeout(credentials):
    party_specs = specs([[3, 4]], {"groups": 2, "measures": ["count"]}, [1.0])
    running = [start_party(spec, mpc_config()) for spec in party_specs]
    running[1].process.kill()
    start = time.monotonic()

    errors = []
    for party in running:
        with pytest.raises(EngineError) as failure:
            party.wait(4)
        errors.append(str(failure.value))

    assert time.monotonic() - start < 8
    assert "MPC party 1 (ch-geneva-mpc) failed" in errors[1]
    assert "did not finish within 4 s" in errors[0] and "did not finish within 4 s" in errors[2]


@contextmanager
def separate_hosts(count: int) -> Iterator[list[Host]]:
    """`count` hosts, each a network namespace with an address of its own, behind one router."""
    network = Network()
    try:
        yield [network.add(str(i)) for i in range(count)]
    finally:
        network.close()


@pytest.mark.slow
def test_parties_on_separate_hosts_compute_together_over_their_own_addresses(credentials):
    with separate_hosts(3) as hosts:
        owners = [[10, 20, 30, 40], [1, 2, 3, 4], [100, 200, 300, 400]]
        party_specs = specs(
            owners,
            {"groups": 2, "measures": ["count", "sum(x)"]},
            [1.0, 1.0],
            hosts=[host.address for host in hosts],
        )
        outputs = run_all(party_specs, {i: host.command() for i, host in enumerate(hosts)})

    assert all(isinstance(o, PartyOutput) for o in outputs), outputs
    released = sharing.recombine({i: o.output for i, o in enumerate(outputs)})
    plain = np.sum(owners, axis=0)
    assert np.abs(np.array(released) - plain).max() < 40


@pytest.mark.slow
def test_a_party_of_this_ca_cannot_take_another_sites_place(credentials):
    ensure_credentials(mpc_config().credentials, ["us-ohio-mpc"])
    party_specs = specs([[3, 4]], {"groups": 2, "measures": ["count"]}, [1.0])
    # Party 0's process holds the Ohio site's genuine certificate but claims Paris's index.
    impostor = replace(party_specs[0], sites=["us-ohio-mpc", *SITES[1:]])

    # A party still dialling one that already stopped waits for its time limit: keep it short.
    outputs = run_all([impostor, *party_specs[1:]], timeout=20)

    assert all(isinstance(o, EngineError) for o in outputs)
    refusals = [
        index
        for index in (1, 2)
        if str(outputs[index])
        == (
            f"MPC party {index} ({SITES[index]}) failed: A peer with a certificate for"
            " ['us-ohio-mpc'] claimed to be party 0."
        )
    ]
    # At least one honest party names the impostor; the other may first lose its connection to
    # a party that already stopped for that reason, or wait for it until its time limit.
    assert refusals, outputs
    for index in {1, 2} - set(refusals):
        message = str(outputs[index])
        assert "Lost the connection to party" in message or "did not finish within" in message
    assert "Lost the connection to party" in str(outputs[0])


def test_a_party_listens_only_on_its_own_address_and_port():
    # In a thread of its own: the browser tests' session keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(listen_only_on_own_address).result()


def listen_only_on_own_address() -> None:
    ports = free_ports(3)
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    network = PartyNetwork(
        1,
        [
            {"host": host, "port": port, "site": site}
            for host, port, site in zip(hosts, ports, SITES, strict=True)
        ],
    )
    try:
        server = network.run_until_complete(network.create_server(asyncio.Protocol, port=ports[1]))
        assert [s.getsockname() for s in server.sockets] == [("127.0.0.2", ports[1])]
        server.close()
        network.run_until_complete(server.wait_closed())
        with pytest.raises(PartyFailure):
            network.run_until_complete(network.create_server(asyncio.Protocol, port=ports[0]))
    finally:
        network.close()
