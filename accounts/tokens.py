"""API token secrets: made from the operating system's randomness, kept only as SHA-256.

A token is `crt_<prefix>_<secret>`: 32 random bytes of secret (256 bits) and a random 8-hex-digit
prefix that names it. A slow password hash (PBKDF2, Argon2) protects secrets people choose,
which can be guessed; nobody can guess 256 random bits, so one SHA-256 is as strong here, and
it lets each request find its token by an indexed lookup of the digest instead of trying a slow
hash against every token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

SCHEME = "crt"


@dataclass(frozen=True)
class NewSecret:
    secret: str  # shown to its owner once, never stored
    prefix: str
    digest: str


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> NewSecret:
    prefix = secrets.token_hex(4)
    secret = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewSecret(secret=secret, prefix=prefix, digest=digest_of(secret))
