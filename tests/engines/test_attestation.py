"""Attestation: the one verifier accepts a genuine AWS Nitro document and simulated ones, and
refuses tampering, expiry, unknown measurements, untrusted roots and replays, saying why."""

from __future__ import annotations

import base64
import hashlib
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from django.core.checks import Tags, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from cleanroom.attestation.binding import binding
from cleanroom.attestation.simulated import SimulatedEnclave, SimulatedRoot
from cleanroom.attestation.trust import (
    AWS_NITRO_ROOT_G1_SHA256,
    aws_nitro_root,
    measure,
    parse_measurements,
)
from cleanroom.attestation.verify import SIMULATED_ROOT_CN, AttestationError, verify_attestation
from jobs.engines.tee.trust import configured_measurements, trusted_roots
from tests.engines.support import tee_config

SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "nitro" / "sample_doc.b64"
GENUINE = base64.b64decode(SAMPLE.read_text())
GENUINE_PAYLOAD = cbor2.loads(cbor2.loads(GENUINE)[2])
GENUINE_AT = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=GENUINE_PAYLOAD["timestamp"])
DIGEST = hashlib.sha256(b"the approved query").hexdigest()


def verify_genuine(document: bytes = GENUINE, **kwargs):
    kwargs.setdefault("trusted_roots", [aws_nitro_root()])
    kwargs.setdefault("at", GENUINE_AT)
    return verify_attestation(document, **kwargs)


def flipped(document: bytes, position: int) -> bytes:
    altered = bytearray(document)
    altered[position] ^= 0x01
    return bytes(altered)


def offset_of(value: bytes) -> int:
    position = GENUINE.find(value)
    assert position > 0 and GENUINE.count(value) >= 1
    return position


@pytest.fixture
def root(tmp_path) -> SimulatedRoot:
    return SimulatedRoot.load_or_create(tmp_path / "tee")


@pytest.fixture
def enclave(root) -> SimulatedEnclave:
    return SimulatedEnclave(root)


def simulated_document(enclave: SimulatedEnclave, job: int = 7, **kwargs) -> bytes:
    kwargs.setdefault("pcrs", {0: b"\x11" * 48, 1: b"\x22" * 48, 2: b"\x33" * 48})
    kwargs.setdefault("public_key", b"\x42" * 32)
    kwargs.setdefault("user_data", binding(job, DIGEST))
    kwargs.setdefault("nonce", b"\x07" * 16)
    return enclave.attest(**kwargs)


def now() -> datetime:
    return datetime.now(UTC)


