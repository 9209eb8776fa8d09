"""Turning an uploaded CSV or Parquet file into an encrypted, validated Parquet file.

Everything streams: the checks and the Parquet conversion run on Polars' streaming engine and the
ragged-row check reads the CSV line by line, so a 1 GB upload needs far less than 1 GB of memory.
A CSV reaches the engine in blocks of whole records read here, not through Polars' own CSV scan:
that scan reads ahead of a slower consumer without bound, so its peak memory grows with the file.
Plaintext only ever exists in a private temporary folder that is removed before this returns.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl
from django.conf import settings
from polars.io.plugins import register_io_source

from cleanroom.crypto.envelope import encrypt_stream
from cleanroom.errors import DomainError
from dataplane.sql.plan import ColumnRole
from parties.models import Column

READ_CHUNK = 1024 * 1024
# How much of a CSV the streaming engine is handed at a time (cut on a record boundary).
CSV_BLOCK = 1024 * 1024
# Inference looks at the first rows only; validation then checks every row.
INFER_ROWS = 10_000
# A column with at most this many distinct values in the sample is suggested as a dimension.
DIMENSION_MAX_VALUES = 30

POLARS_TYPES: dict[str, pl.DataType] = {
    Column.Type.INTEGER: pl.Int64(),
    Column.Type.FLOAT: pl.Float64(),
    Column.Type.STRING: pl.String(),
    Column.Type.BOOLEAN: pl.Boolean(),
    Column.Type.DATE: pl.Date(),
}
NUMERIC = {Column.Type.INTEGER, Column.Type.FLOAT}
NOT_NULL_ROLES = {ColumnRole.UNIT, ColumnRole.JOIN_KEY, ColumnRole.DIMENSION}
MAX_BOUND = Decimal(10) ** 20


class IngestError(DomainError):
    """The file or its declared schema was refused; nothing was stored."""

    code = "invalid_dataset"


@dataclass
class ColumnSpec:
    name: str
    type: str
    role: str
    domain: list[Any] = field(default_factory=list)
    lower: Decimal | None = None
    upper: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "role": self.role,
            "domain": self.domain,
            "lower": None if self.lower is None else str(self.lower),
            "upper": None if self.upper is None else str(self.upper),
        }


@dataclass
class StoredFile:
    content_sha256: str
    ciphertext_sha256: str
    row_count: int
    stored_bytes: int
    source_format: str


def detect_format(path: Path, filename: str = "") -> str:
    size = path.stat().st_size
    if size == 0:
        raise IngestError("The file is empty.")
    with path.open("rb") as handle:
        head = handle.read(4096)
        handle.seek(max(0, size - 4))
        tail = handle.read(4)
    if head[:4] == b"PAR1" and tail == b"PAR1":
        return "parquet"
    if filename.lower().endswith(".parquet"):
        raise IngestError("The file is named .parquet but is not a valid Parquet file.")
    if b"\x00" in head:
        raise IngestError("The file is neither CSV (it contains binary data) nor Parquet.")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 4 KiB boundary is not an error.
        if exc.start < len(head) - 3:
            raise IngestError("The file is neither UTF-8 CSV nor Parquet.") from None
    return "csv"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_csv_shape(path: Path) -> list[str]:
    """Return the header; refuse ragged rows with their line number, streaming the file."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise IngestError("The file is empty.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise IngestError(f"The file is not readable CSV: {exc}.") from None
        width = len(header)
        rows = 0
        try:
            for rows, row in enumerate(reader, start=1):
                if len(row) != width:
                    raise IngestError(
                        f"Row {rows} (line {reader.line_num}) has {len(row)} fields; "
                        f"the header has {width}."
                    )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise IngestError(f"The file is not readable CSV near row {rows + 1}: {exc}.") from None
    if rows == 0:
        raise IngestError("The file has a header but no rows.")
    return header


def _check_header(header: list[str]) -> None:
    names = [name.strip() for name in header]
    if any(not name for name in names):
        raise IngestError("Every column needs a name in the header row.")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise IngestError(f"The column name {name!r} appears twice in the header.")
        seen.add(name)


def _first_record_end(buffer: bytes) -> int:
    """Just past the first newline outside quotes (a quoted field may hold newlines), or 0."""
    start = quotes = 0
    while (newline := buffer.find(b"\n", start)) != -1:
        quotes += buffer.count(b'"', start, newline)
        if quotes % 2 == 0:
            return newline + 1
        start = newline + 1
    return 0


