"""Shamir shares of the owners' aggregate vectors, and sealing a share vector to its party.

The field is GF(p) for the Mersenne prime p = 2^127 - 1, the field of every MPC job: the input
shares, the computation inside MPC and the parties' output shares all live in it. A signed
integer v is the field element v mod p; field elements above (p - 1) / 2 are read back as
negative. Values (owners' counts and fixed-point sums, their totals and the noise) must stay
below 2^120 in magnitude, far from the wrap-around; `split` refuses anything larger.

Party index i (0-based, MPyC's party id) holds the evaluation at x = i + 1 of a random
polynomial of degree t = (parties - 1) // 2 whose constant term is the value: MPyC's own
convention, so a party program adds owners' shares as its own secret-shared inputs and the
output share it prints recombines with the others' (`recombine`), at any t + 1 of them.

Importing this module never imports `mpyc.runtime` (which parses sys.argv and starts a
global runtime): only `mpyc.finfields` and `mpyc.thresha`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mpyc import finfields, thresha

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

FIELD_BITS = 127
MODULUS = (1 << FIELD_BITS) - 1
FIELD = finfields.GF(MODULUS)
VALUE_BITS = 120  # |value| < 2^VALUE_BITS for every shared value, input or output
MIN_PARTIES = 3  # with 2 parties t = 0 and a share is the secret itself

_ELEMENT_BYTES = (FIELD_BITS + 7) // 8


def threshold(parties: int) -> int:
    """The degree of the sharing polynomials: any t + 1 shares recombine, t reveal nothing."""
    return (parties - 1) // 2


def encode(value: int) -> int:
    """A signed integer as a field element (as a plain int in [0, p))."""
    if abs(value) >= 1 << VALUE_BITS:
        raise ValueError(f"{value} is out of the shared range ±2^{VALUE_BITS}.")
    return value % MODULUS


def decode(element: int) -> int:
    """A field element back to the signed integer it encodes."""
    element %= MODULUS
    return element - MODULUS if element > MODULUS // 2 else element


def split(values: Sequence[int], parties: int) -> list[list[int]]:
    """Shamir shares of each value, one list per party (party i's shares at x = i + 1)."""
    if parties < MIN_PARTIES:
        raise ValueError(f"Secret sharing needs at least {MIN_PARTIES} parties, not {parties}.")
    if not values:
        return [[] for _ in range(parties)]
    secrets = [FIELD(encode(int(v))) for v in values]
    return [
        list(map(int, row))
        for row in thresha.random_split(FIELD, secrets, threshold(parties), parties)
    ]


def recombine(shares: Mapping[int, Sequence[int]]) -> list[int]:
    """The signed values behind the share vectors of some parties (index -> its shares).

    Any t + 1 parties suffice; all given shares are used, so a party's corrupted share shows
    as a wrong value rather than being silently outvoted (passive security: no error
    correction)."""
    if not shares:
        raise ValueError("No shares to recombine.")
    lengths = {len(vector) for vector in shares.values()}
    if len(lengths) != 1:
        raise ValueError("The parties' share vectors differ in length.")
    points = [
        (index + 1, [FIELD(int(s)) for s in vector]) for index, vector in sorted(shares.items())
    ]
    if not lengths.pop():
        return []
    return [decode(int(element)) for element in thresha.recombine(FIELD, points)]


def to_bytes(shares: Sequence[int]) -> bytes:
    return b"".join(int(s).to_bytes(_ELEMENT_BYTES, "big") for s in shares)


def from_bytes(data: bytes) -> list[int]:
    if len(data) % _ELEMENT_BYTES:
        raise ValueError("A share vector is a whole number of field elements.")
    elements = [
        int.from_bytes(data[i : i + _ELEMENT_BYTES], "big")
        for i in range(0, len(data), _ELEMENT_BYTES)
    ]
    if any(e >= MODULUS for e in elements):
        raise ValueError("A share is not a field element.")
    return elements


def seal_for_party(shares: Sequence[int], public_key: bytes, context: bytes) -> bytes:
    """Encrypt a party's share vector to its X25519 key; `context` (e.g. job, dataset and
    party index) is bound into the ciphertext, so a blob opens only for the step it was made
    for."""
    # Imported here: the party process imports this module for the field alone, and importing
    # the cleanroom package would load Celery into every party.
    from cleanroom.crypto.sealing import seal

    return seal(public_key, to_bytes(shares), context=context)


def seal_for_receiver(shares: Sequence[int], public_key: bytes, context: bytes) -> bytes:
    """Encrypt a party's noisy output share vector to the delivery key (P-256) that lives in the
    receiver's key service."""
    from cleanroom.crypto.sealing import seal_for_receiver

    return seal_for_receiver(public_key, to_bytes(shares), context=context)


def open_for_party(blob: bytes, private_key: X25519PrivateKey, context: bytes) -> list[int]:
    from cleanroom.crypto.sealing import open_sealed

    return from_bytes(open_sealed(private_key, blob, context=context))
