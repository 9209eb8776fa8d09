"""The enclave program: a separate process, started by the worker with a minimal environment.

It imports no Django and reads no settings, database or key files. Over its standard input and
output (JSON lines) it:
  1. receives the job: the approved query's canonical form (SQL, ε, δ, receivers, datasets
     and, for an extract, method, rows and charge), the room's catalog and the policy bounds,
     and the paths of the encrypted dataset files;
  2. makes an ephemeral X25519 key and asks to be attested with it, bound to the job and the
     digest it computes itself from that canonical form, so keys are released only to an
     enclave running exactly what the owners signed;
  3. receives each dataset's data key sealed to that key (the key service releases them only
     after verifying the attestation);
  4. decrypts, re-parses and re-calibrates the query itself (it trusts no plan from the host),
     computes the differentially private table, and prints it.
Only the noised table leaves; the exact aggregates and the rows stay in this process.

A synthetic extract instead re-parses the projection, prepares its rows (jobs.privacy.extract),
checks that the method's cost is within what was approved, fits and samples with
jobs.synthesis, and writes the extract and its reports to its working directory for the host
to encrypt to the receivers; only those files leave.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cleanroom.audit.verify import canonical_json
from cleanroom.crypto.envelope import decrypt_stream
from cleanroom.crypto.sealing import open_sealed, public_bytes
from jobs.engines.tee.attestation import binding
from jobs.privacy.calibration import measurements
from jobs.privacy.extract import changed_rows_per_unit, extract_rows, synth_columns
from jobs.privacy.release import check_release, release_aggregates
from jobs.sql.parser import parse_query
from jobs.sql.plan import AggregateKind, ColumnInfo, DatasetInfo, Output, Use
from jobs.synthesis import CODE as SYNTHESIS_CODE

# The files whose code runs in here: their measurement is what the key service allows.
CODE = [
    "jobs/engines/tee/enclave.py",
    "jobs/engines/tee/attestation.py",
    "jobs/sql/parser.py",
    "jobs/sql/plan.py",
    "jobs/privacy/calibration.py",
    "jobs/privacy/release.py",
    "cleanroom/crypto/envelope.py",
    "cleanroom/crypto/sealing.py",
    "cleanroom/audit/verify.py",
    "jobs/privacy/extract.py",
    *SYNTHESIS_CODE,
]
# Where a synthetic extract's files are written, in the enclave's working directory.
EXTRACT_DIRECTORY = "extract"


def key_context(job_id: int, dataset: str) -> bytes:
    return f"cleanroom-key-release/v1\njob:{job_id}\n{dataset}\n".encode()


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _receive() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("the host closed the channel")
    return json.loads(line)


def _catalog(
    raw: dict[str, Any],
) -> tuple[dict[str, DatasetInfo], dict[tuple[str, str], ColumnInfo]]:
    datasets, columns = {}, {}
    for name, spec in raw.items():
        infos = {
            c["name"]: ColumnInfo(
                name=c["name"],
                type=c["type"],
                role=c["role"],
                domain=tuple(c["domain"]),
                lower=None if c["lower"] is None else Decimal(c["lower"]),
                upper=None if c["upper"] is None else Decimal(c["upper"]),
            )
            for c in spec["columns"]
        }
        datasets[name] = DatasetInfo(
            qualified_name=name,
            columns=infos,
            allowed={Use(use): frozenset(cols) for use, cols in spec["allowed"].items()},
            allowed_aggregates=frozenset(AggregateKind(a) for a in spec["allowed_aggregates"]),
        )
        columns.update({(name, col): info for col, info in infos.items()})
    return datasets, columns


def read_dataset(path: str, data_key: bytes) -> pl.LazyFrame:
    plain = io.BytesIO()
    with Path(path).open("rb") as source:
        decrypt_stream(source, plain, data_key)
    plain.seek(0)
    return pl.read_parquet(plain).lazy()


def approved_digest(query: dict[str, Any]) -> str:
    """The digest every owner signed, recomputed here from the canonical form received."""
    return hashlib.sha256(canonical_json(query)).hexdigest()


def main() -> None:
    job = _receive()
    query = job["query"]
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
    datasets, columns = _catalog(job["catalog"])
    if query["output_kind"] == Output.SYNTHETIC:
        _synthesize(job, frames, datasets, columns)
        return
    parsed = parse_query(query["sql"], datasets)
    released = measurements(
        parsed, columns, epsilon=Decimal(query["epsilon"]), rows_per_unit=job["rows_per_unit"]
    )
    # Every check that can refuse runs before any noise is drawn: a refusal is refunded.
    check_release(parsed, columns, job["units"], released, rows_per_unit=job["rows_per_unit"])
    # From here a noisy value exists: a failure now spends the budget instead of refunding it.
    _send({"noise": True})
    table = release_aggregates(
        frames,
        parsed,
        columns,
        job["units"],
        released,
        rows_per_unit=job["rows_per_unit"],
        min_group_size=job["min_group_size"],
    )
    _send({"result": table.to_json()})


def _synthesize(
    job: dict[str, Any],
    frames: dict[str, pl.LazyFrame],
    datasets: dict[str, DatasetInfo],
    columns: dict[tuple[str, str], ColumnInfo],
) -> None:
    from jobs.synthesis import Method, dp_cost, is_differentially_private, synthesize

    query = job["query"]
    request = query["synthetic"]
    method = Method(request["method"])
    parsed = parse_query(query["sql"], datasets, output=Output.SYNTHETIC)
    synthesized = synth_columns(parsed, columns)
    changed = changed_rows_per_unit(parsed, job["rows_per_unit"])
    epsilon, delta = float(query["epsilon"]), float(query["delta"])
    private = is_differentially_private(method)
    # Recomputed here, as the host is not trusted: the run must cost no more than was approved
    # and reserved. A refusal comes before any noise, so it is refunded.
    if private:
        cost = dp_cost(synthesized, epsilon=epsilon, delta=delta, rows_per_unit=changed)
        charge = request["charge"]
        if Decimal(repr(cost.epsilon)) > Decimal(charge["epsilon"]) or Decimal(
            repr(cost.delta)
        ) > Decimal(charge["delta"]):
            raise SystemExit(f"the method costs {cost.as_dict()}, more than approved {charge}")
    frame = extract_rows(frames, parsed, columns, job["units"], rows_per_unit=job["rows_per_unit"])
    # No count here: the number of real rows is not part of the release.
    _send({"progress": [65, "Rows prepared for the synthesizer"]})
    # From here a model of the rows exists (noisy, for the DP method): a failure spends.
    _send({"noise": True})
    extract = synthesize(
        frame,
        synthesized,
        method=method,
        rows=int(request["rows"]),
        epsilon=epsilon,
        delta=delta,
        rows_per_unit=changed,
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
                "differentially_private": private,
                "epsilon": None if extract.epsilon is None else repr(extract.epsilon),
                "delta": None if extract.delta is None else repr(extract.delta),
                "rows": int(request["rows"]),
                "columns": [column.name for column in synthesized],
                "quality": extract.quality,
                "privacy": extract.privacy,
                "files": files,
            }
        }
    )


if __name__ == "__main__":
    main()
