"""Properties of the parser: it only ever refuses with QueryError, and over generated queries and
policies it accepts exactly those whose every column use the policies allow."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.sql.parser import parse_query
from dataplane.sql.plan import AggregateKind, DatasetInfo, ParsedQuery, QueryError, Shape, Use
from tests.jobs.test_sql_parser import AGE_BANDS, CHARITE, USZ, hospitals, patient_columns

# Derandomized, so CI runs the same examples every time.
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)

VALID = [
    "SELECT sex, COUNT(*) FROM charite.patients GROUP BY sex",
    "SELECT d.age_band, COUNT(*) AS n, SUM(v.length_of_stay) AS days\n"
    "FROM charite.patients AS d JOIN usz.patients AS v ON d.person_hash = v.person_hash\n"
    "WHERE d.sex IN ('f', 'm') AND v.length_of_stay BETWEEN 1 AND 30\nGROUP BY d.age_band",
    "SELECT u.age_band, COUNT(*) FROM (SELECT age_band FROM charite.patients WHERE sex = 'f' "
    "UNION ALL SELECT age_band FROM usz.patients) AS u GROUP BY u.age_band;",
]
SQL_CHARACTERS = list("()*,.;'\"=-/+<> \n\tSELCTFROMWHEUNIABYDsxyz0123456789$:[]{}|\\")


def parses_or_refuses(sql: str) -> None:
    try:
        assert isinstance(parse_query(sql, hospitals()), ParsedQuery)
    except QueryError as error:
        assert error.reason
        assert error.line >= 1
        assert error.column >= 1


@PROPERTY
@given(st.text())
def test_any_text_is_parsed_or_refused_with_a_query_error(sql):
    parses_or_refuses(sql)


@st.composite
def mutated_queries(draw: st.DrawFn) -> str:
    sql = draw(st.sampled_from(VALID))
    characters = st.sampled_from(SQL_CHARACTERS) | st.characters()
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(sql)))
        if draw(st.booleans()):
            sql = sql[:at] + draw(characters) + sql[at:]
        else:
            sql = sql[:at] + sql[at + draw(st.integers(1, 8)) :]
    return sql


@PROPERTY
@given(mutated_queries())
def test_a_valid_query_with_characters_inserted_or_deleted_is_parsed_or_refused(sql):
    parses_or_refuses(sql)


# Generated queries against generated policies ---------------------------------------------------

COLUMNS = patient_columns()
UNIT = "patient_id"
DIMENSIONS = ["age_band", "sex"]
MEASURES = ["length_of_stay", "cost"]
FILTERABLE = ["age_band", "sex", "length_of_stay", "cost", "readmitted"]
USES = [(dataset, column, use) for dataset in (CHARITE, USZ) for column in COLUMNS for use in Use]


@dataclass
class Generated:
    """A query in the language's grammar, and what the parser must find it uses."""

    sql: str
    shape: Shape
    datasets: tuple[str, ...]
    uses: set[tuple[str, str, Use]] = field(default_factory=set)
    aggregates: set[tuple[str, AggregateKind]] = field(default_factory=set)
    unit: bool = False  # the privacy unit used other than as a join key: always refused

    def use(self, datasets: tuple[str, ...], column: str, use: Use) -> None:
        self.unit |= column == UNIT and use is not Use.JOIN_KEY
        self.uses |= {(dataset, column, use) for dataset in datasets}


def word(draw: st.DrawFn, keyword: str) -> str:
    return draw(st.sampled_from([keyword, keyword.lower()]))


def condition(draw: st.DrawFn, column: str, written: str) -> str:
    """A random condition on `column`, whose values fit its type and domain."""
    if column in ("age_band", "sex", UNIT):
        domain = AGE_BANDS if column == "age_band" else ("f", "m")
        values = draw(st.lists(st.sampled_from(domain), min_size=1, max_size=3, unique=True))
        quoted = [f"'{value}'" for value in values]
        if draw(st.booleans()):
            return f"{written} {word(draw, 'IN')} ({', '.join(quoted)})"
        return draw(st.sampled_from([f"{written} = {quoted[0]}", f"{quoted[0]} = {written}"]))
    if column == "readmitted":
        return f"{written} = {draw(st.sampled_from(['TRUE', 'false']))}"
    low, high = sorted(draw(st.lists(st.integers(-5, 90), min_size=2, max_size=2)))
    if draw(st.booleans()):
        return f"{written} {word(draw, 'BETWEEN')} {low} {word(draw, 'AND')} {high}"
    return f"{written} = {low}"


def where(draw: st.DrawFn, conditions: list[str]) -> str:
    if not conditions:
        return ""
    return f" {word(draw, 'WHERE')} " + f" {word(draw, 'AND')} ".join(conditions)


