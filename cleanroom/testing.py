"""`./manage.py test` runs the pytest suite (pytest-django), so there is one way to run tests;
and the software authenticator the tests and the demo stand in for an owner's device with."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class PytestRunner:
    def __init__(
        self,
        verbosity: int = 1,
        failfast: bool = False,
        keepdb: bool = False,
        keyword: str | None = None,
        markers: str | None = None,
        **kwargs,
    ):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb
        # Django's test command hands its options to the runner's constructor, not to run_tests.
        self.selection = {"-k": keyword, "-m": markers}

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Keep the test database.")
        parser.add_argument("-k", dest="keyword", help="Only run tests matching this expression.")
        parser.add_argument("-m", dest="markers", help="Only run tests with these markers.")

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        import pytest

        argv = list(test_labels)
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity > 1:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        for flag, value in self.selection.items():
            if value:
                argv += [flag, value]
        sys.stdout.flush()
        return pytest.main(argv)


class SoftwareAuthenticator:
    """A WebAuthn authenticator in software, for the tests and the demo only: an ES256 key
    pair and a credential id, answering registrations (``none`` attestation) and assertions
    exactly as a browser hands them to the server, user verified. It stands in for an owner's
    device where there is no browser; it is never used by the platform to decide anything,
    and what it signs verifies only because its owner's account registered it."""

    def __init__(
        self,
        *,
        rp_id: str,
        origin: str,
        private_key=None,
        credential_id: bytes | None = None,
        sign_count: int = 0,
    ):

        self.rp_id = rp_id
        self.origin = origin
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.credential_id = credential_id or os.urandom(32)
        self.sign_count = sign_count

    def cose_key(self) -> bytes:

        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _client_data(self, kind: str, challenge: bytes) -> bytes:

        return json.dumps(
            {
                "type": kind,
                "challenge": _b64url(challenge),
                "origin": self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def _authenticator_data(self, flags: int, attested: bytes = b"") -> bytes:

        self.sign_count += 1
        rp_id_hash = hashlib.sha256(self.rp_id.encode()).digest()
        return rp_id_hash + bytes([flags]) + self.sign_count.to_bytes(4, "big") + attested

    def create(self, challenge: bytes) -> dict:
        """The PublicKeyCredential JSON of navigator.credentials.create for `challenge`."""

        attested = (
            bytes(16) + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        ) + self.cose_key()
        data = self._authenticator_data(0x45, attested)  # user present and verified, attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": data})
        return {
            "id": _b64url(self.credential_id),
            "rawId": _b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": _b64url(self._client_data("webauthn.create", challenge)),
                "attestationObject": _b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(self, challenge: bytes) -> dict:
        """The PublicKeyCredential JSON of navigator.credentials.get for `challenge`."""
        client_data = self._client_data("webauthn.get", challenge)
        data = self._authenticator_data(0x05)  # user present and verified
        signature = self.private_key.sign(
            data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": _b64url(self.credential_id),
            "rawId": _b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": _b64url(data),
                "clientDataJSON": _b64url(client_data),
                "signature": _b64url(signature),
                "userHandle": None,
            },
            "clientExtensionResults": {},
        }

    def to_json(self) -> dict:

        return {
            "kind": "software authenticator (demo and tests only)",
            "rp_id": self.rp_id,
            "origin": self.origin,
            "credential_id": base64.b64encode(self.credential_id).decode(),
            "sign_count": self.sign_count,
            "private_key": self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        }

    @classmethod
    def from_json(cls, data: dict) -> SoftwareAuthenticator:

        return cls(
            rp_id=data["rp_id"],
            origin=data["origin"],
            private_key=serialization.load_pem_private_key(data["private_key"].encode(), None),
            credential_id=base64.b64decode(data["credential_id"]),
            sign_count=data["sign_count"],
        )


def _b64url(data: bytes) -> str:

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
