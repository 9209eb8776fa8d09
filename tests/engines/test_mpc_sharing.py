"""The MPC engine's pieces that run in the worker: Shamir sharing in MPyC's own functions,
sealing shares to a party, the discrete Laplace sampler's parameters and its deviation bound,
the deployment's MPC credentials, and where parties listen. Nothing here imports
mpyc.runtime (it parses sys.argv and keeps one global runtime per process)."""

from __future__ import annotations

import io
import math
import shutil
import stat
import sys
from dataclasses import replace
from decimal import localcontext

import numpy as np
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError
from scipy import stats

from cleanroom.crypto.sealing import public_bytes
from dataplane.mpc import noise, sharing
from jobs.engines.base import EngineError
from jobs.engines.mpc.certificates import (
    SHARE_KEY_OID,
    SHARE_SEALING_USAGE,
    ensure_credentials,
    party_private_key,
    party_public_key,
    party_tls_files,
)
from jobs.engines.mpc.parties import PartySpec, party_addresses, run_party
from tests.engines.support import mpc_config


def test_no_module_of_the_engine_imports_the_mpyc_runtime():
    assert "mpyc.runtime" not in sys.modules


def test_shares_recombine_from_any_majority_to_the_signed_values():
    values = [0, 1, -1, 123456789, -(2**100), 2**119]
    shares = sharing.split(values, 5)

    assert len(shares) == 5 and all(len(row) == len(values) for row in shares)
    for subset in ([0, 1, 2], [2, 3, 4], [0, 2, 4], [0, 1, 2, 3, 4]):
        assert sharing.recombine({i: shares[i] for i in subset}) == values


def test_sharing_refuses_fewer_than_three_parties_and_values_near_the_field_size():
    with pytest.raises(ValueError, match="at least 3 parties"):
        sharing.split([1], 2)
    with pytest.raises(ValueError, match="out of the shared range"):
        sharing.split([2**120], 3)


def test_one_partys_shares_of_different_inputs_are_indistinguishable():
    draws = 3000
    zeros = np.array(sharing.split([0] * draws, 3)[1], dtype=float) / sharing.MODULUS
    large = np.array(sharing.split([10**9] * draws, 3)[1], dtype=float) / sharing.MODULUS

    assert stats.ks_2samp(zeros, large).pvalue > 1e-4
    assert stats.kstest(large, "uniform").pvalue > 1e-4


def test_a_sealed_share_vector_opens_only_with_the_partys_key_and_context():
    key = X25519PrivateKey.generate()
    shares = sharing.split([5, -3], 3)[2]
    blob = sharing.seal_for_party(shares, public_bytes(key), b"job 1 party 2")

    assert sharing.open_for_party(blob, key, b"job 1 party 2") == shares
    with pytest.raises(InvalidTag):
        sharing.open_for_party(blob, key, b"job 2 party 2")
    with pytest.raises(InvalidTag):
        sharing.open_for_party(blob, X25519PrivateKey.generate(), b"job 1 party 2")


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.7, 2000.0, 1e9, 1e14, 1e16, 2.0**56])
def test_the_sampler_deviates_from_the_exact_discrete_laplace_by_at_most_2_to_the_minus_40(
    scale,
):
    bits = noise.geometric_bits(scale)
    precision = noise.precision_bits(scale, bits)

    assert noise.deviation_bound(scale) <= 2.0**-40
    # K is the fewest digits that keep G's tail under 2^-41.
    assert math.exp(-(2 ** (bits - 1)) / scale) > 2.0**-41 or bits == 1
    exact = noise.probabilities(scale, bits)
    with localcontext() as context:
        context.prec = 80  # up to 98 bits: beyond the default 28 digits
        for threshold, p in zip(noise.thresholds(scale, bits, precision), exact, strict=True):
            assert abs(threshold - p * 2**precision) <= 0.5


def test_the_samplers_construction_has_the_discrete_laplace_distribution():
    """The same construction as inside MPC (sign, nonzero bit, geometric digits, each a uniform
    L-bit integer below a threshold), drawn in the clear: chi-square against the pmf."""
    scale, draws = 2.5, 200_000
    rng = np.random.default_rng(11)
    bits = noise.geometric_bits(scale)
    precision = noise.precision_bits(scale, bits)
    below = [
        rng.integers(0, 2**precision, size=draws, dtype=np.uint64) < np.uint64(t)
        for t in noise.thresholds(scale, bits, precision)
    ]
    magnitude = 1 + sum(digit.astype(np.int64) << i for i, digit in enumerate(below[1:]))
    sign = rng.integers(0, 2, size=draws) * 2 - 1
    drawn = sign * below[0] * magnitude

    support = np.arange(-12, 13)
    observed = [np.sum(drawn < -12)] + [np.sum(drawn == k) for k in support]
    observed.append(np.sum(drawn > 12))
    pmf = noise.discrete_laplace_pmf(support, scale)
    tail = (1 - pmf.sum()) / 2
    expected = np.concatenate([[tail], pmf, [tail]]) * draws
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_scales_must_be_positive_and_finite():
    for scale in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive and finite"):
            noise.geometric_bits(scale)


def test_party_credentials_are_signed_by_the_deployments_ca_and_name_their_site(settings, tmp_path):
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    assert ensure_credentials(settings.MPC_CREDENTIALS_DIR, ["eu-paris-mpc"]) == ["eu-paris-mpc"]
    assert ensure_credentials(settings.MPC_CREDENTIALS_DIR, ["eu-paris-mpc"]) == []

    tls = party_tls_files(settings.MPC_CREDENTIALS_DIR, "eu-paris-mpc")
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    certificate = x509.load_pem_x509_certificate(tls.certificate.read_bytes())
    certificate.verify_directly_issued_by(ca)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["eu-paris-mpc"]
    for secret in (tls.key, tls.ca.parent / "ca.key", tls.key.parent / "share.key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert party_public_key(settings.MPC_CREDENTIALS_DIR, "eu-paris-mpc") == public_bytes(
        party_private_key(settings.MPC_CREDENTIALS_DIR, "eu-paris-mpc")
    )


