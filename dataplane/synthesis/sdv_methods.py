"""SDV's synthesizers (not differentially private): Gaussian copula, and CTGAN on the CPU.

Metadata come from the output columns: categorical columns (with a public domain) as
categorical, numeric ones as numerical (integers stay integers). Bounds: the rows fitted on are
clamped to the policy bounds, SDV keeps samples within the observed range, and the sample is
clamped again.

CTGAN's training is bounded by the time limit. A pilot fit of one epoch on the first
CTGAN_PILOT_ROWS training rows is timed: its time per row (an over-estimate of an epoch's cost per
row, as it includes fitting the data transformer) prices the rest of SHARE of the time limit.
If that pays for every training row, CTGAN is fitted again on all of them with as many epochs as
it pays for (at least one, at most CTGAN_MAX_EPOCHS); if it pays for fewer, one epoch on a
uniform sample of as many rows as it pays for; if not even for more than the pilot's rows, the
pilot model is kept. Training thus takes about SHARE of the time limit (plus the pilot), leaving
the rest for sampling and the reports.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import polars as pl

from dataplane.synthesis.columns import SynthColumn, SynthesisError, clamp

CTGAN_MAX_EPOCHS = 300
CTGAN_PILOT_ROWS = 1000
SHARE = 0.6
SAMPLE_ATTEMPTS = 10
_TABLE = "extract"


def metadata(columns: Sequence[SynthColumn]):
    from sdv.metadata import Metadata

    # SDV 2 infers integer rounding from the fitted values (`enforce_rounding`); the sample is
    # cast to the column's type by `clamp` anyway.
    spec = {c.name: {"sdtype": "categorical" if c.categorical else "numerical"} for c in columns}
    return Metadata.load_from_dict({"tables": {_TABLE: {"columns": spec}}})


@contextmanager
def _quietly() -> Iterator[None]:
    """SDV and its RDT transformers emit pandas FutureWarnings and advisory UserWarnings about
    their own internals; they are harmless here and would fail the strict test suite."""
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


def _seed(seed: int | None) -> None:
    if seed is not None:
        import torch

        np.random.seed(seed)
        torch.manual_seed(seed)


def fit_gaussian_copula(training: pl.DataFrame, columns: Sequence[SynthColumn], seed: int | None):
    from sdv.single_table import GaussianCopulaSynthesizer

    with _quietly():
        _seed(seed)
        synthesizer = GaussianCopulaSynthesizer(metadata(columns), enforce_min_max_values=True)
        synthesizer.fit({_TABLE: training.to_pandas()})
    return synthesizer, {"epochs": None}


def fit_ctgan(
    training: pl.DataFrame, columns: Sequence[SynthColumn], seed: int | None, time_limit: float
):
    from sdv.single_table import CTGANSynthesizer

    def fit(rows: pl.DataFrame, epochs: int):
        synthesizer = CTGANSynthesizer(metadata(columns), epochs=epochs, enable_gpu=False)
        synthesizer.fit({_TABLE: rows.to_pandas()})
        return synthesizer

    with _quietly():
        _seed(seed)
        pilot_rows = training.head(min(training.height, CTGAN_PILOT_ROWS))
        start = time.perf_counter()
        synthesizer = fit(pilot_rows, 1)
        pilot = time.perf_counter() - start
        per_row_epoch = pilot / pilot_rows.height
        left = SHARE * time_limit - pilot
        rows = min(training.height, int(left / per_row_epoch))
        epochs = min(CTGAN_MAX_EPOCHS, int(left / (per_row_epoch * training.height)))
        if rows > pilot_rows.height or epochs > 1:
            epochs = max(epochs, 1)
            fitted = training if rows == training.height else training.sample(rows, seed=seed)
            synthesizer = fit(fitted, epochs)
        else:
            fitted, epochs = pilot_rows, 1
    return synthesizer, {
        "epochs": epochs,
        "rows_fitted": fitted.height,
        "pilot_seconds": round(pilot, 3),
    }


def sample(synthesizer, columns: Sequence[SynthColumn], rows: int) -> pl.DataFrame:
    """`rows` synthetic rows within the bounds and domains (rows SDV draws outside a domain or
    with a missing value are replaced by fresh draws)."""
    parts, have = [], 0
    with _quietly():
        for _ in range(SAMPLE_ATTEMPTS):
            drawn = clamp(pl.from_pandas(synthesizer.sample(num_rows=rows - have)[_TABLE]), columns)
            parts.append(drawn)
            have += drawn.height
            if have >= rows:
                return pl.concat(parts).head(rows)
    raise SynthesisError(f"The synthesizer drew too few valid rows ({have} of {rows}).")
