"""A released synthetic extract as its receivers see it: the data of the charts of its marginals
against the noisy real ones (drawn by cleanroom/static/js/charts.js), its README and the zip
archive of its files. The files themselves are stored and read by jobs.results."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

# The extract comes as extract.csv and extract.parquet, its reports as JSON.
FORMATS = ("csv", "parquet")


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
    charts: list[dict[str, Any]] = []
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
        chart_id = f"marginal-chart-{len(charts)}"
        charts.append({"id": chart_id, "kind": "marginals", "column": name, "bars": bars})
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