def test_a_sites_credentials_are_made_on_first_use(settings, tmp_path):
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    key = party_public_key(settings.MPC_CREDENTIALS_DIR, "ch-geneva-mpc")

    assert len(key) == 32
    assert party_public_key(settings.MPC_CREDENTIALS_DIR, "ch-geneva-mpc") == key
    assert party_tls_files(settings.MPC_CREDENTIALS_DIR, "ch-geneva-mpc").certificate.exists()


@pytest.mark.django_db
def test_the_command_makes_party_credentials_and_worker_sites_sender_certificates(
    settings, tmp_path
):
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    output = io.StringIO()
    call_command("mpc_credentials", stdout=output)

    assert f"MPC CA: {tmp_path / 'mpc' / 'ca.crt'}" in output.getvalue()
    made = sorted(p.name for p in (tmp_path / "mpc" / "parties").iterdir())
    assert made == ["ch-geneva-mpc", "eu-paris-mpc", "uk-manchester-mpc", "us-ohio-mpc"]
    senders = sorted(p.name for p in (tmp_path / "mpc" / "senders").iterdir())
    assert "eu-frankfurt" in senders and not set(senders) & set(made)
    assert not any((tmp_path / "mpc" / "senders").rglob("share.key"))
    with pytest.raises(CommandError, match="Neither MPC party nor worker sites: eu-frankfurt-tee"):
        call_command("mpc_credentials", "eu-frankfurt-tee")


def test_each_job_and_party_gets_its_own_port_at_its_sites_configured_address(settings):
    settings.MPC_PARTY_ADDRESSES = {"ch-geneva-mpc": "10.0.2.7"}
    settings.MPC_PORT_BASE = 21000
    sites = ["eu-paris-mpc", "ch-geneva-mpc", "uk-manchester-mpc"]

    first, second = party_addresses(1, sites, mpc_config()), party_addresses(2, sites, mpc_config())

    assert [host for host, _ in first] == ["127.0.0.1", "10.0.2.7", "127.0.0.1"]
    ports = [port for _, port in first + second]
    assert len(set(ports)) == 6 and all(21000 <= p < 21000 + 8192 for p in ports)


def test_parties_at_the_same_site_are_refused(settings, tmp_path):
    settings.MPC_CREDENTIALS_DIR = tmp_path / "mpc"
    sites = ["eu-paris-mpc", "eu-paris-mpc", "uk-manchester-mpc"]
    spec = PartySpec(
        job=1,
        index=0,
        sites=sites,
        addresses=party_addresses(1, sites, mpc_config()),
        inputs=[[0]],
        layout={"groups": 1, "measures": ["count"]},
        noise=[{"measure": "count", "scale": 1.0}],
    )
    with pytest.raises(EngineError, match="site of its own"):
        run_party(spec, replace(mpc_config(), party_timeout=10))


def test_a_partys_certificate_carries_its_share_key_for_sealing(settings, tmp_path):
    root = tmp_path / "mpc"
    ensure_credentials(root, ["eu-paris-mpc"])
    certificate = x509.load_pem_x509_certificate(
        party_tls_files(root, "eu-paris-mpc").certificate.read_bytes()
    )

    extension = certificate.extensions.get_extension_for_oid(SHARE_KEY_OID)
    assert not extension.critical
    assert extension.value.value == b"\x04\x20" + public_bytes(
        party_private_key(root, "eu-paris-mpc")
    )
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert SHARE_SEALING_USAGE in usages


def test_a_sites_folder_never_makes_credentials(tmp_path):
    deployment, site = tmp_path / "mpc", tmp_path / "site"
    ensure_credentials(deployment, ["eu-paris-mpc"])
    site.mkdir()
    shutil.copy(deployment / "ca.crt", site / "ca.crt")

    with pytest.raises(EngineError, match=r"No share\.key for eu-paris-mpc"):
        party_private_key(site, "eu-paris-mpc")
    with pytest.raises(EngineError, match="No MPC certificate for eu-paris-mpc"):
        party_public_key(site, "eu-paris-mpc")
    with pytest.raises(EngineError, match="No MPC certificate for ch-geneva-mpc"):
        party_public_key(site, "ch-geneva-mpc", certificates=deployment)
    assert sorted(p.name for p in site.iterdir()) == ["ca.crt"]
    # The parties' certificates may be found elsewhere; the trust anchor is the site's own.
    assert party_public_key(site, "eu-paris-mpc", certificates=deployment) == public_bytes(
        party_private_key(deployment, "eu-paris-mpc")
    )


def test_a_certificate_of_the_earlier_layout_is_certified_again_keeping_the_share_key(tmp_path):
    root = tmp_path / "mpc"
    ensure_credentials(root, ["eu-paris-mpc"])
    folder = root / "parties" / "eu-paris-mpc"
    share_key = (folder / "share.key").read_bytes()
    # The CA's own certificate stands in for one without the share key.
    shutil.copy(root / "ca.crt", folder / "tls.crt")

    assert ensure_credentials(root, ["eu-paris-mpc"]) == ["eu-paris-mpc"]
    assert (folder / "share.key").read_bytes() == share_key
    assert party_public_key(root, "eu-paris-mpc") == public_bytes(
        X25519PrivateKey.from_private_bytes(share_key)
    )
