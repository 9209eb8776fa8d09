"""Attestation of enclaves: AWS Nitro Enclaves documents, from hardware or from the simulated TEE.

The document (the AWS Nitro format, which the simulated attestor here also produces):

    COSE_Sign1 = [protected: bstr, unprotected: {}, payload: bstr, signature: bstr]   (untagged
    or CBOR tag 18), protected = CBOR {1: -35} (ES384), signature = raw r || s (96 bytes) over
    the COSE Sig_structure ["Signature1", protected, b"", payload] with SHA-384 and P-384.
    payload = CBOR {module_id: tstr, digest: "SHA384", timestamp: uint (ms since the epoch),
                    pcrs: {index: bstr(48)}, certificate: leaf DER,
                    cabundle: [root DER, intermediate DER, ..., the leaf's issuer DER],
                    public_key: bstr / null, user_data: bstr / null, nonce: bstr / null}

`verify_attestation` is the one verifier for both kinds; only the trusted root differs. It checks,
and refuses with an `AttestationError` naming the first failure:
  1. the envelope: strict CBOR (definite lengths, no duplicate keys, no tags inside, no trailing
     bytes), alg ES384 alone in the protected header, an empty unprotected header (nothing
     unsigned rides along), a 96-byte signature, exactly the payload fields above;
  2. the COSE signature under the leaf certificate's P-384 key;
  3. the chain leaf -> cabundle[-1] -> ... -> cabundle[1] -> cabundle[0], where cabundle[0] must
     be byte for byte one of the trusted roots (the bundle's own root is never trusted on its
     say). Each link: issuer name = subject name, the ECDSA signature under the issuer's key,
     issuers are CAs (basic constraints, key usage keyCertSign, path length), the leaf is not a
     CA, no unknown critical extension, every certificate valid at `at`. This is done with
     `cryptography` primitives rather than its web-PKI verifier, which rejects the genuine AWS
     leaf for its missing AuthorityKeyIdentifier;
  4. the content: digest "SHA384", 48-byte PCRs, the timestamp inside the leaf's validity and
     not after `at` (beyond a small clock skew), and no older than `max_age` when given;
  5. policy: the PCRs match one allow-list entry on every index it names, and user_data equals
     the expected binding (`binding(job, query digest)`), when these are given.

The trust configuration it is given (the pinned AWS root, measurement allow-lists, what the
simulated enclave measures) is in trust.py; the simulated root and enclave in simulated.py.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature,
)
from cryptography.x509.oid import ExtensionOID, NameOID

from cleanroom.attestation.binding import BINDING_PREFIX

SIMULATED_ROOT_CN = "SIMULATED TEE - NOT HARDWARE BACKED"


COSE_ALG_ES384 = -35


PCR_LENGTH = 48


NITRO_PCR_COUNT = 16


MAX_PCR_INDEX = 31


MAX_DOCUMENT_BYTES = 64 * 1024


# Field size limits of the Nitro format.
MAX_PUBLIC_KEY_BYTES = 1024


MAX_USER_DATA_BYTES = 512


MAX_NONCE_BYTES = 512


CLOCK_SKEW = timedelta(minutes=5)


_TAG_18 = b"\xd2"  # CBOR tag 18 (COSE_Sign1), one byte


_PAYLOAD_FIELDS = frozenset(
    {"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"}
    | {"public_key", "user_data", "nonce"}
)


_REQUIRED_FIELDS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")


# Tags cbor2 decodes into Python objects by itself (dates, bignums, regexes, shared values...).
# A Nitro document has none: every one of them is refused, as is any other tag.
_SEMANTIC_TAGS = frozenset(
    {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260}
    | {261, 1004, 43000, 55799}
)


_UNDERSTOOD_CRITICAL = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})


_CERT_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AttestationError(Exception):
    """The evidence does not prove what it must; `reason` says exactly what failed.

    `code` groups reasons for callers and the audit: format, signature, chain, untrusted_root,
    expired, stale, measurement, binding."""

    def __init__(self, reason: str, *, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class VerifiedAttestation:
    """What a verified document proves. `kind` is "simulated" when it chains to a simulated root."""

    kind: Literal["hardware", "simulated"]
    module_id: str
    timestamp: datetime
    pcrs: dict[int, bytes]
    user_data: bytes | None
    public_key: bytes | None
    nonce: bytes | None
    evidence_sha256: str
    root_sha256: str

    @property
    def simulated(self) -> bool:
        return self.kind == "simulated"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record (hex bytes) for the job, the API and the audit."""

        def hexed(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        return {
            "kind": self.kind,
            "module_id": self.module_id,
            "timestamp": self.timestamp.isoformat(),
            "pcrs": {str(index): value.hex() for index, value in sorted(self.pcrs.items())},
            "user_data": hexed(self.user_data),
            "public_key": hexed(self.public_key),
            "nonce": hexed(self.nonce),
            "evidence_sha256": self.evidence_sha256,
            "root_sha256": self.root_sha256,
        }


def verify_attestation(
    document: bytes,
    *,
    trusted_roots: Sequence[x509.Certificate],
    at: datetime,
    allowed_measurements: Collection[Mapping[int, bytes]] | None = None,
    expected_user_data: bytes | None = None,
    max_age: timedelta | None = None,
) -> VerifiedAttestation:
    """Verify an attestation document (see the module docstring) at time `at`, or raise
    AttestationError. `allowed_measurements` None skips the measurement check and an empty
    collection allows nothing; an empty entry matches nothing."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("`at` must be timezone-aware")
    if not isinstance(document, bytes | bytearray | memoryview):
        raise AttestationError("the document is not bytes", code="format")
    evidence = bytes(document)
    if len(evidence) > MAX_DOCUMENT_BYTES:
        raise AttestationError(
            f"the document is {len(evidence)} bytes, over the limit of {MAX_DOCUMENT_BYTES}",
            code="format",
        )

    protected, payload_bytes, signature = _parse_envelope(evidence)
    payload = _parse_payload(payload_bytes)
    leaf = _load_certificate(payload["certificate"], "the leaf certificate")
    _verify_cose_signature(leaf, protected, payload_bytes, signature)
    root = _verify_chain(leaf, payload["cabundle"], trusted_roots, at)

    if payload["digest"] != "SHA384":
        raise AttestationError(
            f"the document's digest is {payload['digest']!r}, not 'SHA384'", code="format"
        )
    pcrs: dict[int, bytes] = payload["pcrs"]
    for index, value in sorted(pcrs.items()):
        if len(value) != PCR_LENGTH:
            raise AttestationError(
                f"PCR{index} is {len(value)} bytes, not {PCR_LENGTH} (SHA-384)", code="format"
            )
    timestamp = _timestamp(payload["timestamp"])
    if not leaf.not_valid_before_utc <= timestamp <= leaf.not_valid_after_utc:
        raise AttestationError(
            f"the document's timestamp {timestamp.isoformat()} lies outside its leaf "
            f"certificate's validity ({leaf.not_valid_before_utc.isoformat()} to "
            f"{leaf.not_valid_after_utc.isoformat()})",
            code="format",
        )
    if timestamp > at + CLOCK_SKEW:
        raise AttestationError(
            f"the document is dated {timestamp.isoformat()}, after the verification time "
            f"{at.isoformat()}",
            code="stale",
        )
    if max_age is not None and at - timestamp > max_age:
        raise AttestationError(
            f"the document was made at {timestamp.isoformat()}, more than {max_age} before "
            f"{at.isoformat()}",
            code="stale",
        )

    if allowed_measurements is not None:
        _check_measurements(pcrs, allowed_measurements)
    user_data: bytes | None = payload.get("user_data")
    if expected_user_data is not None and (
        user_data is None or not hmac.compare_digest(user_data, bytes(expected_user_data))
    ):
        raise AttestationError(
            "the document is bound to other user data (another job or query?): expected "
            f"{_show(expected_user_data)}, found {_show(user_data)}",
            code="binding",
        )

    return VerifiedAttestation(
        kind="simulated" if is_simulated_root(root) else "hardware",
        module_id=payload["module_id"],
        timestamp=timestamp,
        pcrs=dict(sorted(pcrs.items())),
        user_data=user_data,
        public_key=payload.get("public_key"),
        nonce=payload.get("nonce"),
        evidence_sha256=hashlib.sha256(evidence).hexdigest(),
        root_sha256=sha256_der(root),
    )


def _refuse_semantic_tag(value: Any, immutable: bool) -> Any:
    raise ValueError("CBOR tags are not allowed in an attestation document")


def _refuse_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed in an attestation document")


def _decode(data: bytes, what: str) -> Any:
    """Strict CBOR: one definite-length item, no duplicate keys, no tags, no trailing bytes."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            semantic_decoders=dict.fromkeys(_SEMANTIC_TAGS, _refuse_semantic_tag),
            max_depth=4,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, EOFError) as exc:
        raise AttestationError(f"{what} is not valid CBOR: {exc}", code="format") from None
    if stream.tell() != len(data):
        raise AttestationError(
            f"{what} has {len(data) - stream.tell()} trailing bytes after its CBOR item",
            code="format",
        )
    return value