def _last_record_end(buffer: bytes) -> int:
    """Just past the last newline outside quotes, or 0."""
    quotes, end = buffer.count(b'"'), len(buffer)
    while (newline := buffer.rfind(b"\n", 0, end)) != -1:
        quotes -= buffer.count(b'"', newline, end)
        if quotes % 2 == 0:
            return newline + 1
        end = newline
    return 0


def _csv_blocks(path: Path) -> Iterator[bytes]:
    """The records after the header, in blocks of about CSV_BLOCK bytes of whole records."""
    carry, in_header = b"", True
    with path.open("rb") as handle:
        while data := handle.read(CSV_BLOCK):
            carry += data
            if in_header:
                start = _first_record_end(carry)
                if not start:
                    continue
                carry, in_header = carry[start:], False
            end = _last_record_end(carry)
            if end:
                yield carry[:end]
                carry = carry[end:]
    if carry and not in_header:
        yield carry


def _csv_frames(path: Path, header: list[str]) -> Iterator[pl.DataFrame]:
    """The rows, every column as text, a block at a time."""
    schema = {name: pl.String for name in header}
    for block in _csv_blocks(path):
        yield pl.read_csv(block, has_header=False, schema=schema)


def _scan_csv_as_text(
    path: Path, header: list[str], offences: _Offences | None = None
) -> pl.LazyFrame:
    """Every column as text, streamed block by block (the engine pulls the next block only when
    it has room for it); `offences` checks each whole block on the way."""

    def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        remaining = n_rows
        if offences is not None:
            offences.reset()
        for frame in _csv_frames(path, header):
            if offences is not None:
                offences.add(frame)
            if with_columns is not None:
                frame = frame.select(with_columns)
            if predicate is not None:
                frame = frame.filter(predicate)
            if remaining is not None:
                frame = frame.head(remaining)
                remaining -= frame.height
            yield frame
            if remaining == 0:
                return

    return register_io_source(source, schema={name: pl.String for name in header})


def _scan(path: Path, fmt: str, header: list[str]) -> pl.LazyFrame:
    if fmt == "parquet":
        return pl.scan_parquet(path)
    return _scan_csv_as_text(path, header)


def _parquet_columns(path: Path) -> list[str]:
    try:
        names = pl.scan_parquet(path).collect_schema().names()
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IngestError(f"The Parquet file could not be read: {exc}.") from None
    if rows == 0:
        raise IngestError("The file has no rows.")
    return names


def read_header(path: Path, fmt: str) -> list[str]:
    header = _check_csv_shape(path) if fmt == "csv" else _parquet_columns(path)
    _check_header(header)
    return header


def infer_schema(path: Path, filename: str = "") -> tuple[str, list[ColumnSpec]]:
    """Suggest a type and role for every column from the first rows; the owner confirms it."""
    fmt = detect_format(path, filename)
    if fmt == "csv":
        with path.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except (StopIteration, csv.Error, UnicodeDecodeError):
                raise IngestError("The file has no readable header row.") from None
        _check_header(header)
        try:
            sample = pl.read_csv(
                path,
                n_rows=INFER_ROWS,
                infer_schema_length=INFER_ROWS,
                truncate_ragged_lines=True,
                try_parse_dates=True,
            )
        except pl.exceptions.PolarsError as exc:
            raise IngestError(f"The file is not readable CSV: {exc}.") from None
    else:
        _check_header(_parquet_columns(path))
        sample = pl.scan_parquet(path).head(INFER_ROWS).collect()
    if sample.height == 0:
        raise IngestError("The file has a header but no rows.")
    specs = [_suggest(sample[name]) for name in sample.columns]
    _suggest_one_unit(specs, sample)
    return fmt, specs


# Names that say a column identifies someone: a unit, or a key to link them with.
_UNIT_NAMES = ("id", "pseudonym", "pseudo_id", "patient", "person", "subject", "mrn", "uuid")
_KEY_NAMES = ("hash", "key", "token")


def _words(name: str) -> list[str]:
    return [word for word in name.lower().replace("-", "_").replace(" ", "_").split("_") if word]


