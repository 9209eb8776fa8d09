"""The joint query language: what it accepts, and what it refuses with the line, column and why.

In a refused query, `^` marks where the error must point; it is removed before parsing.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from dataplane.sql.parser import allowed_uses, parse_query
from dataplane.sql.plan import (
    Aggregate,
    AggregateKind,
    ColumnInfo,
    ColumnRef,
    DatasetInfo,
    Dimension,
    Filter,
    FilterOp,
    Join,
    ParsedQuery,
    QueryError,
    Shape,
    Use,
)

CHARITE, USZ = "charite.patients", "usz.patients"
AGE_BANDS = ("0-17", "18-39", "40-64", "65+")


def patient_columns() -> dict[str, ColumnInfo]:
    columns = [
        ColumnInfo("patient_id", "string", "unit"),
        ColumnInfo("person_hash", "string", "join_key"),
        ColumnInfo("age_band", "string", "dimension", domain=AGE_BANDS),
        ColumnInfo("sex", "string", "dimension", domain=("f", "m")),
        ColumnInfo("length_of_stay", "integer", "measure", lower=Decimal(0), upper=Decimal(60)),
        ColumnInfo("cost", "float", "measure", lower=Decimal(0), upper=Decimal(200_000)),
        ColumnInfo("readmitted", "boolean", "other"),
    ]
    return {column.name: column for column in columns}


def hospital(
    name: str, allowed: dict[Use, set[str]], aggregates: set[AggregateKind]
) -> DatasetInfo:
    return DatasetInfo(
        qualified_name=name,
        columns=patient_columns(),
        allowed={use: frozenset(allowed.get(use, ())) for use in Use},
        allowed_aggregates=frozenset(aggregates),
    )


def hospitals() -> dict[str, DatasetInfo]:
    """Charité allows nearly everything, and even lists its privacy unit (which must not
    matter); USZ allows neither sex as a dimension, nor cost as a measure, nor AVG."""
    charite = hospital(
        CHARITE,
        {
            Use.JOIN_KEY: {"person_hash", "patient_id"},
            Use.DIMENSION: {"age_band", "sex", "patient_id"},
            Use.MEASURE: {"length_of_stay", "cost"},
            Use.FILTER: {"age_band", "sex", "length_of_stay", "cost", "readmitted", "patient_id"},
        },
        set(AggregateKind),
    )
    usz = hospital(
        USZ,
        {
            Use.JOIN_KEY: {"person_hash"},
            Use.DIMENSION: {"age_band"},
            Use.MEASURE: {"length_of_stay"},
            Use.FILTER: {"age_band", "length_of_stay"},
        },
        {AggregateKind.COUNT, AggregateKind.SUM},
    )
    return {CHARITE: charite, USZ: usz}


def marked(text: str) -> tuple[str, int, int]:
    """The query without its `^`, and the line and column the `^` marks."""
    offset = text.index("^")
    sql = text[:offset] + text[offset + 1 :]
    return sql, sql.count("\n", 0, offset) + 1, offset - sql.rfind("\n", 0, offset)


def refusal(sql: str, datasets: dict[str, DatasetInfo] | None = None) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_query(sql, hospitals() if datasets is None else datasets)
    return caught.value


def charite(column: str, use: Use) -> tuple[str, str, Use]:
    return (CHARITE, column, use)


def usz(column: str, use: Use) -> tuple[str, str, Use]:
    return (USZ, column, use)


# Accepted ---------------------------------------------------------------------------------------


def test_the_design_example_over_two_hospitals_parses_into_the_typed_plan():
    sql = """
        SELECT d.age_band, COUNT(*) AS n, SUM(v.length_of_stay) AS total, AVG(d.cost) AS mean
        FROM charite.patients AS d JOIN usz.patients AS v ON d.person_hash = v.person_hash
        WHERE d.sex IN ('f', 'm')
        GROUP BY d.age_band
    """
    assert parse_query(sql, hospitals()) == ParsedQuery(
        shape=Shape.JOIN,
        datasets=(CHARITE, USZ),
        dimensions=(Dimension(ColumnRef(CHARITE, "age_band"), "age_band"),),
        aggregates=(
            Aggregate(AggregateKind.COUNT, None, "n"),
            Aggregate(AggregateKind.SUM, ColumnRef(USZ, "length_of_stay"), "total"),
            Aggregate(AggregateKind.AVG, ColumnRef(CHARITE, "cost"), "mean"),
        ),
        filters=(Filter(ColumnRef(CHARITE, "sex"), FilterOp.IN, ("f", "m")),),
        joins=(Join(ColumnRef(CHARITE, "person_hash"), ColumnRef(USZ, "person_hash")),),
        uses=frozenset(
            {
                charite("age_band", Use.DIMENSION),
                charite("cost", Use.MEASURE),
                charite("sex", Use.FILTER),
                charite("person_hash", Use.JOIN_KEY),
                usz("length_of_stay", Use.MEASURE),
                usz("person_hash", Use.JOIN_KEY),
            }
        ),
    )


def test_a_join_condition_may_name_the_new_dataset_first():
    parsed = parse_query(
        "SELECT COUNT(*) FROM usz.patients v INNER JOIN charite.patients d "
        "ON d.person_hash = v.person_hash",
        hospitals(),
    )
    assert parsed.datasets == (USZ, CHARITE)
    assert parsed.joins == (Join(ColumnRef(USZ, "person_hash"), ColumnRef(CHARITE, "person_hash")),)


def test_a_single_dataset_query_takes_default_aliases_and_bare_columns():
    parsed = parse_query(
        "select sex, count(*), sum(cost), avg(length_of_stay) from charite.patients group by sex;",
        hospitals(),
    )
    assert parsed.shape is Shape.SINGLE
    assert parsed.datasets == (CHARITE,)
    assert parsed.dimensions == (Dimension(ColumnRef(CHARITE, "sex"), "sex"),)
    assert [a.alias for a in parsed.aggregates] == ["count", "sum_cost", "avg_length_of_stay"]
    assert parsed.filters == parsed.joins == parsed.union_columns == ()
    assert parsed.uses == {
        charite("sex", Use.DIMENSION),
        charite("cost", Use.MEASURE),
        charite("length_of_stay", Use.MEASURE),
    }


def test_a_dataset_without_alias_is_named_by_its_table_or_qualified_name():
    parsed = parse_query(
        "SELECT patients.sex, COUNT(*) FROM Charite.Patients "
        "WHERE charite.patients.age_band = '65+' GROUP BY sex",
        hospitals(),
    )
    assert parsed.dimensions == (Dimension(ColumnRef(CHARITE, "sex"), "sex"),)
    assert parsed.filters == (Filter(ColumnRef(CHARITE, "age_band"), FilterOp.EQ, ("65+",)),)


def test_counting_every_row_needs_no_group_by():
    parsed = parse_query("SELECT COUNT(*) AS patients FROM usz.patients", hospitals())
    assert parsed.dimensions == ()
    assert parsed.aggregates == (Aggregate(AggregateKind.COUNT, None, "patients"),)
    assert parsed.uses == frozenset()


def test_where_takes_in_equality_either_way_round_between_and_booleans_joined_by_and():
    parsed = parse_query(
        """SELECT age_band, COUNT(*) FROM charite.patients
        WHERE sex IN ('f') AND '65+' = age_band AND (length_of_stay BETWEEN 2 AND 14)
          AND cost BETWEEN -10 AND 1e4 AND readmitted = FALSE
        GROUP BY age_band""",
        hospitals(),
    )
    assert parsed.filters == (
        Filter(ColumnRef(CHARITE, "sex"), FilterOp.IN, ("f",)),
        Filter(ColumnRef(CHARITE, "age_band"), FilterOp.EQ, ("65+",)),
        Filter(ColumnRef(CHARITE, "length_of_stay"), FilterOp.BETWEEN, (2, 14)),
        Filter(ColumnRef(CHARITE, "cost"), FilterOp.BETWEEN, (-10.0, 10_000.0)),
        Filter(ColumnRef(CHARITE, "readmitted"), FilterOp.EQ, (False,)),
    )
    assert {use for _, _, use in parsed.uses} == {Use.DIMENSION, Use.FILTER}


def test_a_union_all_of_hospitals_names_the_first_dataset_and_uses_every_branch():
    sql = """
        SELECT u.age_band, COUNT(*), SUM(u.length_of_stay) AS days
        FROM (
            SELECT age_band, length_of_stay FROM charite.patients WHERE sex = 'f'
            UNION ALL
            SELECT age_band, length_of_stay FROM usz.patients
        ) AS u
        WHERE u.age_band IN ('40-64', '65+')
        GROUP BY u.age_band
    """
    parsed = parse_query(sql, hospitals())
    assert parsed.shape is Shape.UNION
    assert parsed.datasets == (CHARITE, USZ)
    assert parsed.union_columns == ("age_band", "length_of_stay")
    assert parsed.dimensions == (Dimension(ColumnRef(CHARITE, "age_band"), "age_band"),)
    assert parsed.aggregates[1] == Aggregate(
        AggregateKind.SUM, ColumnRef(CHARITE, "length_of_stay"), "days"
    )
    # A branch's filter holds in its dataset; the union's filter holds in each.
    assert parsed.filters == (
        Filter(ColumnRef(CHARITE, "sex"), FilterOp.EQ, ("f",)),
        Filter(ColumnRef(CHARITE, "age_band"), FilterOp.IN, ("40-64", "65+")),
        Filter(ColumnRef(USZ, "age_band"), FilterOp.IN, ("40-64", "65+")),
    )
    assert parsed.uses == {
        charite("sex", Use.FILTER),
        *(
            (dataset, column, use)
            for dataset in (CHARITE, USZ)
            for column, use in [
                ("age_band", Use.DIMENSION),
                ("age_band", Use.FILTER),
                ("length_of_stay", Use.MEASURE),
            ]
        ),
    }


def test_a_union_without_alias_is_referred_to_by_bare_columns():
    parsed = parse_query(
        "SELECT age_band, COUNT(*) FROM (SELECT age_band FROM usz.patients "
        "UNION ALL SELECT age_band FROM charite.patients) GROUP BY age_band",
        hospitals(),
    )
    assert parsed.datasets == (USZ, CHARITE)
    assert parsed.dimensions == (Dimension(ColumnRef(USZ, "age_band"), "age_band"),)


# Refused, with the line and column of the offending token -----------------------------------------

REFUSALS = [
    # Statements, comments, text that is not SQL.
    ("^-- counts\nSELECT COUNT(*) FROM charite.patients", "comments are not allowed"),
    ("SELECT COUNT(*) ^/* all */ FROM charite.patients", "explanations belong in the purpose"),
    (
        "SELECT COUNT(*) FROM charite.patients; ^SELECT COUNT(*) FROM usz.patients",
        "only one statement",
    ),
    ("^DROP TABLE charite.patients", "only SELECT queries are allowed, not DROP"),
    ("^INSERT INTO charite.patients VALUES (1)", "only SELECT queries are allowed, not INSERT"),
    ("^(SELECT COUNT(*) FROM charite.patients)", "not wrapped in parentheses"),
    ("SELECT COUNT(*) FROM charite.patients WHERE sex = ^'f", "a quote or comment is not closed"),
    ("SELECT COUNT(*) FROM charite.patients ^WHERE", "could not be read near 'WHERE'"),
    ("^", "the query is empty"),
    # Clauses outside the language.
    ("SELECT ^* FROM charite.patients", "SELECT * is not allowed"),
    ("SELECT ^d.*, COUNT(*) FROM charite.patients d", "SELECT * is not allowed"),
    (
        "SELECT ^DISTINCT sex, COUNT(*) FROM charite.patients GROUP BY sex",
        "DISTINCT is not allowed",
    ),
    (
        "SELECT sex, COUNT(*) FROM charite.patients GROUP BY sex\n^ORDER BY sex",
        "ORDER BY is not allowed: results are released per group, "
        "in the order of the public domain",
    ),
    ("SELECT COUNT(*) FROM charite.patients ^LIMIT 10", "LIMIT is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients ^OFFSET 10", "OFFSET is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients ^FETCH FIRST 3 ROWS ONLY", "FETCH is not allowed"),
    (
        "SELECT sex, COUNT(*) FROM charite.patients GROUP BY sex ^HAVING COUNT(*) > 5",
        "HAVING is not allowed",
    ),
    (
        "^WITH p AS (SELECT * FROM charite.patients) SELECT COUNT(*) FROM p",
        "WITH is not allowed",
    ),
    ("SELECT COUNT(*) FROM charite.patients ^QUALIFY cost > 1", "QUALIFY is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients ^WINDOW w AS ()", "WINDOW is not allowed"),
    ("SELECT COUNT(*) ^INTO results FROM charite.patients", "SELECT INTO is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients ^FOR UPDATE", "FOR UPDATE"),
    ("SELECT COUNT(*) FROM charite.patients ^TABLESAMPLE SYSTEM (10)", "TABLESAMPLE"),
    # Sub-queries and set operations.
    (
        "SELECT COUNT(*) FROM charite.patients WHERE sex IN (^SELECT sex FROM usz.patients)",
        "sub-queries are not allowed in WHERE",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE EXISTS (^SELECT 1 FROM usz.patients)",
        "sub-queries are not allowed in WHERE",
    ),
    (
        "SELECT COUNT(*), (^SELECT COUNT(*) FROM usz.patients) FROM charite.patients",
        "sub-queries are not allowed in SELECT",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN (^SELECT person_hash FROM usz.patients) v "
        "ON d.person_hash = v.person_hash",
        "sub-queries are not allowed in joins",
    ),
    (
        "SELECT COUNT(*) FROM (^SELECT sex FROM charite.patients) AS p",
        "a sub-query in FROM must be a UNION ALL of datasets",
    ),
    (
        "SELECT sex FROM charite.patients ^UNION ALL SELECT sex FROM usz.patients",
        "UNION ALL is only allowed in FROM",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT sex FROM charite.patients ^UNION "
        "SELECT sex FROM usz.patients) u",
        "UNION without ALL is not allowed",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT sex FROM charite.patients ^INTERSECT "
        "SELECT sex FROM usz.patients) u",
        "INTERSECT is not allowed",
    ),
    (
        "SELECT sex FROM charite.patients ^EXCEPT SELECT sex FROM usz.patients",
        "EXCEPT is not allowed",
    ),
    # Joins.
    (
        "SELECT COUNT(*) FROM charite.patients d ^LEFT JOIN usz.patients v "
        "ON d.person_hash = v.person_hash",
        "LEFT JOIN is not allowed: only inner joins",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d ^FULL OUTER JOIN usz.patients v "
        "ON d.person_hash = v.person_hash",
        "FULL OUTER JOIN is not allowed",
    ),
    ("SELECT COUNT(*) FROM charite.patients ^CROSS JOIN usz.patients", "CROSS JOIN is not allowed"),
    (
        "SELECT COUNT(*) FROM charite.patients ^NATURAL JOIN usz.patients",
        "NATURAL JOIN is not allowed",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN ^LATERAL (SELECT 1) x ON TRUE",
        "LATERAL is not allowed",
    ),
    ("SELECT COUNT(*) FROM charite.patients^, usz.patients", "comma joins are not allowed"),
    (
        "SELECT COUNT(*) FROM charite.patients JOIN usz.patients ^USING (person_hash)",
        "USING is not allowed",
    ),
    ("SELECT COUNT(*) FROM charite.patients ^JOIN usz.patients", "JOIN needs ON"),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON ^d.person_hash = v.person_hash AND d.sex = v.sex",
        "one equality of two join keys",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v ON ^d.person_hash = 'x'",
        "one equality of two join keys",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.^person_hash = d.person_hash",
        "must compare a column of usz.patients",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v ON d.^sex = v.sex",
        "sex in charite.patients has the role dimension, so it cannot be a join key",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN ^charite.patients e "
        "ON d.person_hash = e.person_hash",
        "charite.patients is read twice",
    ),
    # Datasets and columns.
    ("SELECT COUNT(*) FROM ^pharma.trials", "dataset pharma.trials is not in this room"),
    ("SELECT COUNT(*) FROM ^patients", "name the dataset with its organisation"),
    ("SELECT COUNT(*) FROM ^db.charite.patients", "organisation.dataset, in two parts"),
    ("SELECT COUNT(*) FROM charite.patients AS ^d (a, b)", "column aliases on a dataset"),
    (
        "SELECT ^height, COUNT(*) FROM charite.patients GROUP BY height",
        "column height does not exist in charite.patients",
    ),
    (
        "SELECT d.^secret, COUNT(*) FROM charite.patients d GROUP BY d.secret",
        "column d.secret does not exist in charite.patients",
    ),
    (
        "SELECT ^x.sex, COUNT(*) FROM charite.patients d GROUP BY x.sex",
        "unknown alias x",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.person_hash = v.person_hash WHERE ^sex = 'f'",
        "column sex is ambiguous",
    ),
    # The privacy unit, whatever a policy says.
    (
        "SELECT ^patient_id, COUNT(*) FROM charite.patients GROUP BY patient_id",
        "patient_id is the privacy unit of charite.patients",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE ^patient_id = 'p-17'",
        "privacy unit",
    ),
    # Joining on the unit needs every side's policy to allow it (USZ's does not).
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.patient_id = v.^patient_id",
        "usz.patients's policy does not allow patient_id as a join key",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT ^patient_id FROM charite.patients "
        "UNION ALL SELECT patient_id FROM usz.patients) u",
        "privacy unit",
    ),
    # Roles and policies.
    (
        "SELECT ^sex, COUNT(*) FROM usz.patients GROUP BY sex",
        "usz.patients's policy does not allow sex as a dimension",
    ),
    (
        "SELECT SUM(^cost) FROM usz.patients",
        "usz.patients's policy does not allow cost as a measure",
    ),
    (
        "SELECT COUNT(*) FROM usz.patients WHERE ^sex = 'f'",
        "usz.patients's policy does not allow sex as a filter",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE ^person_hash = 'abc'",
        "person_hash in charite.patients has the role join key, so it cannot be a filter",
    ),
    ("SELECT SUM(^sex) FROM charite.patients", "has the role dimension, so it cannot be a measure"),
    (
        "SELECT ^cost, COUNT(*) FROM charite.patients GROUP BY cost",
        "cost in charite.patients has the role measure, so it cannot be a dimension",
    ),
    ("SELECT ^AVG(length_of_stay) FROM usz.patients", "usz.patients's policy does not allow AVG"),
    (
        "SELECT u.age_band, COUNT(*), ^AVG(u.length_of_stay) FROM (SELECT age_band, length_of_stay "
        "FROM charite.patients UNION ALL SELECT age_band, length_of_stay FROM usz.patients) u "
        "GROUP BY u.age_band",
        "usz.patients's policy does not allow AVG",
    ),
    (
        "SELECT u.^sex, COUNT(*) FROM (SELECT sex FROM charite.patients UNION ALL "
        "SELECT sex FROM usz.patients) u GROUP BY u.sex",
        "usz.patients's policy does not allow sex as a dimension",
    ),
    # SELECT items.
    (
        "SELECT ^sex, COUNT(*) FROM charite.patients",
        "sex must appear in GROUP BY: only grouped dimensions and aggregates are released",
    ),
    ("^SELECT sex FROM charite.patients GROUP BY sex", "the query releases no aggregate"),
    ("SELECT ^COUNT(cost) FROM charite.patients", "COUNT(column) is not allowed: use COUNT(*)"),
    ("SELECT ^COUNT(DISTINCT sex) FROM charite.patients", "COUNT(DISTINCT ...) is not allowed"),
    ("SELECT ^SUM(DISTINCT cost) FROM charite.patients", "SUM(DISTINCT ...) is not allowed"),
    ("SELECT ^SUM(ABS(cost)) FROM charite.patients", "nested functions are not allowed"),
    ("SELECT ^SUM(cost * 2) FROM charite.patients", "SUM takes one measure column"),
    ("SELECT COUNT(*), ^MIN(cost) FROM charite.patients", "MIN is not allowed"),
    ("SELECT COUNT(*), ^max(cost) FROM charite.patients", "MAX is not allowed"),
    ("SELECT COUNT(*), ^cost + 1 FROM charite.patients", "arithmetic and operators"),
    (
        "SELECT COUNT(*), ^CASE WHEN cost > 0 THEN 1 END FROM charite.patients",
        "CASE is not allowed",
    ),
    ("SELECT COUNT(*), ^42 FROM charite.patients", "literals are not allowed in SELECT"),
    (
        "SELECT ^SUM(cost) OVER (PARTITION BY sex) FROM charite.patients",
        "window functions (SUM OVER) are not allowed",
    ),
    (
        "SELECT ^COUNT(*) FILTER (WHERE sex = 'f') FROM charite.patients",
        "FILTER (WHERE ...) is not allowed",
    ),
    (
        "SELECT sex AS n, ^COUNT(*) AS n FROM charite.patients GROUP BY sex",
        "the output column name n is used twice",
    ),
    # WHERE.
    (
        "SELECT COUNT(*) FROM charite.patients WHERE sex = 'f' ^OR sex = 'm'",
        "OR is not allowed",
    ),
    ("SELECT COUNT(*) FROM charite.patients WHERE sex ^NOT IN ('f')", "NOT is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients WHERE cost ^> 100", "> is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients WHERE sex ^LIKE 'f%'", "LIKE is not allowed"),
    ("SELECT COUNT(*) FROM charite.patients WHERE cost ^IS NULL", "IS is not allowed"),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE sex = ^'x'",
        "'x' is not in the public domain of sex in charite.patients ('f', 'm')",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE age_band IN ('65+', ^'90+')",
        "'90+' is not in the public domain of age_band",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE length_of_stay = ^'long'",
        "'long' does not match length_of_stay, which is integer",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE length_of_stay = ^2.5",
        "2.5 does not match length_of_stay, which is integer",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE length_of_stay = ^NULL",
        "values are plain numbers, strings, TRUE or FALSE",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE ^sex BETWEEN 'f' AND 'm'",
        "BETWEEN needs a number or a date; sex is string",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients WHERE cost BETWEEN ^10 AND 1",
        "the low end is above the high end",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.person_hash = v.person_hash WHERE ^d.age_band = v.age_band",
        "= compares one column with one value",
    ),
    # GROUP BY.
    (
        "SELECT sex, COUNT(*) FROM charite.patients GROUP BY ^1",
        "GROUP BY positions are not allowed",
    ),
    (
        "SELECT COUNT(*) FROM charite.patients GROUP BY ^sex",
        "sex is in GROUP BY but not selected",
    ),
    (
        "SELECT sex, COUNT(*) FROM charite.patients GROUP BY ^ROLLUP (sex)",
        "GROUP BY takes dimension columns only, not ROLLUP, CUBE or GROUPING SETS",
    ),
    (
        "SELECT sex, COUNT(*) FROM charite.patients GROUP BY ^LOWER(sex)",
        "GROUP BY takes dimension columns only, not expressions",
    ),
    (
        "SELECT sex AS s, COUNT(*) FROM charite.patients GROUP BY ^s",
        "GROUP BY names columns, not output names like s",
    ),
    # The UNION ALL source.
    (
        "SELECT COUNT(*) FROM (SELECT sex, age_band FROM charite.patients UNION ALL "
        "^SELECT age_band, sex FROM usz.patients) u",
        "every UNION ALL branch projects the same columns in the same order",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT ^sex AS s FROM charite.patients UNION ALL "
        "SELECT sex FROM usz.patients) u",
        "without aliases or expressions",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT ^* FROM charite.patients UNION ALL "
        "SELECT * FROM usz.patients) u",
        "SELECT * is not allowed",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT sex FROM charite.patients UNION ALL SELECT sex FROM "
        "usz.patients) u ^JOIN charite.patients d ON d.sex = u.sex",
        "a UNION ALL source cannot be joined",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT sex FROM charite.patients ^GROUP BY sex UNION ALL "
        "SELECT sex FROM usz.patients) u",
        "GROUP BY is not allowed in a UNION ALL branch",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT d.sex FROM charite.patients d ^JOIN usz.patients v "
        "ON d.person_hash = v.person_hash UNION ALL SELECT sex FROM usz.patients) u",
        "a UNION ALL branch reads one dataset",
    ),
    (
        "SELECT COUNT(*) FROM (SELECT sex FROM charite.patients UNION ALL "
        "SELECT sex FROM usz.patients) u WHERE u.^cost = 1",
        "column u.cost does not exist in the UNION ALL",
    ),
]


@pytest.mark.parametrize(("text", "reason"), REFUSALS, ids=[reason for _, reason in REFUSALS])
def test_a_query_outside_the_language_is_refused_with_reason_line_and_column(text, reason):
    sql, line, column = marked(text)
    error = refusal(sql)
    assert reason in error.reason
    assert (error.line, error.column) == (line, column)


def test_a_refusal_on_the_third_line_points_at_the_token_there():
    sql = "SELECT age_band,\n       COUNT(*)\n  FROM charite.patients LIMIT 5"
    error = refusal(sql)
    assert (error.line, error.column) == (3, 25)
    assert str(error) == (
        "line 3, column 25: LIMIT is not allowed: every group of the public domain is released"
    )


def test_a_column_the_policy_forbids_is_reported_where_it_is_written():
    sql = (
        "SELECT d.age_band,\n  SUM(v.cost)\nFROM charite.patients d\n  JOIN usz.patients v\n"
        "    ON d.person_hash = v.person_hash\nGROUP BY d.age_band"
    )
    error = refusal(sql)
    assert error.reason == "usz.patients's policy does not allow cost as a measure"
    assert (error.line, error.column) == (2, 9)


def test_count_must_be_allowed_by_every_dataset_in_the_query():
    datasets = hospitals()
    datasets[USZ] = replace(datasets[USZ], allowed_aggregates=frozenset({AggregateKind.SUM}))
    sql, line, column = marked(
        "SELECT ^COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.person_hash = v.person_hash"
    )
    error = refusal(sql, datasets)
    assert error.reason == "usz.patients's policy does not allow COUNT"
    assert (error.line, error.column) == (line, column)


def test_a_join_key_the_policy_does_not_list_is_refused():
    datasets = hospitals()
    allowed = {**datasets[USZ].allowed, Use.JOIN_KEY: frozenset()}
    datasets[USZ] = replace(datasets[USZ], allowed=allowed)
    sql, line, column = marked(
        "SELECT COUNT(*) FROM charite.patients d\n"
        "JOIN usz.patients v ON d.person_hash = v.^person_hash"
    )
    error = refusal(sql, datasets)
    assert error.reason == "usz.patients's policy does not allow person_hash as a join key"
    assert (error.line, error.column) == (line, column) == (2, 42)


def test_union_branches_must_agree_on_column_types():
    datasets = hospitals()
    columns = dict(datasets[USZ].columns)
    columns["length_of_stay"] = replace(columns["length_of_stay"], type="float")
    datasets[USZ] = replace(datasets[USZ], columns=columns)
    sql, line, column = marked(
        "SELECT SUM(length_of_stay) FROM (SELECT length_of_stay FROM charite.patients "
        "UNION ALL SELECT ^length_of_stay FROM usz.patients) u"
    )
    error = refusal(sql, datasets)
    assert "length_of_stay is integer in charite.patients but float in usz.patients" in error.reason
    assert (error.line, error.column) == (line, column)


def test_a_query_nested_too_deeply_for_the_reader_is_refused_not_crashed():
    error = refusal("SELECT " + "(" * 5000 + "1" + ")" * 5000 + " FROM charite.patients")
    assert "could not be read" in error.reason or "nested too deeply" in error.reason


# The privacy unit as a join key -----------------------------------------------------------------


def unit_joinable() -> dict[str, DatasetInfo]:
    """Both hospitals allow their privacy unit as a join key, and Charité lists it for every
    other use too (which must not matter)."""
    datasets = hospitals()
    allowed = {**datasets[USZ].allowed, Use.JOIN_KEY: frozenset({"patient_id"})}
    datasets[USZ] = replace(datasets[USZ], allowed=allowed)
    return datasets


UNIT_JOIN = "FROM charite.patients d JOIN usz.patients v ON d.patient_id = v.patient_id"


def test_a_join_on_the_privacy_unit_is_accepted_where_both_policies_allow_it():
    parsed = parse_query(
        f"SELECT d.age_band, COUNT(*) {UNIT_JOIN} GROUP BY d.age_band", unit_joinable()
    )
    assert parsed.joins == (Join(ColumnRef(CHARITE, "patient_id"), ColumnRef(USZ, "patient_id")),)
    assert parsed.join_keys() == {CHARITE: ("patient_id",), USZ: ("patient_id",)}
    assert charite("patient_id", Use.JOIN_KEY) in parsed.uses
    assert not {use for _, column, use in parsed.uses if column == "patient_id"} - {Use.JOIN_KEY}


# An analyst who may join on the unit tries to read it out, group by it or pick a person with it.
UNIVERSAL = "patient_id is the privacy unit of"
UNIT_AS_JOIN_KEY_ATTACKS = [
    (f"SELECT d.^patient_id, COUNT(*) {UNIT_JOIN} GROUP BY d.patient_id", UNIVERSAL),
    (f"SELECT v.^patient_id AS who, COUNT(*) {UNIT_JOIN} GROUP BY v.patient_id", UNIVERSAL),
    (f"SELECT d.age_band, COUNT(*) {UNIT_JOIN} GROUP BY d.age_band, d.^patient_id", UNIVERSAL),
    (f"SELECT COUNT(*) {UNIT_JOIN} WHERE d.^patient_id = 'p-17'", UNIVERSAL),
    (f"SELECT COUNT(*) {UNIT_JOIN} WHERE v.^patient_id IN ('p-17', 'p-18')", UNIVERSAL),
    (f"SELECT COUNT(*) {UNIT_JOIN} WHERE d.^patient_id BETWEEN 'p-17' AND 'p-18'", UNIVERSAL),
    (f"SELECT SUM(v.^patient_id) {UNIT_JOIN}", UNIVERSAL),
    (
        "SELECT COUNT(*) FROM (SELECT ^patient_id FROM charite.patients "
        "UNION ALL SELECT patient_id FROM usz.patients) u",
        UNIVERSAL,
    ),
    # Refused by the language before the unit is even looked up.
    (f"SELECT ^COUNT(d.patient_id) {UNIT_JOIN}", "COUNT(column) is not allowed"),
    (
        f"SELECT d.age_band, COUNT(*) {UNIT_JOIN} GROUP BY d.age_band ^ORDER BY d.patient_id",
        "ORDER BY is not allowed",
    ),
]


@pytest.mark.parametrize(("text", "reason"), UNIT_AS_JOIN_KEY_ATTACKS)
def test_a_unit_allowed_as_join_key_is_still_never_output_grouped_or_filtered(text, reason):
    sql, line, column = marked(text)
    error = refusal(sql, unit_joinable())
    assert reason in error.reason
    assert (error.line, error.column) == (line, column)


def test_a_join_condition_cannot_filter_the_unit_against_a_value():
    error = refusal(
        "SELECT COUNT(*) FROM charite.patients d JOIN usz.patients v "
        "ON d.patient_id = 'p-17' AND d.patient_id = v.patient_id",
        unit_joinable(),
    )
    assert "a join condition is one equality of two join keys" in error.reason


# What the composer offers -----------------------------------------------------------------------


def test_the_composer_is_offered_only_the_uses_a_role_and_a_policy_both_allow():
    # Charité's policy lists its privacy unit for every use and `readmitted` (an "other"
    # column) as a filter: the unit is offered only as a join key, `readmitted` only as a filter.
    assert allowed_uses(hospitals()[CHARITE]) == {
        "patient_id": (Use.JOIN_KEY,),
        "person_hash": (Use.JOIN_KEY,),
        "age_band": (Use.DIMENSION, Use.FILTER),
        "sex": (Use.DIMENSION, Use.FILTER),
        "length_of_stay": (Use.MEASURE, Use.FILTER),
        "cost": (Use.MEASURE, Use.FILTER),
        "readmitted": (Use.FILTER,),
    }
    # What USZ's policy leaves out is not offered at all: sex, cost, readmitted, its unit.
    assert allowed_uses(hospitals()[USZ]) == {
        "person_hash": (Use.JOIN_KEY,),
        "age_band": (Use.DIMENSION, Use.FILTER),
        "length_of_stay": (Use.MEASURE, Use.FILTER),
    }


@pytest.mark.parametrize("name", [CHARITE, USZ])
def test_what_the_composer_offers_as_a_dimension_or_measure_is_what_the_parser_accepts(name):
    datasets = hospitals()
    offered = allowed_uses(datasets[name])
    for column in patient_columns():
        uses = offered.get(column, ())
        grouped = f"SELECT {column}, COUNT(*) AS n FROM {name} GROUP BY {column}"  # noqa: S608
        summed = f"SELECT SUM({column}) AS total FROM {name}"  # noqa: S608
        for use, sql in ((Use.DIMENSION, grouped), (Use.MEASURE, summed)):
            if use in uses:
                assert (name, column, use) in parse_query(sql, datasets).uses
            else:
                refusal(sql, datasets)
