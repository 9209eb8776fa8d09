"""Key-encryption keys in a PKCS#11 token: AES-256, generated inside the token, never extractable;
and receiving keys (P-256, private half sensitive and never extractable) that results and MPC
output shares are sealed to, opened by key agreement inside the token. A data key is wrapped
with AES-GCM inside the token, its context (dataset, version, content digest) as associated
data, so a wrapped key opens only for what it was made for; destroying a KEK makes everything it
wrapped unreadable, wherever copies went."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import KDF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
_NONCE = 12
# The receiving key pair made ahead for the next job's delivery (Token.make_spare); no purpose
# the API accepts names it.
SPARE = "spare-receiving-key"


class TokenError(Exception):
    """The token refused: unknown key, or a wrapped key that does not match its key or context."""


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def keep_private(state: Path) -> None:
    """The state folder is the key service's user's alone (0700): its token, PIN, pinned trust
    and logs are no other process's to read, the platform's web tier and workers included,
    whatever the modes of the files inside."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)


def init_softhsm(state: Path, label: str) -> str:
    """A SoftHSM2 token of its own in `state` (its configuration and token folder there);
    returns the user PIN, which only the key service's state folder holds."""
    keep_private(state)
    tokens = state / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = state / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    pin = secrets.token_hex(16)
    # A fixed program, arguments of our own making.
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(16),
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(config)},
        check=True,
        capture_output=True,
    )
    pin_file = state / "token.pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    return pin


class Token:
    """One organisation's token. SOFTHSM2_CONF must name the token's configuration before the
    library loads, so a process holds one organisation's token (the key service's own).

    The process logs in once and keeps that session: a login per request costs milliseconds,
    and SoftHSM2's file store reads every object of the token on each search, so each key is
    looked up once and kept by label (a long-lived token holds a KEK per dataset version). A
    PKCS#11 session is not for concurrent use: one lock serialises the token's operations, each
    well under a millisecond. A spare receiving key pair, made ahead, becomes the next job's
    delivery key by taking its label, so a job's start never waits for a key generation."""

    def __init__(self, state: Path, label: str, library: str = SOFTHSM):
        os.environ["SOFTHSM2_CONF"] = str(state / "softhsm2.conf")
        token = pkcs11.lib(library).get_token(token_label=label)
        try:
            self._session = token.open(user_pin=(state / "token.pin").read_text(), rw=True)
        except pkcs11.UserAlreadyLoggedIn:  # another Token of this process logged in
            self._session = token.open(rw=True)
        self._lock = threading.RLock()
        self._found: dict[tuple[ObjectClass, str], Any] = {}

    def _find(self, kind: ObjectClass, label: str):
        """The key `label` of `kind`; pkcs11.NoSuchKey if the token has none."""
        if (kind, label) not in self._found:
            self._found[kind, label] = self._session.get_key(object_class=kind, label=label)
        return self._found[kind, label]

    def _forget(self, label: str) -> None:
        for found in [found for found in self._found if found[1] == label]:
            del self._found[found]

    def create_key(self) -> str:
        kek_id = f"kek-{secrets.token_hex(16)}"
        with self._lock:
            self._session.generate_key(
                KeyType.AES,
                256,
                label=kek_id,
                store=True,
                template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
            )
        return kek_id

    def _key(self, kek_id: str):
        try:
            return self._find(ObjectClass.SECRET_KEY, kek_id)
        except pkcs11.NoSuchKey:
            raise TokenError(f"unknown key {kek_id}") from None

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes:
        nonce = os.urandom(_NONCE)
        with self._lock:
            sealed = self._key(kek_id).encrypt(
                data_key,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, _aad(context)),
            )
        return nonce + sealed

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes:
        with self._lock:
            key = self._key(kek_id)
            try:
                return key.decrypt(
                    wrapped[_NONCE:],
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(wrapped[:_NONCE], _aad(context)),
                )
            except pkcs11.PKCS11Error:
                raise TokenError("wrapped key does not match its key or context") from None

    def _generate_pair(self, label: str):
        curve = self._session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        public, _ = curve.generate_keypair(
            store=True,
            label=label,
            private_template={
                Attribute.EXTRACTABLE: False,
                Attribute.SENSITIVE: True,
                Attribute.DERIVE: True,
            },
        )
        return public

    def make_spare(self) -> None:
        """Make the spare receiving key pair, unless there is one: never asked for, its public
        half never given out."""
        with self._lock:
            try:
                self._find(ObjectClass.PUBLIC_KEY, SPARE)
            except pkcs11.NoSuchKey:
                self._generate_pair(SPARE)

    def receiving_key(self, label: str) -> bytes:
        """The public point of the receiving key `label`: made on first use from the spare pair
        (relabelled), or generated in the token if there is no spare."""
        with self._lock:
            try:
                public = self._find(ObjectClass.PUBLIC_KEY, label)
            except pkcs11.NoSuchKey:
                try:
                    public = self._find(ObjectClass.PUBLIC_KEY, SPARE)
                except pkcs11.NoSuchKey:
                    public = self._generate_pair(label)
                else:
                    private = self._find(ObjectClass.PRIVATE_KEY, SPARE)
                    for key in (public, private):
                        key[Attribute.LABEL] = label
                    self._forget(SPARE)
                    # The next spare is made while this answer travels, not when it is asked.
                    threading.Thread(target=self.make_spare, daemon=True).start()
            # EC_POINT is the DER encoding of an OCTET STRING holding the point.
            return bytes(public[Attribute.EC_POINT])[2:]

    def agree(self, label: str, peer: bytes) -> bytes:
        """ECDH of the receiving key with `peer`, inside the token; only the shared secret of
        this one sealing leaves it."""
        with self._lock:
            try:
                private = self._find(ObjectClass.PRIVATE_KEY, label)
            except pkcs11.NoSuchKey:
                raise KeyError(f"unknown receiving key {label}") from None
            shared = private.derive_key(
                KeyType.GENERIC_SECRET,
                256,
                mechanism_param=(KDF.NULL, None, peer),
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            return bytes(shared[Attribute.VALUE])

    def destroy_receiving_key(self, label: str) -> None:
        with self._lock:
            self._forget(label)
            for kind in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for key in self._session.get_objects(
                    {Attribute.CLASS: kind, Attribute.LABEL: label}
                ):
                    key.destroy()

    def destroy_key(self, kek_id: str) -> None:
        """Delete the KEK from the token; deleting twice is harmless."""
        with self._lock, contextlib.suppress(TokenError):
            key = self._key(kek_id)
            self._forget(kek_id)
            key.destroy()

    def key_value_readable(self, label: str) -> bool:
        """Whether anyone with the token's PIN can read the value of a KEK or of a receiving
        key's private half (never)."""
        with self._lock:
            for kind in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
                objects = self._session.get_objects({Attribute.CLASS: kind, Attribute.LABEL: label})
                for key in objects:
                    try:
                        key[Attribute.VALUE]
                    except (pkcs11.AttributeSensitive, pkcs11.AttributeTypeInvalid):
                        continue
                    return True
            return False
