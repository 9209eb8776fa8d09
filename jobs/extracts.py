"""Releasing a synthetic extract: its files encrypted at rest, outside the database.

The manifest (method, cost, reports, file digests) is the result's ciphertext, like an
aggregate's table. Each file (the extract and its reports) is encrypted with AES-256-GCM under
the result's data key, which only the receivers' wrapped copies (ResultKey) give back, and is
bound by its associated data to the job and the file's name, so a file cannot be passed off as
another's.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import transaction

from cleanroom.audit.verify import result_commitment
from jobs import runner
from jobs.models import Job, Query, Result, ResultFile
from parties.models import Organization

# The extract comes as extract.csv and extract.parquet, its reports as JSON.
FORMATS = ("csv", "parquet")


def root() -> Path:
    return Path(settings.STORAGE_ROOT) / "results"


def _context(job_id: int, name: str) -> bytes:
    return f"cleanroom-result-file/v1:job:{job_id}:{name}".encode()


def store_file(stored: runner.StoredResult, name: str, content: bytes) -> ResultFile:
    """Encrypt one released file to disk and record it, with its salted commitment; call
    inside the release transaction."""
    result, data_key = stored.result, stored.data_key
    relative = f"job-{result.job_id}/{name}.enc"
    path = root() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nonce = os.urandom(12)
    path.write_bytes(
        nonce + AESGCM(data_key).encrypt(nonce, content, _context(result.job_id, name))
    )
    return ResultFile.objects.create(
        result=result,
        name=name,
        commitment=result_commitment(stored.salt, content, name),
        size=len(content),
        storage_path=relative,
    )


def release_extract(
    job_id: int, manifest: dict[str, Any], files: dict[str, bytes]
) -> Result | None:
    """Store a synthetic extract and its reports for the receivers, spend the budget, finish;
    once only (a redelivered step finds the job finished)."""
    plaintext = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    with transaction.atomic():
        job = runner.claim_release(job_id)
        if job is None:
            return None
        query = job.query
        epsilon, delta = runner.charge_of(query)
        private = bool(manifest["differentially_private"])
        stored = runner.store_result(
            job,
            plaintext,
            epsilon=epsilon,
            delta=delta,
            output_kind=Query.OutputKind.SYNTHETIC,
            differentially_private=private,
        )
        released = [store_file(stored, name, files[name]) for name in sorted(files)]
        runner._record(
            job,
            "result.released",
            query=f"query:{query.pk}",
            receivers=sorted(f"org:{o.pk}" for o in stored.receivers),
            result_commitment=stored.result.commitment,
            files={f.name: f.commitment for f in released},
            output_kind=Query.OutputKind.SYNTHETIC,
            method=manifest["method"],
            rows=manifest["rows"],
            differentially_private=private,
            mechanism=job.mechanism,
            epsilon=str(epsilon),
            delta=str(delta),
            tee=(job.attestation or {}).get("kind"),
        )
        runner._finish(job, Job.State.SUCCEEDED, "")
    return stored.result


def read_file_for(result_file: ResultFile, organization: Organization) -> bytes:
    """Decrypt a released file for a receiver organisation (the caller checked membership)."""
    return read_file(result_file, runner.result_data_key(result_file.result, organization))


def read_file(result_file: ResultFile, data_key: bytes) -> bytes:
    """The plaintext of a released file, checked against the commitment the audit log holds."""
    blob = (root() / result_file.storage_path).read_bytes()
    content = AESGCM(data_key).decrypt(
        blob[:12], blob[12:], _context(result_file.result.job_id, result_file.name)
    )
    salt = runner.result_salt(result_file.result, data_key)
    if result_commitment(salt, content, result_file.name) != result_file.commitment:
        raise ValueError(f"{result_file.name} does not match its released commitment")
    return content


def marginal_charts(
    extract_csv: bytes, plan_columns: list[dict[str, Any]], quality: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per column, the share of each category or public bin among the synthetic rows beside the
    real data's share as the DP run measured it: noisy counts, released with the DP quality
    report, so the chart shows no real value that is not noised (nothing for SDV extracts)."""
    import numpy as np
    import polars as pl

    reference = (quality.get("reference_marginals") or {}).get("one_way") or {}
    labels = (quality.get("reference_marginals") or {}).get("labels") or {}
    if not reference:
        return []
    rows = pl.read_csv(io.BytesIO(extract_csv), comment_prefix="#", infer_schema_length=None)
    charts = []
    for column in plan_columns:
        name = column["name"]
        if name not in reference or name not in rows.columns:
            continue
        values = rows.get_column(name)
        if column["categories"] is not None:
            counts = [int((values.cast(pl.String) == str(c)).sum()) for c in column["categories"]]
        else:
            edges = np.asarray(column["bins"], dtype=np.float64)
            codes = np.searchsorted(edges, values.cast(pl.Float64).to_numpy(), side="right") - 1
            codes = np.clip(codes, 0, len(edges) - 2)
            counts = np.bincount(codes, minlength=len(edges) - 1).tolist()
        noisy = [max(float(v), 0.0) for v in reference[name]]
        real_total, synthetic_total = sum(noisy) or 1.0, sum(counts) or 1
        bars = [
            {
                "label": label,
                "real": round(real / real_total, 4),
                "synthetic": round(synthetic / synthetic_total, 4),
            }
            for label, real, synthetic in zip(
                labels.get(name, [str(k) for k in range(len(noisy))]), noisy, counts, strict=False
            )
        ]
        top = max([b["real"] for b in bars] + [b["synthetic"] for b in bars] + [0.01])
        width = 560 / max(len(bars), 1)
        for k, bar in enumerate(bars):
            bar["x"] = round(30 + k * width, 1)
            bar["x2"] = round(30 + k * width + width / 2, 1)
            bar["width"] = round(width / 2 - 2, 1)
            bar["real_height"] = round(bar["real"] / top * 150, 1)
            bar["synthetic_height"] = round(bar["synthetic"] / top * 150, 1)
            bar["real_y"] = round(170 - bar["real_height"], 1)
            bar["synthetic_y"] = round(170 - bar["synthetic_height"], 1)
            bar["text_x"] = round(30 + k * width + width / 2, 1)
        charts.append({"column": name, "bars": bars})
    return charts


