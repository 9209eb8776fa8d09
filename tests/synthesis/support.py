"""Columns and rows the synthesis tests share: the demo's patients, and a small fixed table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from dataplane.synthesis import SynthColumn
from jobs.demo.scenario import SCHEMA, generate_patients

DEMO_COLUMNS = [
    SynthColumn(
        spec["name"],
        spec["type"],
        categories=tuple(spec["domain"]) if spec.get("domain") else None,
        lower=spec.get("lower"),
        upper=spec.get("upper"),
    )
    for spec in SCHEMA
    if spec["role"] not in ("unit", "join_key")
]


def demo_patients(folder: Path, rows: int, seed: int = 1) -> pl.DataFrame:
    """The demo generator's patients, projected to the output columns."""
    path = generate_patients(folder / "patients.csv", rows=rows, seed=seed, site="t", shared=0)
    return pl.read_csv(path).select([c.name for c in DEMO_COLUMNS])


def dependent_pair(rows: int, seed: int) -> tuple[pl.DataFrame, list[SynthColumn]]:
    """Two columns with a known strong dependency: `copy` equals `source` for 80 % of the rows
    (else uniform), and a third column independent of both."""
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 6, rows)
    copy = np.where(rng.random(rows) < 0.8, source, rng.integers(0, 6, rows))
    frame = pl.DataFrame(
        {
            "source": [f"s{v}" for v in source],
            "copy": [f"s{v}" for v in copy],
            "other": rng.integers(0, 100, rows),
        }
    )
    domain = tuple(f"s{v}" for v in range(6))
    columns = [
        SynthColumn("source", "string", categories=domain),
        SynthColumn("copy", "string", categories=domain),
        SynthColumn("other", "integer", lower=0, upper=99),
    ]
    return frame, columns


def total_variation_similarity(real: np.ndarray, synthetic: np.ndarray) -> float:
    """1 - total variation distance of two count tables (SDMetrics' TVComplement)."""
    p, q = real / real.sum(), synthetic / synthetic.sum()
    return float(1 - 0.5 * np.abs(p - q).sum())
