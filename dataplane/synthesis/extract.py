"""`synthesize`: one synthetic extract with its reports, by the DP method or an SDV method."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import polars as pl

from dataplane.synthesis import dp_marginals, reports, sdv_methods
from dataplane.synthesis.accounting import DpBudget, dp_cost
from dataplane.synthesis.columns import (
    SynthColumn,
    SynthesisError,
    check_columns,
    clamp,
    decode,
    encode,
)

# The SDV methods learn from this share of the rows; the rest is the privacy report's holdout.
HOLDOUT_SHARE = 0.2


class Method(StrEnum):
    DP_MARGINALS = "dp-marginals"
    SDV_GAUSSIAN_COPULA = "sdv-gaussian-copula"
    SDV_CTGAN = "sdv-ctgan"


def is_differentially_private(method: Method | str) -> bool:
    return Method(method) is Method.DP_MARGINALS


@dataclass(frozen=True)
class Extract:
    """A synthetic extract and the reports released with it."""

    frame: pl.DataFrame
    method: Method
    differentially_private: bool
    epsilon: float | None
    delta: float | None
    quality: dict
    privacy: dict
    budget: DpBudget | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: fit, sample, report

    @property
    def label(self) -> str:
        if self.differentially_private:
            return (
                f"Synthetic extract, method {self.method}: ({self.epsilon:.6g}, {self.delta:.3g})-"
                "differentially private."
            )
        return f"Synthetic extract, method {self.method}: {reports.NOT_DP}."

    def summary(self) -> dict:
        return {
            "label": self.label,
            "method": str(self.method),
            "differentially_private": self.differentially_private,
            "epsilon": None if self.budget is None else self.budget.as_dict()["epsilon"],
            "delta": None if self.budget is None else self.budget.as_dict()["delta"],
            "rows": self.frame.height,
            "columns": self.frame.columns,
        }

    def to_files(self) -> dict[str, bytes]:
        """The released files. The label (DP with its ε and δ, or not DP) is inside each: the
        CSV's first line is a `#` comment, Parquet carries it as key-value metadata."""
        csv = f"# {self.label}\n".encode() + self.frame.write_csv().encode()
        parquet = io.BytesIO()
        self.frame.write_parquet(
            parquet, metadata={"cleanroom.synthetic": json.dumps(self.summary())}
        )
        return {
            "extract.csv": csv,
            "extract.parquet": parquet.getvalue(),
            "quality.json": _json({"extract": self.summary(), **self.quality}),
            "privacy.json": _json({"extract": self.summary(), **self.privacy}),
        }


def _json(document: dict) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


def synthesize(
    frame: pl.DataFrame,
    columns: Sequence[SynthColumn],
    *,
    method: Method | str,
    rows: int,
    epsilon: float | None,
    delta: float | None,
    rows_per_unit: int,
    time_limit: float,
    seed: int | None = None,
) -> Extract:
    """A synthetic extract of `rows` rows of `columns`, learnt from `frame` (already filtered,
    projected and contribution-bounded by the caller; clamped again here)."""
    try:
        method = Method(method)
    except ValueError:
        known = ", ".join(m.value for m in Method)
        raise SynthesisError(f"Unknown synthesis method {method!r}; known: {known}.") from None
    if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
        raise SynthesisError(f"The number of rows must be a positive whole number, not {rows!r}.")
    if not time_limit > 0:
        raise SynthesisError(f"The time limit must be positive, not {time_limit!r}.")
    check_columns(columns)
    if method is Method.DP_MARGINALS:
        if epsilon is None or delta is None:
            raise SynthesisError("The DP method needs ε and δ.")
        return _dp_extract(frame, columns, rows, epsilon, delta, rows_per_unit, seed)
    return _sdv_extract(frame, columns, method, rows, time_limit, seed)


def _dp_extract(frame, columns, rows, epsilon, delta, rows_per_unit, seed) -> Extract:
    budget = dp_cost(columns, epsilon=epsilon, delta=delta, rows_per_unit=rows_per_unit)
    sizes = {c.name: c.size() for c in columns}
    start = time.perf_counter()
    codes = encode(clamp(frame, columns), columns)
    noisy = dp_marginals.measure_marginals(codes, sizes, budget)
    del codes  # from here on only the noisy marginals are used
    synthetic = dp_marginals.sample(noisy, budget, rows=rows, seed=seed)
    fitted = time.perf_counter()
    out = decode(synthetic, columns, np.random.default_rng(seed))
    sampled = time.perf_counter()
    quality = reports.dp_quality(synthetic, columns, noisy)
    privacy = reports.dp_privacy(budget, noisy)
    return Extract(
        frame=out,
        method=Method.DP_MARGINALS,
        differentially_private=True,
        epsilon=budget.epsilon,
        delta=budget.delta,
        quality=quality,
        privacy=privacy,
        budget=budget,
        timings={
            "fit": fitted - start,
            "sample": sampled - fitted,
            "report": time.perf_counter() - sampled,
        },
    )


def _sdv_extract(frame, columns, method, rows, time_limit, seed) -> Extract:
    rows_in = clamp(frame, columns)
    if rows_in.height < 2:
        raise SynthesisError("An SDV synthesizer needs at least two valid input rows.")
    split_seed = 0 if seed is None else seed
    shuffled = rows_in.sample(fraction=1.0, shuffle=True, seed=split_seed)
    holdout_rows = max(1, round(HOLDOUT_SHARE * shuffled.height))
    holdout, training = shuffled.head(holdout_rows), shuffled.slice(holdout_rows)
    start = time.perf_counter()
    if method is Method.SDV_GAUSSIAN_COPULA:
        synthesizer, details = sdv_methods.fit_gaussian_copula(training, columns, seed)
    else:
        synthesizer, details = sdv_methods.fit_ctgan(training, columns, seed, time_limit)
    fitted = time.perf_counter()
    out = sdv_methods.sample(synthesizer, columns, rows)
    sampled = time.perf_counter()
    quality = reports.sdv_quality(training, out, columns, split_seed)
    privacy = reports.sdv_privacy(training, holdout, out, columns, split_seed) | {"fit": details}
    return Extract(
        frame=out,
        method=method,
        differentially_private=False,
        epsilon=None,
        delta=None,
        quality=quality,
        privacy=privacy,
        timings={
            "fit": fitted - start,
            "sample": sampled - fitted,
            "report": time.perf_counter() - sampled,
        },
    )