def assemble(payload: dict, leaf_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A Nitro-format document over `payload`, signed by `leaf_key` (for forgeries)."""
    protected = cbor2.dumps({1: -35})
    encoded = cbor2.dumps(payload)
    to_sign = cbor2.dumps(["Signature1", protected, b"", encoded])
    r, s = decode_dss_signature(leaf_key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    return cbor2.dumps([protected, {}, encoded, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


def certificate(subject: str, issuer: x509.Name, public_key, signing_key, *, ca: bool):
    moment = now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=1))
        .not_valid_after(moment + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA384())
    )


# --- The genuine AWS Nitro document --------------------------------------------------------------


def test_the_genuine_nitro_document_verifies_at_its_own_timestamp_as_hardware():
    verified = verify_genuine()

    assert verified.kind == "hardware"
    assert not verified.simulated
    assert verified.module_id == "i-059e862454f4a8d8f-enc0190a2f1964172e6"
    assert verified.timestamp == datetime(2024, 7, 16, 19, 53, 7, 239000, tzinfo=UTC)
    assert verified.pcrs == GENUINE_PAYLOAD["pcrs"]
    assert sorted(verified.pcrs) == list(range(16))
    assert verified.pcrs[0].hex().startswith("c8275c3e3cd96b3c")
    assert verified.user_data == GENUINE_PAYLOAD["user_data"]
    assert verified.public_key == GENUINE_PAYLOAD["public_key"]
    assert verified.nonce is None
    assert verified.root_sha256 == AWS_NITRO_ROOT_G1_SHA256
    assert verified.evidence_sha256 == hashlib.sha256(GENUINE).hexdigest()
    assert verified.summary()["pcrs"]["0"] == verified.pcrs[0].hex()


def test_the_pinned_aws_root_is_the_genuine_documents_cabundle_root():
    assert (
        aws_nitro_root().public_bytes(serialization.Encoding.DER)
        == (GENUINE_PAYLOAD["cabundle"][0])
    )
    assert hashlib.sha256(GENUINE_PAYLOAD["cabundle"][0]).hexdigest() == AWS_NITRO_ROOT_G1_SHA256


def test_the_genuine_document_verifies_as_well_with_the_cose_sign1_tag():
    assert verify_genuine(b"\xd2" + GENUINE).kind == "hardware"


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(0, id="envelope-array-header"),
        pytest.param(3, id="protected-header-alg"),
        pytest.param(offset_of(b"i-059e862454f4a8d8f-enc") + 4, id="module-id"),
        pytest.param(offset_of(b"timestamp") + 12, id="timestamp"),
        pytest.param(offset_of(GENUINE_PAYLOAD["pcrs"][0]), id="pcr0-first-byte"),
        pytest.param(offset_of(GENUINE_PAYLOAD["pcrs"][2]) + 47, id="pcr2-last-byte"),
        pytest.param(offset_of(GENUINE_PAYLOAD["pcrs"][4]) + 20, id="pcr4-middle"),
        pytest.param(offset_of(GENUINE_PAYLOAD["certificate"]) + 300, id="leaf-certificate"),
        pytest.param(offset_of(GENUINE_PAYLOAD["cabundle"][0]) + 200, id="cabundle-root"),
        pytest.param(offset_of(GENUINE_PAYLOAD["cabundle"][2]) + 200, id="cabundle-intermediate"),
        pytest.param(offset_of(GENUINE_PAYLOAD["public_key"]) + 10, id="public-key"),
        pytest.param(offset_of(GENUINE_PAYLOAD["user_data"]), id="user-data-first-byte"),
        pytest.param(offset_of(GENUINE_PAYLOAD["user_data"]) + 31, id="user-data-last-byte"),
        pytest.param(len(GENUINE) - 96, id="signature-r"),
        pytest.param(len(GENUINE) - 1, id="signature-s-last-byte"),
    ],
)
def test_flipping_one_byte_of_the_genuine_document_refuses_it(position):
    with pytest.raises(AttestationError) as refused:
        verify_genuine(flipped(GENUINE, position))
    assert refused.value.reason


def test_flipping_a_byte_anywhere_in_the_genuine_document_refuses_it():
    """A sweep over every 13th byte (the whole document was swept when this was written)."""
    for position in range(0, len(GENUINE), 13):
        with pytest.raises(AttestationError):
            verify_genuine(flipped(GENUINE, position))


def test_a_changed_pcr_in_the_genuine_payload_fails_the_cose_signature():
    with pytest.raises(AttestationError, match="COSE signature does not verify") as refused:
        verify_genuine(flipped(GENUINE, offset_of(GENUINE_PAYLOAD["pcrs"][0]) + 5))
    assert refused.value.code == "signature"


def test_bytes_after_the_genuine_document_are_refused():
    with pytest.raises(AttestationError, match="trailing bytes"):
        verify_genuine(GENUINE + b"\x00")


def test_a_truncated_genuine_document_is_refused():
    with pytest.raises(AttestationError, match="not valid CBOR"):
        verify_genuine(GENUINE[:-1])


def test_the_genuine_document_is_refused_at_the_current_time_as_expired():
    with pytest.raises(AttestationError, match=r"leaf certificate .* expired at 2024-07-16") as e:
        verify_genuine(at=now())
    assert e.value.code == "expired"


def test_the_genuine_document_is_refused_before_its_certificates_were_issued():
    with pytest.raises(AttestationError, match="not valid before"):
        verify_genuine(at=GENUINE_AT - timedelta(hours=2))


def test_a_pcr_allow_list_without_its_pcr0_refuses_it_naming_the_measurement():
    allowed = [{0: b"\x00" * 48}, {0: hashlib.sha384(b"another enclave").digest()}]

    with pytest.raises(AttestationError) as refused:
        verify_genuine(allowed_measurements=allowed)

    assert refused.value.code == "measurement"
    assert "not on the allow-list" in refused.value.reason
    assert f"PCR0={GENUINE_PAYLOAD['pcrs'][0].hex()}" in refused.value.reason


def test_a_pcr_allow_list_with_its_pcr0_admits_it():
    pcrs = GENUINE_PAYLOAD["pcrs"]
    allowed = [{0: b"\x00" * 48}, {0: pcrs[0], 1: pcrs[1], 2: pcrs[2]}]

    assert verify_genuine(allowed_measurements=allowed).pcrs[0] == pcrs[0]


def test_an_allow_list_entry_must_match_on_every_pcr_it_names():
    pcrs = GENUINE_PAYLOAD["pcrs"]

    with pytest.raises(AttestationError, match="not on the allow-list") as refused:
        verify_genuine(allowed_measurements=[{0: pcrs[0], 2: b"\x00" * 48}])
    assert f"PCR0={pcrs[0].hex()}, PCR2={pcrs[2].hex()}" in refused.value.reason


def test_an_empty_allow_list_or_an_empty_entry_allows_nothing():
    with pytest.raises(AttestationError, match="allow-list is empty"):
        verify_genuine(allowed_measurements=[])
    with pytest.raises(AttestationError, match="not on the allow-list"):
        verify_genuine(allowed_measurements=[{}])


def test_the_genuine_document_is_refused_when_only_a_simulated_root_is_trusted(root):
    with pytest.raises(AttestationError, match="does not lead to a trusted root") as refused:
        verify_genuine(trusted_roots=[root.certificate])
    assert refused.value.code == "untrusted_root"


def test_the_genuine_document_is_refused_for_another_binding():
    with pytest.raises(AttestationError, match="bound to other user data") as refused:
        verify_genuine(expected_user_data=binding(1, DIGEST))
    assert refused.value.code == "binding"


# --- Simulated documents --------------------------------------------------------------------------


def test_the_simulated_document_round_trips_as_simulated_with_its_binding_and_key(root, enclave):
    document = simulated_document(enclave, job=7)

    verified = verify_attestation(
        document,
        trusted_roots=[aws_nitro_root(), root.certificate],
        at=now(),
        allowed_measurements=[{0: b"\x11" * 48}],
        expected_user_data=binding(7, DIGEST),
    )

    assert verified.kind == "simulated"
    assert verified.simulated
    assert verified.user_data == binding(7, DIGEST)
    assert verified.public_key == b"\x42" * 32
    assert verified.nonce == b"\x07" * 16
    assert verified.module_id == enclave.module_id
    assert verified.module_id.startswith("sim-")
    assert verified.pcrs[0] == b"\x11" * 48
    assert verified.pcrs[15] == bytes(48)
    assert verified.root_sha256 == root.sha256
    assert abs(verified.timestamp - now()) < timedelta(minutes=1)


def test_the_simulated_document_has_the_nitro_layout():
    root = SimulatedRoot.generate()
    envelope = cbor2.loads(simulated_document(SimulatedEnclave(root)))
    payload = cbor2.loads(envelope[2])

    assert cbor2.loads(envelope[0]) == {1: -35}
    assert envelope[1] == {}
    assert len(envelope[3]) == 96
    assert list(payload) == [
        "module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
        "public_key", "user_data", "nonce",
    ]  # fmt: skip
    assert payload["digest"] == "SHA384"
    assert payload["cabundle"] == [root.der]
    leaf = x509.load_der_x509_certificate(payload["certificate"])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(hours=3, minutes=1)


def test_a_replayed_simulated_document_for_another_job_is_refused(root, enclave):
    document = simulated_document(enclave, job=7)

    with pytest.raises(AttestationError, match="bound to other user data") as refused:
        verify_attestation(
            document,
            trusted_roots=[root.certificate],
            at=now(),
            expected_user_data=binding(8, DIGEST),
        )
    assert refused.value.code == "binding"
    assert "cleanroom-job/v1\\n7" in refused.value.reason


def test_a_simulated_document_is_refused_when_only_the_aws_root_is_trusted(enclave):
    with pytest.raises(AttestationError, match="does not lead to a trusted root"):
        verify_attestation(simulated_document(enclave), trusted_roots=[aws_nitro_root()], at=now())


def test_a_document_from_another_deployments_simulated_root_is_refused(tmp_path, root):
    elsewhere = SimulatedEnclave(SimulatedRoot.load_or_create(tmp_path / "elsewhere"))

    with pytest.raises(AttestationError, match="does not lead to a trusted root"):
        verify_attestation(
            simulated_document(elsewhere),
            trusted_roots=[aws_nitro_root(), root.certificate],
            at=now(),
        )


def test_a_simulated_document_expires_with_its_short_lived_leaf(root, enclave):
    with pytest.raises(AttestationError, match="expired"):
        verify_attestation(
            simulated_document(enclave),
            trusted_roots=[root.certificate],
            at=now() + timedelta(hours=4),
        )


def test_a_document_older_than_max_age_is_refused(root, enclave):
    made = now() - timedelta(minutes=30)
    document = simulated_document(enclave, now=made)

    verified = verify_attestation(document, trusted_roots=[root.certificate], at=now())
    assert verified.timestamp < now() - timedelta(minutes=29)
    with pytest.raises(AttestationError, match="more than 0:10:00 before") as refused:
        verify_attestation(
            document, trusted_roots=[root.certificate], at=now(), max_age=timedelta(minutes=10)
        )
    assert refused.value.code == "stale"


def test_a_resigned_payload_under_the_genuine_leaf_certificate_is_refused(root, enclave):
    """Whoever lacks the leaf's private key cannot change the payload and sign it anew."""
    payload = cbor2.loads(cbor2.loads(simulated_document(enclave, job=7))[2])
    payload["user_data"] = binding(8, DIGEST)

    with pytest.raises(AttestationError, match="COSE signature does not verify"):
        verify_attestation(
            assemble(payload, ec.generate_private_key(ec.SECP384R1())),
            trusted_roots=[root.certificate],
            at=now(),
        )


def test_a_leaf_forged_under_the_trusted_roots_name_is_refused(root, enclave):
    """A leaf that names the simulated root as its issuer but was signed by another key."""
    payload = cbor2.loads(cbor2.loads(simulated_document(enclave))[2])
    forger, leaf_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(2))
    forged = certificate(
        "forged", root.certificate.subject, leaf_key.public_key(), forger, ca=False
    )
    payload["certificate"] = forged.public_bytes(serialization.Encoding.DER)

    with pytest.raises(AttestationError, match="does not verify under the key of") as refused:
        verify_attestation(assemble(payload, leaf_key), trusted_roots=[root.certificate], at=now())
    assert refused.value.code == "chain"


