"""What an owner signs, checked before the key is touched: the version's canonical form as the
server shows it, with its digest recomputed here. A server that asks for a signature over a
digest that is not the digest of the form it shows (or whose other fields say something else
than that form) gets none: `Review.of` raises `RefusedToSign`.

The signature then binds exactly the form `str(review)` shows the owner: the SQL, the
mechanism, ε and δ, the receivers, the datasets at their versions and the noise's terms.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cleanroom.client.errors import RefusedToSign
from cleanroom.client.signing import query_digest


@dataclass(frozen=True)
class Review:
    """A submitted query version whose digest this client has recomputed from its form."""

    room: str
    query_id: int
    digest: str
    canonical: dict[str, Any]
    # The receivers' slugs as the server names them; the form itself binds `org:<id>`s.
    receiver_slugs: tuple[str, ...]

    @classmethod
    def of(cls, room: str, query: dict[str, Any]) -> Review:
        """Check the API's query version (`GET …/queries/<id>/`); raise RefusedToSign unless its
        digest is the digest of its canonical form and its fields agree with that form."""
        canonical = query.get("canonical")
        if not isinstance(canonical, dict):
            raise RefusedToSign(
                "not_submitted",
                f"Query {query.get('id')} has no canonical form to sign: it is not submitted.",
            )
        try:
            recomputed = query_digest(canonical)
        except TypeError as problem:
            raise RefusedToSign(
                "digest_mismatch",
                f"The server's canonical form of query {query['id']} is not canonical JSON "
                f"({problem}); nothing was signed.",
            ) from None
        if recomputed != query.get("digest"):
            raise RefusedToSign(
                "digest_mismatch",
                f"The server asks for a signature over digest {query.get('digest')} for query "
                f"{query['id']}, but the form it shows hashes to {recomputed}; nothing was "
                "signed. Do not approve this query; tell your organisation's security contact.",
            )
        disagreeing = _disagreeing_fields(query, canonical)
        if disagreeing:
            raise RefusedToSign(
                "form_mismatch",
                f"Query {query['id']}'s {', '.join(disagreeing)} as the server states "
                f"{'them' if len(disagreeing) > 1 else 'it'} differ from its canonical form, "
                "which is what a signature binds; nothing was signed.",
            )
        return cls(
            room=room,
            query_id=query["id"],
            digest=recomputed,
            canonical=canonical,
            receiver_slugs=tuple(query.get("receivers") or ()),
        )

    def __str__(self) -> str:
        form = self.canonical
        lines = [
            f"Query {self.query_id} in {self.room}, version {form.get('version')}: "
            f"{form.get('title')}",
            f"Purpose: {form.get('purpose')}",
            "SQL:",
            textwrap.indent(str(form.get("sql", "")).strip(), "    "),
            f"Mechanism: {form.get('mechanism')}; output: {form.get('output_kind')}",
            f"Privacy: ε {_plain(form.get('epsilon'))}, δ {_plain(form.get('delta'))} charged to "
            "each dataset",
        ]
        synthetic = form.get("synthetic")
        if isinstance(synthetic, dict):
            private = "" if synthetic.get("differentially_private") else "NOT "
            lines.append(
                f"Synthetic extract: {synthetic.get('method')}, {synthetic.get('rows')} rows, "
                f"{private}differentially private"
            )
        receivers = ", ".join(form.get("receivers") or []) or "none"
        named = f" (the server names them {', '.join(self.receiver_slugs)})"
        lines.append(f"Receivers: {receivers}{named if self.receiver_slugs else ''}")
        lines.append(f"Expires: {form.get('expires_at')}")
        lines.append("Datasets:")
        for dataset in form.get("datasets") or []:
            rows = dataset.get("rows_per_unit")
            lines.append(
                f"  {dataset.get('name')} version {dataset.get('version')} (content sha256 "
                f"{str(dataset.get('content_sha256'))[:16]}…), policy version "
                f"{dataset.get('policy_version')}: unit {dataset.get('unit')}, at most "
                f"{rows} row{'' if rows == 1 else 's'} per unit, groups of at least "
                f"{dataset.get('min_group_size')}"
            )
            for column in dataset.get("columns") or []:
                uses = column.get("uses") or []
                read = f"used as {', '.join(uses)}" if uses else "not read"
                bounds = (
                    f", clamped to [{_plain(column.get('lower'))}, {_plain(column.get('upper'))}]"
                    if column.get("lower") is not None
                    else ""
                )
                lines.append(f"    {column.get('name')} ({column.get('role')}), {read}{bounds}")
        lines.append(f"Digest, recomputed here from this form: {self.digest}")
        return "\n".join(lines)


def _disagreeing_fields(query: dict[str, Any], canonical: dict[str, Any]) -> list[str]:
    """The fields a reader of the API's query sees that say otherwise than the form signed."""
    disagreeing = [
        name
        for name in ("version", "title", "purpose", "sql", "mechanism", "output_kind")
        if query.get(name) != canonical.get(name)
    ]
    disagreeing += [
        name
        for name in ("epsilon", "delta")
        if not _same_number(query.get(name), canonical.get(name))
    ]
    if len(query.get("receivers") or ()) != len(canonical.get("receivers") or ()):
        disagreeing.append("receivers")
    return disagreeing


def _plain(number: Any) -> str:
    """A decimal string as people write it (`0.5000` as 0.5, `0E-12` as 0); the form, and so
    the digest, keeps the string as it is."""
    try:
        value = Decimal(str(number))
    except InvalidOperation:
        return str(number)
    return f"{value.normalize():f}" if value.is_finite() else str(number)


def _same_number(stated: Any, signed: Any) -> bool:
    try:
        return Decimal(str(stated)) == Decimal(str(signed))
    except InvalidOperation:
        return False