def _parse_envelope(evidence: bytes) -> tuple[bytes, bytes, bytes]:
    data = evidence[1:] if evidence[:1] == _TAG_18 else evidence
    envelope = _decode(data, "the document")
    if not isinstance(envelope, list) or len(envelope) != 4:
        raise AttestationError(
            "the document is not a COSE_Sign1 array of four items", code="format"
        )
    protected, unprotected, payload, signature = envelope
    if not isinstance(protected, bytes):
        raise AttestationError("the COSE protected header is not a byte string", code="format")
    if not isinstance(unprotected, dict) or unprotected:
        raise AttestationError(
            "the COSE unprotected header is not an empty map (nothing may ride along unsigned)",
            code="format",
        )
    if not isinstance(payload, bytes):
        raise AttestationError("the COSE payload is not a byte string", code="format")
    if not isinstance(signature, bytes) or len(signature) != 2 * PCR_LENGTH:
        raise AttestationError(
            "the COSE signature is not a 96-byte ES384 signature (r || s)", code="format"
        )
    header = _decode(protected, "the COSE protected header")
    if (
        not isinstance(header, dict)
        or list(header) != [1]
        or type(next(iter(header))) is not int
        or type(header[1]) is not int
        or header[1] != COSE_ALG_ES384
    ):
        raise AttestationError(
            f"the COSE protected header is {header!r}, not {{1: -35}} (alg ES384 alone)",
            code="format",
        )
    return protected, payload, signature