def test_a_chain_through_an_issuer_that_is_not_a_ca_is_refused(root, enclave):
    payload = cbor2.loads(cbor2.loads(simulated_document(enclave))[2])
    middle_key, leaf_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(2))
    middle = certificate(
        "not a CA", root.certificate.subject, middle_key.public_key(), root._private_key, ca=False
    )
    leaf = certificate("leaf", middle.subject, leaf_key.public_key(), middle_key, ca=False)
    payload["certificate"] = leaf.public_bytes(serialization.Encoding.DER)
    payload["cabundle"] = [root.der, middle.public_bytes(serialization.Encoding.DER)]

    with pytest.raises(AttestationError, match=r"cabundle\[1\] .* is not a CA"):
        verify_attestation(assemble(payload, leaf_key), trusted_roots=[root.certificate], at=now())


def test_unsigned_data_in_the_unprotected_header_is_refused(root, enclave):
    envelope = cbor2.loads(simulated_document(enclave))
    envelope[1] = {4: b"kid"}

    with pytest.raises(AttestationError, match="unprotected header is not an empty map"):
        verify_attestation(cbor2.dumps(envelope), trusted_roots=[root.certificate], at=now())


def test_an_algorithm_other_than_es384_is_refused(root, enclave):
    envelope = cbor2.loads(simulated_document(enclave))
    envelope[0] = cbor2.dumps({1: -7})

    with pytest.raises(AttestationError, match="not \\{1: -35\\}"):
        verify_attestation(cbor2.dumps(envelope), trusted_roots=[root.certificate], at=now())