def _names_a_unit(name: str) -> bool:
    words = _words(name)
    # patient_id, pseudonym, PatientID, patientId; not "covid" or "paid".
    return bool(words) and (
        words[-1] in _UNIT_NAMES or re.search(r"[a-z](Id|ID)$", name) is not None
    )


def _names_a_key(name: str) -> bool:
    return any(word in _KEY_NAMES for word in _words(name))


def _identifies_rows(series: pl.Series) -> bool:
    """An id-like column: named like one, or (text or whole numbers) nearly unique per row in a
    sample too large for that to be chance. Such a column is never suggested as a dimension
    (its domain would list people) nor as a measure (its bounds would be someone's id)."""
    if _names_a_unit(series.name) or _names_a_key(series.name):
        return True
    if not (series.dtype.is_integer() or series.dtype == pl.String):
        return False
    values = series.drop_nulls()
    return values.len() > DIMENSION_MAX_VALUES and values.n_unique() >= 0.95 * values.len()


def _suggest(series: pl.Series) -> ColumnSpec:
    dtype = series.dtype
    if dtype.is_integer():
        col_type = Column.Type.INTEGER
    elif dtype.is_float() or dtype.is_decimal():
        col_type = Column.Type.FLOAT
    elif dtype == pl.Boolean:
        col_type = Column.Type.BOOLEAN
    elif dtype in (pl.Date, pl.Datetime):
        col_type = Column.Type.DATE
    else:
        col_type = Column.Type.STRING
    distinct = series.drop_nulls().unique()
    spec = ColumnSpec(name=series.name, type=col_type, role=ColumnRole.OTHER)
    if _identifies_rows(series):
        # The unit is chosen among these by _suggest_one_unit; the rest may link datasets.
        spec.role = ColumnRole.JOIN_KEY if _names_a_key(series.name) else ColumnRole.OTHER
    elif (
        col_type != Column.Type.FLOAT
        and len(distinct) <= DIMENSION_MAX_VALUES
        # Values that repeat: a column whose every value is on one row lists people.
        and 2 * len(distinct) <= series.drop_nulls().len()
    ):
        spec.role = ColumnRole.DIMENSION
        spec.domain = sorted(_jsonable(v) for v in distinct.to_list())
    elif col_type in NUMERIC:
        spec.role = ColumnRole.MEASURE
        # Not the sample's exact minimum and maximum: bounds are shared with every room partner
        # (and are public in differential privacy), so they must not be a row's value.
        low, high = series.min(), series.max()
        if (
            isinstance(low, int | float | Decimal)
            and isinstance(high, int | float | Decimal)
            and math.isfinite(low)
            and math.isfinite(high)
        ):
            spec.lower = Decimal(0) if low >= 0 else -_round_up(-low)
            spec.upper = Decimal(0) if high <= 0 else _round_up(high)
            if spec.upper <= spec.lower:
                spec.upper = spec.lower + 1
    return spec


def _suggest_one_unit(specs: list[ColumnSpec], sample: pl.DataFrame) -> None:
    """Mark one id-like column as the privacy unit: the first named like a person's id, else the
    first id-like column with no empty value (a hashed person id is often the only one; the
    policy may then allow it as a join key too)."""
    candidates = [
        spec
        for spec in specs
        if _identifies_rows(sample[spec.name]) and sample[spec.name].null_count() == 0
    ]
    named = [spec for spec in candidates if _names_a_unit(spec.name)]
    chosen = next(iter(named or candidates), None)
    if chosen is not None:
        chosen.role = ColumnRole.UNIT