def readme(manifest: dict[str, Any], digest: str) -> str:
    """What a downloaded extract is, and what it may and may not be used for."""
    private = manifest["differentially_private"]
    guarantee = (
        f"differentially private: (ε = {manifest['epsilon']}, δ = {manifest['delta']}), "
        "charged to every dataset the query read"
        if private
        else "NOT DIFFERENTIALLY PRIVATE: no formal privacy guarantee"
    )
    return "\n".join(
        [
            "Synthetic extract",
            "=================",
            f"Method: {manifest['method']} ({guarantee})",
            f"Rows: {manifest['rows']}; columns: {', '.join(manifest['columns'])}",
            f"Query digest (what every owner approved): {digest}",
            "",
            "Files: extract.csv (or extract.parquet), quality.json, privacy.json; their SHA-256",
            "digests are in the room's audit log (event result.released).",
            "",
            "May be used for: exploring the data's shape, and developing and testing code",
            "before spending budget on real aggregates.",
            "May not be used for: conclusions about real people, or as a substitute for the",
            "real data's statistics; matching against other data to find anyone.",
            "",
        ]
    )


def archive(files: dict[str, bytes], manifest: dict[str, Any], digest: str, fmt: str) -> bytes:
    """A zip of the extract as CSV or Parquet (`fmt`), its reports, the manifest and a
    README.txt."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("README.txt", readme(manifest, digest))
        bundle.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        for name, content in files.items():
            if not name.startswith("extract.") or name == f"extract.{fmt}":
                bundle.writestr(name, content)
    return out.getvalue()
