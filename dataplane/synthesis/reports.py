"""The quality and privacy reports released with every extract, and what each reveals.

DP method: the guarantee covers the whole release, so its reports hold nothing computed from the
real rows without noise.
- Quality compares the synthetic rows with the *noisy* marginals the run measured (post-
  processing, free): SDMetrics' column-shape and column-pair-trend scores by their own
  definitions (TVComplement: 1 - total variation distance; ContingencySimilarity: the same on
  the 2-way table) over the public codes (categories and bins). Pair trends cover the measured
  pairs (the spanning tree); for other pairs no noisy reference exists.
- Privacy states the formal guarantee (ε, δ, rho, the mechanisms and their scales). The empirical
  tests (exact matches, distance to closest record) need the real rows un-noised: left out.

SDV methods (not differentially private): both reports are computed from the real rows and
reveal something about them, which each report states.
- Quality: SDMetrics' QualityReport of the synthetic rows against the rows the synthesizer was
  fitted on (scores only; SDMetrics' real correlations are not copied out).
- Privacy: against a holdout split of the real rows the synthesizer never saw, the share of
  synthetic rows that exactly match a training row; the same share against equal-size samples
  of the training and the holdout rows (a copying synthesizer matches the first far more often);
  and SDMetrics' DCROverfittingProtection (the share of synthetic rows closer to the training
  rows than to the holdout rows, by distance to closest record), on those samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl

from dataplane.synthesis.accounting import DpBudget
from dataplane.synthesis.columns import SynthColumn, code_labels
from dataplane.synthesis.dp_marginals import NoisyMarginals, marginal

NOT_DP = "NOT DIFFERENTIALLY PRIVATE"
# The real-row samples the SDV privacy tests compare against (distance computations are
# quadratic), and the rows SDMetrics' QualityReport reads at most.
PRIVACY_SAMPLE_ROWS = 2000
QUALITY_SAMPLE_ROWS = 10_000
# A synthesizer copying rows matches far more training rows than unseen holdout rows.
COPY_MARGIN = 0.1
DCR_CLOSER_TO_TRAINING_LIMIT = 0.6
_TABLE = "extract"


def _similarity(reference: np.ndarray, synthetic: np.ndarray) -> float:
    """1 - total variation distance between two (possibly noisy) count tables."""
    reference = np.clip(reference, 0, None)
    p = reference / reference.sum() if reference.sum() > 0 else reference
    q = synthetic / max(synthetic.sum(), 1)
    return float(1 - 0.5 * np.abs(p - q).sum())


def _counts(table: np.ndarray) -> list:
    # The discrete Gaussian's noisy counts are whole numbers.
    return np.rint(table).astype(np.int64).tolist()


def _merged_labels(column: SynthColumn, mapping: np.ndarray) -> list[list[str]]:
    """The original labels behind each compressed code."""
    labels = code_labels(column)
    return [
        [labels[i] for i in np.flatnonzero(mapping == code)]
        for code in range(int(mapping.max()) + 1)
    ]


def dp_quality(
    codes: dict[str, np.ndarray], columns: Sequence[SynthColumn], noisy: NoisyMarginals
) -> dict:
    sizes = {c.name: c.size() for c in columns}
    shapes = [
        {
            "column": name,
            "metric": "TVComplement",
            "score": _similarity(table, marginal(codes, sizes, (name,))),
        }
        for name, table in noisy.one_way.items()
    ]
    compressed, compressed_sizes = noisy.compress(codes), noisy.compressed_sizes()
    pairs = [
        {
            "columns": list(pair),
            "metric": "ContingencySimilarity",
            "score": _similarity(table, marginal(compressed, compressed_sizes, pair)),
        }
        for pair, table in noisy.two_way.items()
    ]
    properties = {"Column Shapes": float(np.mean([s["score"] for s in shapes]))}
    if pairs:
        properties["Column Pair Trends"] = float(np.mean([p["score"] for p in pairs]))
    return {
        "reference": "noisy marginals",
        "reveals": (
            "Nothing beyond the differentially private release: scores compare the synthetic "
            "rows with the noisy marginals the run measured, which are released here too "
            "(noisy counts per category or public bin, in the columns' code order; the 2-way "
            "tables over the codes after rare ones were merged, as listed) and are covered by "
            "the extract's (ε, δ). Pair trends cover the measured pairs only."
        ),
        "reference_marginals": {
            "labels": {c.name: code_labels(c) for c in columns},
            "one_way": {name: _counts(table) for name, table in noisy.one_way.items()},
            "merged": {
                c.name: _merged_labels(c, noisy.compressed[c.name])
                for c in columns
                if noisy.compressed_sizes()[c.name] < c.size()
            },
            "two_way": [
                {"columns": list(pair), "counts": _counts(table)}
                for pair, table in noisy.two_way.items()
            ],
        },
        "overall": float(np.mean(list(properties.values()))),
        "properties": properties,
        "column_shapes": shapes,
        "column_pair_trends": pairs,
        "per_column": {s["column"]: s["score"] for s in shapes},
    }


def dp_privacy(budget: DpBudget, noisy: NoisyMarginals) -> dict:
    return {
        "differentially_private": True,
        "epsilon": budget.as_dict()["epsilon"],
        "delta": budget.as_dict()["delta"],
        "guarantee": (
            f"({budget.epsilon:.6g}, {budget.delta:.3g})-differential privacy for each privacy "
            f"unit contributing at most {budget.rows_per_unit} row(s), covering the extract and "
            "both reports."
        ),
        "calibration": budget.as_dict(),
        "measured_pairs": [list(p) for p in noisy.selected],
        "empirical_tests": (
            "Left out: exact matches and distance to closest record would be computed from the "
            "real rows without noise, outside the guarantee."
        ),
        "reveals": "Only public parameters of the run and which pairs were (privately) selected.",
    }


def sdmetrics_metadata(columns: Sequence[SynthColumn]) -> dict:
    """SDMetrics' single-table metadata: categorical columns by their codes' meaning, numeric ones
    as numbers."""
    return {
        "columns": {
            c.name: {"sdtype": "categorical"} if c.categorical else {"sdtype": "numerical"}
            for c in columns
        }
    }


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    return frame.sample(n=min(rows, frame.height), seed=seed) if frame.height > rows else frame


def _score(value: float) -> float | None:
    # SDMetrics leaves a pair unscored (NaN) when the real rows show no association between
    # its columns above its threshold; JSON has no NaN.
    return None if value is None or np.isnan(value) else float(value)


def sdv_quality(
    training: pl.DataFrame, synthetic: pl.DataFrame, columns: Sequence[SynthColumn], seed: int
) -> dict:
    from sdmetrics.reports import QualityReport

    real = _sample(training, QUALITY_SAMPLE_ROWS, seed)
    fake = _sample(synthetic, QUALITY_SAMPLE_ROWS, seed + 1)
    report = QualityReport()
    report.generate(
        {_TABLE: real.to_pandas()},
        {_TABLE: fake.to_pandas()},
        {"tables": {_TABLE: sdmetrics_metadata(columns)}},
        verbose=False,
    )
    properties = {
        row["Property"]: _score(row["Score"]) for row in report.get_properties().to_dict("records")
    }
    shapes = [
        {"column": row["Column"], "metric": row["Metric"], "score": _score(row["Score"])}
        for row in report.get_details("Column Shapes").to_dict("records")
    ]
    pairs = []
    if len(columns) > 1:
        pairs = [
            {
                "columns": [row["Column 1"], row["Column 2"]],
                "metric": row["Metric"],
                "score": _score(row["Score"]),
            }
            for row in report.get_details("Column Pair Trends").to_dict("records")
        ]
    sampled = f" on a uniform sample of {real.height}" if real.height < training.height else ""
    return {
        "reference": "real rows (training split)",
        "label": NOT_DP,
        "reveals": (
            f"Computed{sampled} from the real rows without noise: each score says how close "
            "the synthetic distribution of a column, or of a pair of columns, is to the real "
            "one; a pair left unscored (null) shows that the real rows have no association "
            "between its columns above SDMetrics' threshold."
        ),
        "overall": _score(report.get_score()),
        "properties": properties,
        "column_shapes": shapes,
        "column_pair_trends": pairs,
        "per_column": {s["column"]: s["score"] for s in shapes},
    }


def _match_share(synthetic: pl.DataFrame, real: pl.DataFrame) -> float:
    if synthetic.height == 0:
        return 0.0
    matched = synthetic.join(real.unique(), on=synthetic.columns, how="semi", nulls_equal=True)
    return matched.height / synthetic.height


def sdv_privacy(
    training: pl.DataFrame,
    holdout: pl.DataFrame,
    synthetic: pl.DataFrame,
    columns: Sequence[SynthColumn],
    seed: int,
) -> dict:
    from sdmetrics.single_table import DCROverfittingProtection

    size = min(training.height, holdout.height, PRIVACY_SAMPLE_ROWS)
    train_sample = _sample(training, size, seed)
    holdout_sample = _sample(holdout, size, seed + 1)
    fake = _sample(synthetic, PRIVACY_SAMPLE_ROWS, seed + 2)
    exact = _match_share(synthetic, training)
    exact_training = _match_share(fake, train_sample)
    exact_holdout = _match_share(fake, holdout_sample)
    dcr = None
    if size > 0:
        with warnings.catch_warnings():
            # SDMetrics warns when the holdout is under half the training rows; the samples
            # passed here are equal-sized by construction.
            warnings.simplefilter("ignore", UserWarning)
            dcr = DCROverfittingProtection.compute_breakdown(
                real_training_data=train_sample.to_pandas(),
                synthetic_data=fake.to_pandas(),
                real_validation_data=holdout_sample.to_pandas(),
                metadata=sdmetrics_metadata(columns),
                table_name=None,
            )
    closer = None if dcr is None else float(dcr["synthetic_data_percentages"]["closer_to_training"])
    flags = []
    if exact_training - exact_holdout > COPY_MARGIN:
        flags.append(
            "Synthetic rows match training rows exactly far more often than unseen holdout rows: "
            "the synthesizer may copy real records."
        )
    if closer is not None and closer > DCR_CLOSER_TO_TRAINING_LIMIT:
        flags.append(
            "Most synthetic rows are closer to a training row than to any holdout row: the "
            "synthesizer may be overfitted to real records."
        )
    return {
        "differentially_private": False,
        "label": NOT_DP,
        "epsilon": None,
        "delta": None,
        "holdout_rows": holdout.height,
        "training_rows": training.height,
        "sample_rows": size,
        "exact_match_share": exact,
        "exact_match_share_training_sample": exact_training,
        "exact_match_share_holdout_sample": exact_holdout,
        "dcr_overfitting_protection": None if dcr is None else float(dcr["score"]),
        "dcr_closer_to_training_share": closer,
        "flags": flags,
        "reveals": (
            "Computed from the real rows without noise: the numbers of training and holdout rows, "
            "and how often synthetic rows coincide with or lie close to real rows. No formal "
            "privacy guarantee applies to this extract."
        ),
    }
