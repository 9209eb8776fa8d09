"""The simulated TEE, NOT hardware backed: a per-deployment root CA and an enclave that attests
under it, in exactly the Nitro format that verify.py checks.

`SimulatedRoot.load_or_create(directory)` keeps a P-384 root CA named
`SIMULATED TEE - NOT HARDWARE BACKED`; `SimulatedEnclave(root).attest(...)` issues a fresh
three-hour leaf under it and signs a document. Documents that chain to it come out of the
verifier with kind "simulated"; the host's trust configuration (jobs/engines/tee/trust.py)
includes its root only while settings.TEE_ALLOW_SIMULATED is true, and `check --deploy` refuses
that setting (cleanroom.E001).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)
from cryptography.x509.oid import NameOID

from cleanroom.attestation.verify import (
    COSE_ALG_ES384,
    MAX_NONCE_BYTES,
    MAX_PCR_INDEX,
    MAX_PUBLIC_KEY_BYTES,
    MAX_USER_DATA_BYTES,
    NITRO_PCR_COUNT,
    PCR_LENGTH,
    SIMULATED_ROOT_CN,
    is_simulated_root,
    sha256_der,
)

SIMULATED_ROOT_ORG = "cleanroom simulated TEE"


SIMULATED_LEAF_LIFETIME = timedelta(hours=3)


SIMULATED_ROOT_LIFETIME = timedelta(days=3650)


def _now() -> datetime:
    return datetime.now(UTC)


class SimulatedRoot:
    """A per-deployment P-384 root CA for simulated enclaves, kept as two files in a directory:
    the private key (mode 0600) and the certificate. NOT hardware backed: anyone who can read
    the key can forge documents, which is why production settings never trust it."""

    KEY_FILE = "simulated-root.key"
    CERT_FILE = "simulated-root.pem"

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey):
        if certificate.public_key() != private_key.public_key():
            raise ValueError("the simulated root's key does not match its certificate")
        if not is_simulated_root(certificate):
            raise ValueError(f"a simulated root must be named {SIMULATED_ROOT_CN!r}")
        self.certificate = certificate
        self._private_key = private_key

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return sha256_der(self.certificate)

    @classmethod
    def generate(cls, *, now: datetime | None = None) -> SimulatedRoot:
        """A fresh root in memory (load_or_create persists one)."""
        now = now or _now()
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, SIMULATED_ROOT_CN),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIMULATED_ROOT_ORG),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + SIMULATED_ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA384())
        )
        return cls(certificate, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> SimulatedRoot:
        """This deployment's root: loaded from `directory`, or made there on first use. Safe
        against concurrent processes (an exclusive lock while creating)."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, cert_path = directory / cls.KEY_FILE, directory / cls.CERT_FILE
        with open(directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if key_path.exists() and cert_path.exists():
                return cls._load(key_path, cert_path)
            root = cls.generate()
            _write_atomically(
                key_path,
                root._private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                mode=0o600,
            )
            _write_atomically(
                cert_path, root.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644
            )
            return root

    @classmethod
    def _load(cls, key_path: Path, cert_path: Path) -> SimulatedRoot:
        if key_path.stat().st_mode & 0o077:
            raise PermissionError(f"{key_path} is readable by others; it must be mode 0600")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP384R1
        ):
            raise ValueError(f"{key_path} is not a P-384 private key")
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)

    def issue_leaf(
        self, public_key: ec.EllipticCurvePublicKey, common_name: str, now: datetime
    ) -> x509.Certificate:
        not_after = min(now + SIMULATED_LEAF_LIFETIME, self.certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIMULATED_ROOT_ORG),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                # The certificate's key (__init__ checks they match), typed as the EC key it is.
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._private_key.public_key()),
                critical=False,
            )
            .sign(self._private_key, hashes.SHA384())
        )


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class SimulatedEnclave:
    """Attests like a Nitro enclave, under a simulated root: each document gets a fresh leaf key
    and a short-lived leaf certificate, and cabundle is [root]."""

    def __init__(self, root: SimulatedRoot, *, module_id: str | None = None) -> None:
        self.root = root
        self.module_id = module_id or f"sim-{secrets.token_hex(8)}"

    def attest(
        self,
        *,
        pcrs: Mapping[int, bytes],
        public_key: bytes | None,
        user_data: bytes | None,
        nonce: bytes | None,
        now: datetime | None = None,
    ) -> bytes:
        """A signed document in the Nitro format; PCRs 0..15 not given are 48 zero bytes."""
        for index, value in pcrs.items():
            if type(index) is not int or not 0 <= index <= MAX_PCR_INDEX:
                raise ValueError(f"PCR index {index!r} is outside 0..{MAX_PCR_INDEX}")
            if len(value) != PCR_LENGTH:
                raise ValueError(f"PCR{index} must be {PCR_LENGTH} bytes")
        for name, field, limit in (
            ("public_key", public_key, MAX_PUBLIC_KEY_BYTES),
            ("user_data", user_data, MAX_USER_DATA_BYTES),
            ("nonce", nonce, MAX_NONCE_BYTES),
        ):
            if field is not None and len(field) > limit:
                raise ValueError(f"{name} is limited to {limit} bytes")
        now = now or _now()
        registers = dict.fromkeys(range(NITRO_PCR_COUNT), bytes(PCR_LENGTH))
        registers.update({index: bytes(value) for index, value in pcrs.items()})
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        leaf = self.root.issue_leaf(leaf_key.public_key(), f"{self.module_id}.simulated", now)
        payload = cbor2.dumps(
            {
                "module_id": self.module_id,
                "digest": "SHA384",
                "timestamp": int(now.timestamp() * 1000),
                "pcrs": dict(sorted(registers.items())),
                "certificate": leaf.public_bytes(serialization.Encoding.DER),
                "cabundle": [self.root.der],
                "public_key": None if public_key is None else bytes(public_key),
                "user_data": None if user_data is None else bytes(user_data),
                "nonce": None if nonce is None else bytes(nonce),
            }
        )
        protected = cbor2.dumps({1: COSE_ALG_ES384})
        sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
        r, s = decode_dss_signature(leaf_key.sign(sig_structure, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(PCR_LENGTH, "big") + s.to_bytes(PCR_LENGTH, "big")
        return cbor2.dumps([protected, {}, payload, signature])