def test_a_pcr_that_is_not_48_bytes_is_refused(root, enclave):
    payload = cbor2.loads(cbor2.loads(simulated_document(enclave))[2])
    payload["pcrs"][3] = b"\x01" * 32
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = root.issue_leaf(leaf_key.public_key(), "sim-test.simulated", now())
    payload["certificate"] = leaf.public_bytes(serialization.Encoding.DER)

    with pytest.raises(AttestationError, match="PCR3 is 32 bytes, not 48"):
        verify_attestation(assemble(payload, leaf_key), trusted_roots=[root.certificate], at=now())


# --- The simulated root, settings and the deploy check --------------------------------------------


def test_the_simulated_root_is_stable_in_one_directory_and_differs_across_directories(tmp_path):
    first = SimulatedRoot.load_or_create(tmp_path / "a")
    again = SimulatedRoot.load_or_create(tmp_path / "a")
    other = SimulatedRoot.load_or_create(tmp_path / "b")

    assert again.der == first.der
    assert other.der != first.der
    assert other.certificate.public_key() != first.certificate.public_key()
    common_name = first.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    assert common_name.value == SIMULATED_ROOT_CN == "SIMULATED TEE - NOT HARDWARE BACKED"
    organization = first.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0]
    assert organization.value == "cleanroom simulated TEE"
    key_mode = (tmp_path / "a" / SimulatedRoot.KEY_FILE).stat().st_mode
    assert stat.S_IMODE(key_mode) == 0o600


