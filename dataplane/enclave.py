"""The enclave program: a separate process, started by the worker with a minimal environment.

It imports no Django and reads no settings, database or key files. Over its standard input and
output (JSON lines) it:
  1. receives the job: the approved query's canonical form (SQL, ε, δ, receivers, datasets
     with every term that sets the noise (dataplane.privacy.terms) and, for an extract, method, rows
     and charge) and the paths of the encrypted dataset files;
  2. re-parses and re-calibrates the query itself from the canonical form's terms (it takes
     no catalog, bound or plan from the host) and runs every check that can refuse (`prepare`),
     before it asks for any key: a refusal costs no budget;
  3. makes an ephemeral X25519 key and asks to be attested with it, bound to the job and the
     digest it computes itself from that canonical form, so keys are released only to an
     enclave running exactly what the owners signed;
  4. receives each dataset's data key sealed to that key (the key service releases them only
     after verifying the attestation, once per job, charging the job first);
  5. decrypts, computes the differentially private table, and prints it.
Only the noised table leaves; the exact aggregates and the rows stay in this process.

A synthetic extract instead re-parses the projection and checks that the method's cost is
within what was approved (in `prepare`), prepares its rows (dataplane.privacy.extract), fits and
samples with dataplane.synthesis, and writes the extract and its reports to its working directory
for the host to encrypt to the receivers; only those files leave.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cleanroom.attestation.binding import binding, key_context
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.crypto.envelope import decrypt_stream
from cleanroom.crypto.sealing import open_sealed, public_bytes
from dataplane.privacy.calibration import Measurement, changed_rows
from dataplane.privacy.extract import extract_rows, synth_columns
from dataplane.privacy.release import check_release, release_aggregates
from dataplane.privacy.terms import Terms, approved_measurements, read_terms
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import ColumnInfo, Output, ParsedQuery

# Where a synthetic extract's files are written, in the enclave's working directory.
EXTRACT_DIRECTORY = "extract"


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _receive() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("the host closed the channel")
    return json.loads(line)


def read_dataset(path: str, data_key: bytes) -> pl.LazyFrame:
    plain = io.BytesIO()
    with Path(path).open("rb") as source:
        decrypt_stream(source, plain, data_key)
    plain.seek(0)
    return pl.read_parquet(plain).lazy()


def approved_digest(query: dict[str, Any]) -> str:
    """The digest every owner signed, recomputed here from the canonical form received."""
    return hashlib.sha256(canonical_json(query)).hexdigest()


@dataclass(frozen=True)
class Release:
    """What the enclave will release, settled from the canonical form before it asks for keys:
    every check that can refuse runs here, so a refusal leaves the budget unspent."""

    terms: Terms
    parsed: ParsedQuery
    columns: dict[tuple[str, str], ColumnInfo]
    measurements: dict[str, Measurement]  # aggregates
    synthesized: list  # a synthetic extract's columns
    changed: int  # rows one person can change: what an extract's method is calibrated for


def prepare(query: dict[str, Any]) -> Release:
    approved = read_terms(query)
    columns = approved.columns
    if query["output_kind"] != Output.SYNTHETIC:
        parsed = parse_query(query["sql"], approved.datasets)
        released = approved_measurements(query, parsed, approved)
        check_release(
            parsed, columns, approved.units, released, rows_per_unit=approved.rows_per_unit
        )
        return Release(approved, parsed, columns, released, [], 0)
    from dataplane.synthesis import Method, dp_cost, is_differentially_private

    request = query["synthetic"]
    parsed = parse_query(query["sql"], approved.datasets, output=Output.SYNTHETIC)
    synthesized = synth_columns(parsed, columns)
    changed = changed_rows(parsed, approved.rows_per_unit)
    if changed != query["accountant"]["changed_rows_per_person"]:
        raise SystemExit("the rows one person can change differ from the signed terms")
    # Recomputed here, as the host is not trusted: the run must cost no more than was approved
    # and reserved.
    if is_differentially_private(Method(request["method"])):
        cost = dp_cost(
            synthesized,
            epsilon=float(query["epsilon"]),
            delta=float(query["delta"]),
            rows_per_unit=changed,
        )
        charge = request["charge"]
        if Decimal(repr(cost.epsilon)) > Decimal(charge["epsilon"]) or Decimal(
            repr(cost.delta)
        ) > Decimal(charge["delta"]):
            raise SystemExit(f"the method costs {cost.as_dict()}, more than approved {charge}")
    return Release(approved, parsed, columns, {}, synthesized, changed)


def main() -> None:
    job = _receive()
    query = job["query"]
    release = prepare(query)
    private_key = X25519PrivateKey.generate()
    _send(
        {
            "attest": {
                "public_key": base64.b64encode(public_bytes(private_key)).decode(),
                "user_data": base64.b64encode(binding(job["job"], approved_digest(query))).decode(),
            }
        }
    )
    reply = _receive()
    if "abort" in reply:
        raise SystemExit(f"aborted by the host: {reply['abort']}")
    frames = {}
    for name, sealed in reply["keys"].items():
        data_key = open_sealed(
            private_key, base64.b64decode(sealed), context=key_context(job["job"], name)
        )
        frames[name] = read_dataset(job["files"][name], data_key)
    _send({"progress": [60, "Decrypted inside the enclave"]})
    if query["output_kind"] == Output.SYNTHETIC:
        _synthesize(job, frames, release)
        return
    table = release_aggregates(
        frames,
        release.parsed,
        release.columns,
        release.terms.units,
        release.measurements,
        rows_per_unit=release.terms.rows_per_unit,
        min_group_size=release.terms.min_group_size,
    )
    _send({"progress": [80, "Noise added inside the enclave"]})
    _send({"result": table.to_json()})


def _synthesize(job: dict[str, Any], frames: dict[str, pl.LazyFrame], release: Release) -> None:
    from dataplane.synthesis import Method, is_differentially_private, synthesize

    query = job["query"]
    request = query["synthetic"]
    method = Method(request["method"])
    frame = extract_rows(
        frames,
        release.parsed,
        release.columns,
        release.terms.units,
        rows_per_unit=release.terms.rows_per_unit,
    )
    # No count here: the number of real rows is not part of the release.
    _send({"progress": [65, "Rows prepared for the synthesizer"]})
    extract = synthesize(
        frame,
        release.synthesized,
        method=method,
        rows=int(request["rows"]),
        epsilon=float(query["epsilon"]),
        delta=float(query["delta"]),
        rows_per_unit=release.changed,
        time_limit=float(job["time_limit"]),
    )
    del frame
    directory = Path(EXTRACT_DIRECTORY)
    directory.mkdir()
    files = {}
    for name, content in extract.to_files().items():
        (directory / name).write_bytes(content)
        files[name] = hashlib.sha256(content).hexdigest()
    _send(
        {
            "extract": {
                "method": str(method),
                "differentially_private": is_differentially_private(method),
                "epsilon": None if extract.epsilon is None else repr(extract.epsilon),
                "delta": None if extract.delta is None else repr(extract.delta),
                "rows": int(request["rows"]),
                "columns": [column.name for column in release.synthesized],
                "quality": extract.quality,
                "privacy": extract.privacy,
                "files": files,
            }
        }
    )


if __name__ == "__main__":
    main()
