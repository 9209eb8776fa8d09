"""What an attestation verifier is told to trust: the pinned AWS Nitro root, measurement
allow-lists, and the measurements of the simulated enclave.

Measurements of the simulated enclave (`measure(paths)`), mirroring Nitro's PCR0..2 roles:
  PCR0  the enclave image: SHA-384 over the concatenated SHA-384 digests of the files' contents,
        in the order given (the caller keeps one fixed list);
  PCR1  the runtime: SHA-384 over `runtime_description()` (Python implementation and version, and
        the versions of the libraries the enclave runs on);
  PCR2  the layout: SHA-384 over the files' base names in the same order, one per line.
A document carries PCRs 0..15 as Nitro does; indices measure() does not set are 48 zero bytes.
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path

from cryptography import x509

from cleanroom.attestation.verify import MAX_PCR_INDEX, PCR_LENGTH, sha256_der

# AWS Nitro Enclaves Root-G1, from https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip
# (it is also cabundle[0] of every genuine document). Pinned by its SHA-256 over DER.
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


AWS_NITRO_ROOT_G1_PEM = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""


# What PCR1 of the simulated enclave measures besides the interpreter.
MEASURED_DISTRIBUTIONS = ("cbor2", "cryptography", "opendp", "polars")


def runtime_description() -> str:
    """What PCR1 of the simulated enclave measures: the interpreter and the library versions."""
    lines = [f"python {sys.implementation.name} {platform.python_version()}"]
    for name in MEASURED_DISTRIBUTIONS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def measure(paths: Sequence[Path]) -> dict[int, bytes]:
    """PCR-style SHA-384 measurements of the enclave code (PCR0..2, see the module docstring)."""
    if not paths:
        raise ValueError("measure() needs the enclave's files")
    digests = []
    for path in paths:
        with open(path, "rb") as handle:
            digests.append(hashlib.file_digest(handle, "sha384").digest())
    layout = "".join(f"{Path(path).name}\n" for path in paths)
    return {
        0: hashlib.sha384(b"".join(digests)).digest(),
        1: hashlib.sha384(runtime_description().encode()).digest(),
        2: hashlib.sha384(layout.encode()).digest(),
    }


def parse_measurements(items: str | Iterable[str]) -> list[dict[int, bytes]]:
    """Parse an allow-list: a list of entries (or one string of entries separated by commas,
    as the environment gives it). An entry is a bare hex value, meaning PCR0, or
    "PCR0=<hex>+PCR1=<hex>..." naming several registers that must all match. Raises ValueError
    naming the first malformed part."""
    if isinstance(items, str):
        items = items.split(",")
    entries: list[dict[int, bytes]] = []
    for item in items:
        if not item.strip():
            continue
        entry: dict[int, bytes] = {}
        for part in item.split("+"):
            match = re.fullmatch(r"\s*(?:(?:PCR)?(\d{1,2})\s*=)?\s*([0-9a-fA-F]+)\s*", part)
            if match is None or len(match[2]) != 2 * PCR_LENGTH:
                raise ValueError(
                    f"malformed measurement {part.strip()!r}: want <hex> for PCR0 or "
                    f"PCR<n>=<hex>, each {PCR_LENGTH} bytes"
                )
            index = int(match[1] or 0)
            if index > MAX_PCR_INDEX or index in entry:
                raise ValueError(
                    f"malformed measurement {part.strip()!r}: PCR indices are 0..{MAX_PCR_INDEX}, "
                    "each at most once per entry"
                )
            entry[index] = bytes.fromhex(match[2])
        entries.append(entry)
    return entries


@cache
def aws_nitro_root() -> x509.Certificate:
    """The pinned AWS Nitro Enclaves Root-G1 certificate."""
    certificate = x509.load_pem_x509_certificate(AWS_NITRO_ROOT_G1_PEM)
    if sha256_der(certificate) != AWS_NITRO_ROOT_G1_SHA256:  # pragma: no cover - tampering
        raise RuntimeError("the embedded AWS Nitro root does not match its pinned fingerprint")
    return certificate