def _optional_bytes(payload: dict[str, Any], name: str, limit: int) -> None:
    value = payload.get(name)
    if value is not None and (not isinstance(value, bytes) or len(value) > limit):
        raise AttestationError(
            f"the document's {name} is not a byte string of at most {limit} bytes", code="format"
        )


def _parse_payload(payload_bytes: bytes) -> dict[str, Any]:
    payload = _decode(payload_bytes, "the COSE payload")
    if not isinstance(payload, dict):
        raise AttestationError("the COSE payload is not a map", code="format")
    unknown = sorted(repr(key) for key in payload if key not in _PAYLOAD_FIELDS)
    if unknown:
        raise AttestationError(
            f"the document has unknown fields: {', '.join(unknown)}", code="format"
        )
    missing = [name for name in _REQUIRED_FIELDS if name not in payload]
    if missing:
        raise AttestationError(f"the document lacks {', '.join(missing)}", code="format")
    if not isinstance(payload["module_id"], str) or not payload["module_id"]:
        raise AttestationError("the document's module_id is not a non-empty text", code="format")
    if not isinstance(payload["digest"], str):
        raise AttestationError("the document's digest is not a text", code="format")
    if type(payload["timestamp"]) is not int or payload["timestamp"] <= 0:
        raise AttestationError("the document's timestamp is not a positive integer", code="format")
    pcrs = payload["pcrs"]
    if (
        not isinstance(pcrs, dict)
        or not pcrs
        or not all(
            type(index) is int and 0 <= index <= MAX_PCR_INDEX and isinstance(value, bytes)
            for index, value in pcrs.items()
        )
    ):
        raise AttestationError(
            f"the document's pcrs are not a map of indices 0..{MAX_PCR_INDEX} to byte strings",
            code="format",
        )
    if not isinstance(payload["certificate"], bytes):
        raise AttestationError("the document's certificate is not a byte string", code="format")
    bundle = payload["cabundle"]
    if (
        not isinstance(bundle, list)
        or not bundle
        or not all(isinstance(der, bytes) for der in bundle)
    ):
        raise AttestationError(
            "the document's cabundle is not a non-empty list of certificates", code="format"
        )
    _optional_bytes(payload, "public_key", MAX_PUBLIC_KEY_BYTES)
    _optional_bytes(payload, "user_data", MAX_USER_DATA_BYTES)
    _optional_bytes(payload, "nonce", MAX_NONCE_BYTES)
    return payload


