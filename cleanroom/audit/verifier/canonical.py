"""Canonical JSON, the byte encoding of every log event: sorted keys, no whitespace, UTF-8, no
floats. :func:`canonical_json` makes it; :func:`parse_canonical_event` reads an event back,
insisting its bytes are exactly that encoding.

The enclave imports this module alone (its measured code follows imports), so it imports
nothing of the verifier but the package's error.
"""

from __future__ import annotations

import json
from typing import Any

from . import VerificationError


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8.

    Floats are refused anywhere in the value (raising ``TypeError`` naming the path) because
    their text form is not stable across implementations; decimals must be given as strings.
    Keys must be strings, so that two different dicts can never encode to the same bytes.
    """
    _check_canonical(obj, "$")
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be encoded
        raise TypeError(f"string is not valid Unicode: {exc}") from exc


def _check_canonical(obj: Any, path: str) -> None:
    # Tuples rather than `X | Y` in isinstance: the file may be run on older Pythons offline.
    if obj is None or isinstance(obj, (str, int)):  # int includes bool
        return
    if isinstance(obj, float):  # includes NaN and infinities
        raise TypeError(f"float at {path} is not allowed in canonical JSON; use a decimal string")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"non-string key {key!r} at {path}")
            _check_canonical(value, f"{path}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_canonical(value, f"{path}[{i}]")
        return
    raise TypeError(f"{type(obj).__name__} at {path} is not a JSON type")


def _refuse_number(text: str) -> Any:
    raise ValueError(f"{text} is not allowed in canonical JSON (floats are decimal strings)")


_STRICT_DECODER = json.JSONDecoder(parse_float=_refuse_number, parse_constant=_refuse_number)
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_canonical_event(raw: bytes, where: str) -> dict:
    """Parse one event's bytes, insisting they are exactly its canonical JSON encoding.

    The same bytes :func:`canonical_json` makes, checked fast: parse refusing floats, NaN and
    infinities, then re-encode and compare.
    """
    try:
        body = _STRICT_DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"{where} is not canonical JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise VerificationError(f"{where} is not a JSON object")
    try:
        encoded = _CANONICAL_ENCODER.encode(body).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VerificationError(f"{where} is not valid Unicode: {exc}") from exc
    if encoded != raw:
        raise VerificationError(f"{where} is not canonical JSON")
    return body