@st.composite
def queries(draw: st.DrawFn) -> Generated:
    shape = draw(st.sampled_from(Shape))
    first, second = draw(st.permutations([CHARITE, USZ]))
    space = draw(st.sampled_from([" ", "\n", "\n  "]))
    dimensions = draw(st.lists(st.sampled_from(DIMENSIONS), max_size=2, unique=True))
    aggregates = draw(
        st.lists(
            st.tuples(st.sampled_from(AggregateKind), st.sampled_from(MEASURES)),
            min_size=1,
            max_size=3,
            unique_by=lambda a: a[0] if a[0] is AggregateKind.COUNT else a,
        )
    )
    filters = draw(st.lists(st.sampled_from(FILTERABLE), max_size=3, unique=True))
    # Now and then the privacy unit slips in, as a dimension, a filter or a join key.
    unit = draw(st.sampled_from([None] * 6 + [Use.DIMENSION, Use.FILTER, Use.JOIN_KEY]))
    dimensions += [UNIT] * (unit is Use.DIMENSION)
    filters += [UNIT] * (unit is Use.FILTER or (unit is Use.JOIN_KEY and shape is not Shape.JOIN))
    sides: dict[str, tuple[str, ...]]  # qualifier ("" for none) -> the datasets it names

    if shape is Shape.SINGLE:
        generated = Generated("", shape, (first,))
        alias = draw(st.sampled_from([None, "p"]))
        source = first + (f" {draw(st.sampled_from(['AS ', '']))}{alias}" if alias else "")
        qualifiers = [alias] if alias else [None, "patients", first]
        sides = {q or "": (first,) for q in qualifiers}
    elif shape is Shape.JOIN:
        generated = Generated("", shape, (first, second))
        key = UNIT if unit is Use.JOIN_KEY else "person_hash"
        on = draw(st.sampled_from([f"a.{key} = b.{key}", f"b.{key} = a.{key}"]))
        join = draw(st.sampled_from(["JOIN", "INNER JOIN"]))
        source = f"{first} AS a{space}{word(draw, join)} {second} b {word(draw, 'ON')} {on}"
        generated.use((first, second), key, Use.JOIN_KEY)
        sides = {"a": (first,), "b": (second,)}
    else:
        generated = Generated("", shape, (first, second))
        sides = {"u": (first, second), "": (first, second)}

    def column(name: str) -> tuple[tuple[str, ...], str]:
        qualifier = draw(st.sampled_from(sorted(sides)))
        return sides[qualifier], f"{qualifier}.{name}" if qualifier else name

    items, group, conditions = [], [], []
    for name in dimensions:
        datasets, written = column(name)
        generated.use(datasets, name, Use.DIMENSION)
        items.append(written)
        group.append(written)
    for kind, name in aggregates:
        if kind is AggregateKind.COUNT:
            items.append(f"{word(draw, 'COUNT')}(*)")
            generated.aggregates |= {(dataset, kind) for dataset in generated.datasets}
            continue
        datasets, written = column(name)
        generated.use(datasets, name, Use.MEASURE)
        generated.aggregates |= {(dataset, kind) for dataset in datasets}
        items.append(f"{word(draw, kind.value.upper())}({written})")
    for name in filters:
        datasets, written = column(name)
        generated.use(datasets, name, Use.FILTER)
        conditions.append(condition(draw, name, written))

    if shape is Shape.UNION:
        # COUNT's measure is projected but unused, which must not count as a use.
        projected = sorted({*dimensions, *(name for _, name in aggregates), *filters})
        branches = []
        for dataset in generated.datasets:
            branch_filters = draw(st.lists(st.sampled_from(FILTERABLE), max_size=2, unique=True))
            for name in branch_filters:
                generated.use((dataset,), name, Use.FILTER)
            branch_where = where(draw, [condition(draw, name, name) for name in branch_filters])
            # Text for the parser to read, never run.
            branch = f"SELECT {', '.join(projected)} FROM {dataset}{branch_where}"  # noqa: S608
            branches.append(branch)
        source = f"({f'{space}UNION ALL{space}'.join(branches)}) AS u"

    grouping = f"{space}{word(draw, 'GROUP BY')} {', '.join(draw(st.permutations(group)))}"
    generated.sql = (
        f"{word(draw, 'SELECT')} {', '.join(draw(st.permutations(items)))}{space}"
        f"{word(draw, 'FROM')} {source}{where(draw, conditions)}{grouping if group else ''}"
    )
    return generated


@st.composite
def policies(draw: st.DrawFn) -> dict[str, DatasetInfo]:
    """The fixture's datasets with a few uses and aggregates taken away at random. The privacy
    unit is listed like any other column: a policy can make it a join key, nothing else."""
    forbidden = draw(st.sets(st.sampled_from(USES), max_size=8))
    datasets = {}
    for name in (CHARITE, USZ):
        kept = set(AggregateKind) - draw(st.sets(st.sampled_from(AggregateKind), max_size=1))
        allowed = {
            use: frozenset(c for c in COLUMNS if (name, c, use) not in forbidden) for use in Use
        }
        datasets[name] = DatasetInfo(name, patient_columns(), allowed, frozenset(kept))
    return datasets


def allows(datasets: dict[str, DatasetInfo], generated: Generated) -> bool:
    return (
        not generated.unit
        and all(column in datasets[d].allowed[use] for d, column, use in generated.uses)
        and all(kind in datasets[d].allowed_aggregates for d, kind in generated.aggregates)
    )


@PROPERTY
@given(queries(), policies())
def test_a_generated_query_is_accepted_exactly_when_every_policy_allows_its_uses(
    generated, datasets
):
    try:
        parsed = parse_query(generated.sql, datasets)
    except QueryError as error:
        assert not allows(datasets, generated), f"{generated.sql!r} refused: {error}"
        return
    assert allows(datasets, generated), f"{generated.sql!r} accepted"
    assert parsed.uses == generated.uses
    assert parsed.shape is generated.shape
    assert parsed.datasets == generated.datasets