def _round_up(value: float | Decimal) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (> 0)."""
    exact = Decimal(str(value))
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5):
        bound = Decimal(step) * Decimal(10) ** exponent
        if bound >= exact:
            return bound
    return Decimal(10) ** (exponent + 1)


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | bool) else str(value)


def parse_specs(raw: list[dict[str, Any]]) -> list[ColumnSpec]:
    """Turn a declared schema (from a form or the API) into specs, checking it is coherent."""
    if not raw:
        raise IngestError("The schema declares no columns.")
    specs: list[ColumnSpec] = []
    for item in raw:
        name = str(item.get("name", "")).strip()
        if not name:
            raise IngestError("Every declared column needs a name.")
        if any(spec.name == name for spec in specs):
            raise IngestError(f"Column {name!r} is declared twice.")
        col_type, role = item.get("type"), item.get("role")
        if col_type not in Column.Type.values:
            raise IngestError(f"Column {name!r}: unknown type {col_type!r}.")
        if role not in Column.Role.values:
            raise IngestError(f"Column {name!r}: unknown role {role!r}.")
        spec = ColumnSpec(name=name, type=col_type, role=role)
        if role == ColumnRole.DIMENSION:
            domain = item.get("domain") or []
            if not isinstance(domain, list) or not domain:
                raise IngestError(
                    f"Column {name!r} is a dimension: declare its public domain of values."
                )
            if len(set(map(str, domain))) != len(domain):
                raise IngestError(f"Column {name!r}: the domain lists a value twice.")
            spec.domain = domain
        if role == ColumnRole.MEASURE:
            if col_type not in NUMERIC:
                raise IngestError(f"Column {name!r} is a measure, so it must be numeric.")
            try:
                spec.lower = Decimal(str(item.get("lower")))
                spec.upper = Decimal(str(item.get("upper")))
            except InvalidOperation:
                raise IngestError(
                    f"Column {name!r} is a measure: declare numeric clamp bounds."
                ) from None
            # The bounds are stored as Column.lower/upper (30 digits, 10 after the point).
            if not all(b.is_finite() and abs(b) < MAX_BOUND for b in (spec.lower, spec.upper)):
                raise IngestError(
                    f"Column {name!r} is a measure: declare finite clamp bounds below "
                    f"{MAX_BOUND:,} in size."
                )
            if not spec.lower < spec.upper:
                raise IngestError(f"Column {name!r}: the lower bound must be below the upper.")
        specs.append(spec)
    units = [s.name for s in specs if s.role == ColumnRole.UNIT]
    if len(units) != 1:
        raise IngestError(
            "Declare exactly one column as the privacy unit (the id of the person or entity "
            f"a row is about); found {len(units)}."
        )
    return specs


BOOLEAN_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _parsed(text: pl.Expr, col_type: str) -> pl.Expr:
    """Parse text into `col_type`; a value that does not parse becomes null (and is reported)."""
    if col_type == Column.Type.BOOLEAN:
        # when/is_in, not replace_strict: that makes the streaming engine hold whole columns.
        lowered = text.str.to_lowercase()
        return (
            pl.when(lowered.is_in([word for word, value in BOOLEAN_WORDS.items() if value]))
            .then(pl.lit(True))
            .when(lowered.is_in([word for word, value in BOOLEAN_WORDS.items() if not value]))
            .then(pl.lit(False))
            .otherwise(pl.lit(None, dtype=pl.Boolean))
        )
    if col_type == Column.Type.DATE:
        return text.str.to_date("%Y-%m-%d", strict=False)
    return text.cast(POLARS_TYPES[col_type], strict=False)


def _typed_domain(spec: ColumnSpec) -> pl.Series:
    values = pl.DataFrame({"v": [str(v) for v in spec.domain]})
    return values.select(_parsed(pl.col("v"), spec.type).alias("v"))["v"]


Check = tuple[ColumnSpec, pl.Expr, str]


class _Offences:
    """Rows failing each check, and the first failure's (row number, value), one block at a time.
    Eager on purpose: given all the checks at once, the streaming engine buffers far more than a
    block, and its peak memory grows with the file."""

    def __init__(self, checks: list[Check]):
        self.checks = checks
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * len(self.checks)
        self.first: dict[int, tuple[int, Any]] = {}
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        failed = frame.select([cond.alias(str(i)) for i, (_, cond, _) in enumerate(self.checks)])
        for i, (spec, _, _) in enumerate(self.checks):
            hits = failed[str(i)].fill_null(False)
            count = int(hits.sum())
            if count and i not in self.first:
                at = int(hits.arg_true()[0])
                self.first[i] = (self.rows + at + 1, frame[spec.name].cast(pl.String)[at])
            self.counts[i] += count
        self.rows += frame.height


def _first_offender(frame: pl.LazyFrame, condition: pl.Expr, column: str) -> tuple[int, Any]:
    row = (
        frame.with_row_index("__row", offset=1)
        .filter(condition)
        .select("__row", pl.col(column).cast(pl.String))
        .head(1)
        .collect(engine="streaming")
    )
    return row["__row"][0], row[column][0]


def _write_validated(path: Path, fmt: str, specs: list[ColumnSpec], plain: Path) -> None:
    """Check every row against `specs` and write the typed table to `plain` (Parquet)."""
    header = read_header(path, fmt)
    declared = {spec.name for spec in specs}
    missing = [name for name in header if name not in declared]
    extra = [spec.name for spec in specs if spec.name not in header]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the file has columns the schema does not declare: {', '.join(missing)}")
        if extra:
            parts.append(f"the schema declares columns the file lacks: {', '.join(extra)}")
        raise IngestError("Schema mismatch: " + "; ".join(parts) + ".")
    raw = _scan(path, fmt, header)
    casts: list[pl.Expr] = []
    checks: list[Check] = []
    for spec in specs:
        textual = fmt == "csv" or raw.collect_schema()[spec.name] == pl.String
        source = pl.col(spec.name).str.strip_chars() if textual else pl.col(spec.name)
        if textual:
            typed = _parsed(source, spec.type)
        else:
            dtype = raw.collect_schema()[spec.name]
            if spec.type == Column.Type.INTEGER and (dtype.is_float() or dtype.is_decimal()):
                # A plain cast would truncate 2.5 to 2; only whole numbers are integers.
                source_whole = pl.when(source.round(0) == source).then(source)
                typed = source_whole.cast(pl.Int64, strict=False)
            else:
                typed = source.cast(POLARS_TYPES[spec.type], strict=False)
        if spec.type == Column.Type.FLOAT:
            # NaN and infinity parse as floats but are not values: they would poison every sum.
            typed = pl.when(typed.is_finite()).then(typed)
        casts.append(typed.alias(spec.name))
        checks.append((spec, source.is_not_null() & typed.is_null(), f"is not a valid {spec.type}"))
        if spec.role in NOT_NULL_ROLES:
            checks.append((spec, source.is_null(), f"is empty, but a {spec.role} needs a value"))
        if spec.role == ColumnRole.DIMENSION:
            checks.append(
                (
                    spec,
                    typed.is_not_null() & ~typed.is_in(pl.lit(_typed_domain(spec)).implode()),
                    "is outside the declared domain",
                )
            )
    offences = _Offences(checks)
    if fmt == "csv":
        # One pass: each block is checked as the Parquet writer pulls it in. A refused file's
        # partial output is removed with the working folder.
        _scan_csv_as_text(path, header, offences).select(casts).sink_parquet(plain)
        counts, first = offences.counts, offences.first
    else:
        totals = raw.select(
            [cond.sum().alias(str(i)) for i, (_, cond, _) in enumerate(checks)]
        ).collect(engine="streaming")
        counts, first = [totals[str(i)][0] for i in range(len(checks))], {}
    for i, (spec, condition, reason) in enumerate(checks):
        if counts[i]:
            row, value = first.get(i) or _first_offender(raw, condition, spec.name)
            shown = "an empty value" if value is None else f"the value {value!r}"
            raise IngestError(
                f"Column {spec.name!r}: {shown} on row {row} {reason} ({counts[i]} rows affected)."
            )
    if fmt != "csv":
        raw.select(casts).sink_parquet(plain)


def store_encrypted(
    path: Path, *, filename: str, specs: list[ColumnSpec], data_key: bytes, destination: Path
) -> StoredFile:
    """Validate the whole file against `specs`, convert it to Parquet and encrypt it."""
    fmt = detect_format(path, filename)
    content_sha256 = _sha256_of(path)
    workdir = Path(tempfile.mkdtemp(prefix="ingest-", dir=settings.FILE_UPLOAD_TEMP_DIR))
    try:
        plain = workdir / "data.parquet"
        try:
            _write_validated(path, fmt, specs, plain)
        except pl.exceptions.PolarsError as exc:
            raise IngestError(f"The file could not be read: {exc}.") from None
        row_count = pl.scan_parquet(plain).select(pl.len()).collect().item()
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(".partial")
        try:
            with plain.open("rb") as src, partial.open("wb") as dst:
                encrypt_stream(src, dst, data_key)
            ciphertext_sha256 = _sha256_of(partial)
            partial.rename(destination)
        finally:
            partial.unlink(missing_ok=True)
        return StoredFile(
            content_sha256=content_sha256,
            ciphertext_sha256=ciphertext_sha256,
            row_count=row_count,
            stored_bytes=destination.stat().st_size,
            source_format=fmt,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
