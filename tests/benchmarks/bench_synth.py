"""Synthetic extracts: each method's fit, sample, report and end-to-end time, quality and peak
memory, on 10^5 and 10^6 rows of 10 columns.

The rows: the demo's patients (`jobs.demo.generate_patients`: age band, sex, diagnosis, length of
stay, cost, readmitted) with four more columns drawn here so there are ten: a ward that follows
the diagnosis, the weekday of admission (independent), prior visits and systolic blood pressure
that follow the age band. The bounds and domains are the demo's, and public ones for the four.

Each run is a fresh interpreter (its peak resident memory is the method's, data included) that
reads the rows from Parquet and calls `synthesize` for as many rows as it read:
- dp (dp-marginals) at ε = 1, δ = 1e-6, at 10^5 and 10^6 rows;
- gaussian-copula and ctgan (SDV, not differentially private) at 10^5 rows only: their fits
  grow with the rows (CTGAN's epochs are bounded by a time limit of 180 s instead).
fit includes encoding the rows; report is the extract's own reports (for dp: against its noisy
marginals). `quality` is SDMetrics' QualityReport of the extract against the real rows, computed
by the benchmark on uniform samples of 20,000 rows of each (an evaluation; never released).
The plain computation is the same statistics computed exactly with Polars: every 1-way marginal
and the 2-way marginal of every pair of the binned columns; each method's e2e is also given as
a ratio to it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl

SIZES = (10**5, 10**6)
SDV_SIZES = (10**5,)
EPSILON, DELTA = 1.0, 1e-6
CTGAN_TIME_LIMIT = 180.0
EVALUATION_ROWS = 20_000
WARDS = tuple(f"ward-{w}" for w in "ABCDEFGH")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def columns():
    from dataplane.synthesis import SynthColumn

    demo = [
        SynthColumn("age_band", "string", categories=("0-17", "18-39", "40-64", "65-79", "80+")),
        SynthColumn("sex", "string", categories=("F", "M")),
        SynthColumn(
            "diagnosis",
            "string",
            categories=("circulatory", "respiratory", "neoplasms", "digestive", "injury", "other"),
        ),
        SynthColumn("length_of_stay", "integer", lower=0, upper=60),
        SynthColumn("cost", "float", lower=0, upper=200000),
        SynthColumn("readmitted", "boolean"),
    ]
    extra = [
        SynthColumn("ward", "string", categories=WARDS),
        SynthColumn("weekday", "string", categories=WEEKDAYS),
        SynthColumn("prior_visits", "integer", lower=0, upper=20),
        SynthColumn("systolic_bp", "float", lower=80, upper=200),
    ]
    return demo + extra


def write_rows(folder: Path, rows: int) -> Path:
    from jobs.demo.scenario import SCHEMA, generate_patients

    assert [c.name for c in columns()[:6]] == [
        s["name"] for s in SCHEMA if s["role"] not in ("unit", "join_key")
    ]
    patients = pl.read_csv(
        generate_patients(folder / f"patients-{rows}.csv", rows=rows, seed=1, site="b", shared=0)
    )
    rng = np.random.default_rng(rows)
    diagnosis = patients["diagnosis"].to_numpy()
    age = patients["age_band"].rank("dense").cast(pl.Int64).to_numpy() - 1
    # A ward for each diagnosis, and 20 % of patients elsewhere.
    home = {name: i for i, name in enumerate(sorted(set(diagnosis)))}
    ward = np.array([home[d] for d in diagnosis])
    ward = np.where(rng.random(rows) < 0.8, ward, rng.integers(0, len(WARDS), rows))
    frame = patients.select([c.name for c in columns()[:6]]).with_columns(
        pl.Series("ward", np.array(WARDS)[ward]),
        pl.Series("weekday", np.array(WEEKDAYS)[rng.integers(0, 7, rows)]),
        pl.Series("prior_visits", np.minimum(20, rng.poisson(0.5 + age))),
        pl.Series("systolic_bp", np.clip(rng.normal(115 + 8 * age, 12), 80, 200).round(0)),
    )
    path = folder / f"rows-{rows}.parquet"
    frame.write_parquet(path)
    return path


def plain_marginals(frame: pl.DataFrame) -> float:
    """The exact 1-way and 2-way marginals of the binned columns, with Polars: seconds."""
    from dataplane.synthesis import public_bins

    start = time.perf_counter()
    binned = []
    for column in columns():
        if column.categorical:
            binned.append(pl.col(column.name))
        else:
            edges = public_bins(column)
            binned.append(pl.col(column.name).cut(edges[1:-1], left_closed=True).alias(column.name))
    codes = frame.select(binned)
    names = codes.columns
    for name in names:
        codes.group_by(name).len()
    for a, b in combinations(names, 2):
        codes.group_by(a, b).len()
    return time.perf_counter() - start


def child(method: str, path: str, out: str) -> None:
    """One run, in a fresh interpreter: synthesize, evaluate, write the figures as JSON."""
    from dataplane.synthesis import synthesize
    from dataplane.synthesis.reports import sdv_quality

    frame = pl.read_parquet(path)
    start = time.perf_counter()
    extract = synthesize(
        frame,
        columns(),
        method=method,
        rows=frame.height,
        epsilon=EPSILON,
        delta=DELTA,
        rows_per_unit=1,
        time_limit=CTGAN_TIME_LIMIT,
        seed=1,
    )
    e2e = time.perf_counter() - start
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SDMetrics' own pandas usage
        size = min(EVALUATION_ROWS, frame.height)
        evaluation = sdv_quality(
            frame.sample(size, seed=0),
            extract.frame.sample(size, seed=0),
            columns(),
            seed=0,
        )
    figures = extract.timings | {
        "e2e": e2e,
        "peak_mb": peak / 1024,
        "quality": evaluation["overall"],
        "own_quality": extract.quality["overall"],
        "epochs": extract.privacy.get("fit", {}).get("epochs"),
        "rows_fitted": extract.privacy.get("fit", {}).get("rows_fitted"),
    }
    Path(out).write_text(json.dumps(figures))


def _run_child(method: str, path: Path, folder: Path) -> dict:
    root = Path(__file__).resolve().parents[2]
    out = folder / f"{method}-{path.stem}.json"
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "from tests.benchmarks import bench_synth as b; "
        f"b.child({method!r}, {str(path)!r}, {str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
    return json.loads(out.read_text())


def _label(rows: int) -> str:
    return f"1e{len(str(rows)) - 1}"


def run() -> None:
    names = {"dp-marginals": "dp", "sdv-gaussian-copula": "gaussian-copula", "sdv-ctgan": "ctgan"}
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        folder = Path(tmp)
        for rows in SIZES:
            path = write_rows(folder, rows)
            label = _label(rows)
            frame = pl.read_parquet(path)
            print(f"synth data {label}: {frame.estimated_size() / 2**20:.0f} MB", flush=True)
            plain = min(plain_marginals(frame) for _ in range(3))
            del frame
            print(f"plain marginals {label}: {plain:.2f} s", flush=True)
            for method, name in names.items():
                if name != "dp" and rows not in SDV_SIZES:
                    continue
                figures = _run_child(method, path, folder)
                for stage in ("fit", "sample", "report", "e2e"):
                    print(f"{name} {stage} {label}: {figures[stage]:.2f} s")
                print(f"{name} e2e ratio {label}: {figures['e2e'] / plain:.0f} x")
                print(f"{name} quality {label}: {figures['quality']:.3f}")
                if name == "dp":
                    print(f"dp quality vs noisy marginals {label}: {figures['own_quality']:.3f}")
                if figures["epochs"] is not None:
                    print(f"{name} epochs {label}: {figures['epochs']} epochs")
                    print(f"{name} rows fitted {label}: {figures['rows_fitted']} rows")
                print(f"{name} peak memory {label}: {figures['peak_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    run()