def test_a_simulated_root_key_readable_by_others_is_refused(tmp_path):
    SimulatedRoot.load_or_create(tmp_path / "tee")
    (tmp_path / "tee" / SimulatedRoot.KEY_FILE).chmod(0o644)

    with pytest.raises(PermissionError, match="mode 0600"):
        SimulatedRoot.load_or_create(tmp_path / "tee")


def test_trusted_roots_hold_the_simulated_root_only_while_settings_allow_it(settings, tmp_path):
    settings.TEE_SIMULATED_ROOT_DIR = tmp_path / "tee"
    settings.TEE_ALLOW_SIMULATED = True
    simulated = SimulatedRoot.load_or_create(tmp_path / "tee")

    allowed = [cert.fingerprint(hashes.SHA256()).hex() for cert in trusted_roots(tee_config())]
    assert allowed == [AWS_NITRO_ROOT_G1_SHA256, simulated.sha256]

    settings.TEE_ALLOW_SIMULATED = False
    production = trusted_roots(tee_config())
    assert [cert.fingerprint(hashes.SHA256()).hex() for cert in production] == [
        AWS_NITRO_ROOT_G1_SHA256
    ]
    with pytest.raises(AttestationError, match="does not lead to a trusted root"):
        verify_attestation(
            simulated_document(SimulatedEnclave(simulated)), trusted_roots=production, at=now()
        )


def test_the_deploy_check_refuses_a_simulated_tee(settings):
    settings.TEE_ALLOW_SIMULATED = True

    errors = [m for m in run_checks(include_deployment_checks=True) if m.id == "cleanroom.E001"]

    assert len(errors) == 1
    assert "not hardware backed" in errors[0].msg
    assert "production must not trust it" in errors[0].msg
    with pytest.raises(SystemCheckError, match=r"cleanroom\.E001"):
        call_command("check", deploy=True, tags=[Tags.security])