def _load_certificate(der: bytes, label: str) -> x509.Certificate:
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.extensions  # noqa: B018 - parse them now, so a malformed one fails here
    except Exception as exc:  # malformed input in any of the ways cryptography reports
        raise AttestationError(f"{label} cannot be parsed: {exc}", code="chain") from None
    return certificate


def _name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if names else certificate.subject.rfc4514_string()
    return f"'{common_name!s}'"


def _ec_public_key(certificate: x509.Certificate) -> ec.EllipticCurvePublicKey | None:
    """The certificate's key when it is an elliptic-curve key cryptography can load, else None."""
    try:
        key = certificate.public_key()
    except Exception:  # an unknown key type or curve
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def sha256_der(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _verify_cose_signature(
    leaf: x509.Certificate, protected: bytes, payload: bytes, signature: bytes
) -> None:
    key = _ec_public_key(leaf)
    if key is None or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError(
            f"the leaf certificate {_name(leaf)} does not hold a P-384 key (ES384 needs one)",
            code="signature",
        )
    r = int.from_bytes(signature[:PCR_LENGTH], "big")
    s = int.from_bytes(signature[PCR_LENGTH:], "big")
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    try:
        key.verify(encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise AttestationError(
            "the COSE signature does not verify under the leaf certificate's key "
            "(the document was altered or not signed by that enclave)",
            code="signature",
        ) from None


def _check_validity(certificate: x509.Certificate, label: str, at: datetime) -> None:
    if at < certificate.not_valid_before_utc:
        raise AttestationError(
            f"{label} {_name(certificate)} is not valid before "
            f"{certificate.not_valid_before_utc.isoformat()} (checked at {at.isoformat()})",
            code="expired",
        )
    if at > certificate.not_valid_after_utc:
        raise AttestationError(
            f"{label} {_name(certificate)} expired at "
            f"{certificate.not_valid_after_utc.isoformat()} (checked at {at.isoformat()})",
            code="expired",
        )


def _extension(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> Any:
    try:
        return certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _check_critical_extensions(certificate: x509.Certificate, label: str) -> None:
    for extension in certificate.extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD_CRITICAL:
            raise AttestationError(
                f"{label} {_name(certificate)} has an unknown critical extension "
                f"{extension.oid.dotted_string}",
                code="chain",
            )


def _verify_issued_by(
    child: x509.Certificate,
    child_label: str,
    issuer: x509.Certificate,
    issuer_label: str,
    intermediates_below: int,
) -> None:
    if child.issuer != issuer.subject:
        raise AttestationError(
            f"{child_label} {_name(child)} names issuer {child.issuer.rfc4514_string()!r}, "
            f"but the next certificate in the chain is {issuer.subject.rfc4514_string()!r}",
            code="chain",
        )
    constraints = _extension(issuer, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None or not constraints.ca:
        raise AttestationError(
            f"{issuer_label} {_name(issuer)} is not a CA (basic constraints) but issued "
            f"{child_label}",
            code="chain",
        )
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise AttestationError(
            f"{issuer_label} {_name(issuer)} allows {constraints.path_length} intermediate "
            f"CAs below it, the chain has {intermediates_below}",
            code="chain",
        )
    usage = _extension(issuer, ExtensionOID.KEY_USAGE)
    if usage is not None and not usage.key_cert_sign:
        raise AttestationError(
            f"{issuer_label} {_name(issuer)} may not sign certificates (key usage)", code="chain"
        )
    key = _ec_public_key(issuer)
    try:
        algorithm = child.signature_hash_algorithm
    except Exception:  # an algorithm cryptography does not know
        algorithm = None
    if key is None or not isinstance(algorithm, _CERT_HASHES):
        raise AttestationError(
            f"{child_label} {_name(child)} is not signed with ECDSA and SHA-2 by an EC key",
            code="chain",
        )
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise AttestationError(
            f"the signature on {child_label} {_name(child)} does not verify under the key of "
            f"{issuer_label} {_name(issuer)}",
            code="chain",
        ) from None


def _verify_chain(
    leaf: x509.Certificate,
    bundle: list[bytes],
    trusted: Sequence[x509.Certificate],
    at: datetime,
) -> x509.Certificate:
    """Check leaf -> cabundle reversed -> a trusted root; return that trusted root."""
    root_sha256 = hashlib.sha256(bundle[0]).hexdigest()
    root = next((cert for cert in trusted if sha256_der(cert) == root_sha256), None)
    if root is None:
        raise AttestationError(
            f"the certificate chain does not lead to a trusted root: cabundle[0] "
            f"(SHA-256 {root_sha256}) is none of the {len(trusted)} trusted roots",
            code="untrusted_root",
        )
    # chain[0] is the leaf, chain[-1] the trusted root; chain[i] is issued by chain[i + 1].
    chain = [leaf]
    labels = ["the leaf certificate"]
    for index in range(len(bundle) - 1, 0, -1):
        label = f"cabundle[{index}]"
        chain.append(_load_certificate(bundle[index], label))
        labels.append(label)
    chain.append(root)
    labels.append("the trusted root")

    leaf_constraints = _extension(leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if leaf_constraints is not None and leaf_constraints.ca:
        raise AttestationError(
            f"the leaf certificate {_name(leaf)} is a CA certificate", code="chain"
        )
    leaf_usage = _extension(leaf, ExtensionOID.KEY_USAGE)
    if leaf_usage is not None and not leaf_usage.digital_signature:
        raise AttestationError(
            f"the leaf certificate {_name(leaf)} may not make signatures (key usage)",
            code="chain",
        )
    for certificate, label in zip(chain, labels, strict=True):
        _check_critical_extensions(certificate, label)
        _check_validity(certificate, label, at)
    for position in range(len(chain) - 1):
        _verify_issued_by(
            chain[position],
            labels[position],
            chain[position + 1],
            labels[position + 1],
            intermediates_below=position,
        )
    return root


def _timestamp(milliseconds: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise AttestationError("the document's timestamp is out of range", code="format") from None


def _check_measurements(
    pcrs: Mapping[int, bytes], allowed: Collection[Mapping[int, bytes]]
) -> None:
    def matches(entry: Mapping[int, bytes]) -> bool:
        return bool(entry) and all(
            index in pcrs and hmac.compare_digest(pcrs[index], bytes(value))
            for index, value in entry.items()
        )

    if any(matches(entry) for entry in allowed):
        return
    named = sorted({index for entry in allowed for index in entry}) or [0]
    shown = ", ".join(
        f"PCR{index}={pcrs[index].hex() if index in pcrs else 'absent'}" for index in named
    )
    raise AttestationError(
        f"the enclave's measurements are not on the allow-list ({shown})"
        if allowed
        else f"the measurement allow-list is empty, nothing is allowed ({shown})",
        code="measurement",
    )


def _show(value: bytes | None) -> str:
    if value is None:
        return "none"
    if value.startswith(BINDING_PREFIX):
        try:
            return repr(value.decode("ascii"))
        except UnicodeDecodeError:
            pass
    return value.hex() if len(value) <= 64 else f"{value[:64].hex()}... ({len(value)} bytes)"


def is_simulated_root(certificate: x509.Certificate) -> bool:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(name.value == SIMULATED_ROOT_CN for name in names)