def test_the_deploy_check_passes_when_the_simulated_tee_is_off(settings):
    settings.TEE_ALLOW_SIMULATED = False

    ids = {m.id for m in run_checks(include_deployment_checks=True, tags=[Tags.security])}

    assert "cleanroom.E001" not in ids


def test_the_simulated_tee_is_only_a_deploy_check(settings):
    settings.TEE_ALLOW_SIMULATED = True

    assert "cleanroom.E001" not in {m.id for m in run_checks(include_deployment_checks=False)}


def test_a_malformed_measurement_allow_list_is_a_check_error(settings):
    settings.TEE_MEASUREMENT_ALLOWLIST = ["not-hex"]

    assert "cleanroom.E002" in {m.id for m in run_checks(tags=[Tags.security])}


# --- Bindings, measurements and the allow-list format ---------------------------------------------


def test_the_binding_names_the_job_and_the_query_digest_canonically():
    assert binding(7, DIGEST) == f"cleanroom-job/v1\n7\n{DIGEST}\n".encode()
    assert binding(7, DIGEST) != binding(8, DIGEST)
    for job, digest in ((-1, DIGEST), (True, DIGEST), (7, DIGEST.upper()), (7, "abc")):
        with pytest.raises(ValueError):
            binding(job, digest)


def test_measure_gives_sha384_pcrs_that_change_with_the_enclave_code(tmp_path):
    first, second = tmp_path / "enclave.py", tmp_path / "plan.py"
    first.write_text("print('enclave')\n")
    second.write_text("PLAN = 1\n")

    pcrs = measure([first, second])

    assert sorted(pcrs) == [0, 1, 2]
    assert all(len(value) == 48 for value in pcrs.values())
    expected = hashlib.sha384(
        hashlib.sha384(first.read_bytes()).digest() + hashlib.sha384(second.read_bytes()).digest()
    ).digest()
    assert pcrs[0] == expected
    assert measure([first, second]) == pcrs
    assert measure([second, first])[0] != pcrs[0]
    second.write_text("PLAN = 2\n")
    changed = measure([first, second])
    assert changed[0] != pcrs[0]
    assert changed[1] == pcrs[1]


def test_measurements_attested_by_the_simulated_enclave_pass_their_own_allow_list(tmp_path, root):
    code = tmp_path / "enclave.py"
    code.write_text("print('enclave')\n")
    pcrs = measure([code])
    document = SimulatedEnclave(root).attest(pcrs=pcrs, public_key=None, user_data=None, nonce=None)

    verified = verify_attestation(
        document, trusted_roots=[root.certificate], at=now(), allowed_measurements=[pcrs]
    )
    assert verified.user_data is None and verified.public_key is None
    code.write_text("print('patched enclave')\n")
    with pytest.raises(AttestationError, match="not on the allow-list"):
        verify_attestation(
            document,
            trusted_roots=[root.certificate],
            at=now(),
            allowed_measurements=[measure([code])],
        )


def test_the_allow_list_reads_bare_pcr0_values_and_named_registers(settings):
    pcr0, pcr1 = "ab" * 48, "cd" * 48
    settings.TEE_MEASUREMENT_ALLOWLIST = [pcr0, f"PCR0={pcr0}+PCR1={pcr1}"]

    assert configured_measurements(tee_config()) == [
        {0: bytes.fromhex(pcr0)},
        {0: bytes.fromhex(pcr0), 1: bytes.fromhex(pcr1)},
    ]
    assert parse_measurements(f"{pcr0},{pcr1}") == [
        {0: bytes.fromhex(pcr0)},
        {0: bytes.fromhex(pcr1)},
    ]
    for malformed in ("ab", f"PCR32={pcr0}", f"PCR1={pcr0}+PCR1={pcr1}", "PCR0=xyz"):
        with pytest.raises(ValueError, match="malformed measurement"):
            parse_measurements([malformed])
