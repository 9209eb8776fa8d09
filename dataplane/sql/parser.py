"""Parse a joint query into the typed plan, or refuse it with where (line, column) and why.

The language is an allowlist: every sqlglot node is checked for the arguments it may carry and
anything else is refused, so a construct sqlglot learns to parse tomorrow is refused, not ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NoReturn

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from dataplane.sql.plan import (
    Aggregate,
    AggregateKind,
    ColumnInfo,
    ColumnRef,
    ColumnRole,
    DatasetInfo,
    Dimension,
    Filter,
    FilterOp,
    Join,
    Output,
    ParsedQuery,
    Projected,
    QueryError,
    Shape,
    Use,
)

_DIALECT = Postgres()

_IN_ORDER = "results are released per group, in the order of the public domain"
_EVERY_GROUP = "every group of the public domain is released"
_ITEMS = "only dimension columns and COUNT(*), SUM(column) or AVG(column) can be selected"
_CONDITIONS = (
    "WHERE takes column IN (...), column = value and column BETWEEN low AND high, joined by AND"
)
_NO_STAR = "SELECT * is not allowed: name the dimensions and aggregates to release"
_EXTRACT = "a synthetic extract is a projection: SELECT columns FROM datasets [WHERE ...]"
_NO_COMMENTS = (
    "comments are not allowed: the approved text must be exactly what runs, "
    "and explanations belong in the purpose"
)

# Why each clause a SELECT may carry is refused, and the keyword that starts it.
_CLAUSES: dict[str, tuple[str, tuple[TokenType, ...]]] = {
    "with_": ("WITH is not allowed: name the datasets directly in FROM", (TokenType.WITH,)),
    "distinct": (
        "DISTINCT is not allowed: the query releases aggregates per group, never rows",
        (TokenType.DISTINCT,),
    ),
    "order": (f"ORDER BY is not allowed: {_IN_ORDER}", (TokenType.ORDER_BY,)),
    "limit": (f"LIMIT is not allowed: {_EVERY_GROUP}", (TokenType.LIMIT,)),
    "fetch": (f"FETCH is not allowed: {_EVERY_GROUP}", (TokenType.FETCH,)),
    "offset": (f"OFFSET is not allowed: {_EVERY_GROUP}", (TokenType.OFFSET,)),
    "having": (
        "HAVING is not allowed: a condition on an aggregate would reveal which groups are "
        "small; filter rows with WHERE",
        (TokenType.HAVING,),
    ),
    "qualify": (
        "QUALIFY is not allowed: window functions are not part of the language",
        (TokenType.QUALIFY,),
    ),
    "windows": (
        "WINDOW is not allowed: window functions are not part of the language",
        (TokenType.WINDOW,),
    ),
    "into": (
        "SELECT INTO is not allowed: results are released, never stored as tables",
        (TokenType.INTO,),
    ),
    "laterals": (
        "LATERAL is not allowed: datasets are combined by inner joins on join keys",
        (TokenType.LATERAL,),
    ),
    "locks": ("FOR UPDATE and FOR SHARE are not allowed: queries only read", (TokenType.FOR,)),
    "sample": (
        "TABLESAMPLE is not allowed: the query reads whole datasets",
        (TokenType.TABLE_SAMPLE,),
    ),
    # Only a UNION ALL branch may not carry these.
    "group": (
        "GROUP BY is not allowed in a UNION ALL branch: group in the outer query",
        (TokenType.GROUP_BY,),
    ),
    "joins": (
        "a UNION ALL branch reads one dataset: joins are not allowed inside it",
        (TokenType.JOIN, TokenType.COMMA),
    ),
}
_JOIN_WORDS = frozenset(
    {
        TokenType.LEFT,
        TokenType.RIGHT,
        TokenType.FULL,
        TokenType.OUTER,
        TokenType.INNER,
        TokenType.CROSS,
        TokenType.NATURAL,
        TokenType.SEMI,
        TokenType.ANTI,
    }
)
_AGGREGATES: dict[type[exp.Expression], AggregateKind] = {
    exp.Count: AggregateKind.COUNT,
    exp.Sum: AggregateKind.SUM,
    exp.Avg: AggregateKind.AVG,
}
_USE_LABEL = {
    Use.JOIN_KEY: "join key",
    Use.DIMENSION: "dimension",
    Use.MEASURE: "measure",
    Use.FILTER: "filter",
}
# A join key, like the privacy unit, picks out people, so it is never a filter. The unit itself
# may be a join key where its policy allows: it is only compared, never output or filtered.
_ROLES_FOR_USE = {
    Use.JOIN_KEY: frozenset({"join_key", "unit"}),
    Use.DIMENSION: frozenset({"dimension"}),
    Use.MEASURE: frozenset({"measure"}),
    Use.FILTER: frozenset({"dimension", "measure", "other"}),
}
_GROUPINGS = (TokenType.ROLLUP, TokenType.CUBE, TokenType.GROUPING_SETS)
_NUMERIC = frozenset({"integer", "float"})
_ORDERED = frozenset({"integer", "float", "date"})


def parse_query(
    sql: str, datasets: Mapping[str, DatasetInfo], output: Output = Output.AGGREGATE
) -> ParsedQuery:
    """The typed form of `sql` over the room's `datasets` (by `org_slug.dataset_slug`), or
    QueryError for anything outside the language or not allowed by a dataset's policy.
    For a synthetic extract (`output`), the query is a projection of columns instead of
    aggregates per group."""
    return _Parser(sql, datasets, Output(output)).parse()


def allowed_uses(dataset: DatasetInfo) -> dict[str, tuple[Use, ...]]:
    """Each column of `dataset` a query may name, with the uses both its role and the dataset's
    policy allow (the rule `parse_query` enforces), for the composer to offer in completion."""
    uses = {
        name: tuple(
            use
            for use in Use
            if column.role in _ROLES_FOR_USE[use] and name in dataset.allowed.get(use, frozenset())
        )
        for name, column in dataset.columns.items()
    }
    return {name: allowed for name, allowed in uses.items() if allowed}


def _is_set(value: Any) -> bool:
    return value is not None and value is not False and not (isinstance(value, list) and not value)


@dataclass(frozen=True)
class _Target:
    """One dataset's column behind a reference; a UNION ALL column has one per branch."""

    dataset: DatasetInfo
    column: ColumnInfo

    @property
    def ref(self) -> ColumnRef:
        return ColumnRef(self.dataset.qualified_name, self.column.name)


@dataclass(frozen=True)
class _Resolved:
    targets: tuple[_Target, ...]
    written: str  # as the query names it, for messages
    offset: int | None

    @property
    def ref(self) -> ColumnRef:
        return self.targets[0].ref


@dataclass(frozen=True)
class _Source:
    """What FROM reads (a dataset, or the UNION ALL), and the names that qualify its columns."""

    label: str
    qualifiers: frozenset[str]
    columns: dict[str, tuple[_Target, ...]]


@dataclass
class _Result:
    dimensions: list[tuple[Dimension, _Resolved]] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    joins: list[Join] = field(default_factory=list)
    union_columns: tuple[str, ...] = ()
    projected: list[Projected] = field(default_factory=list)


class _Parser:
    def __init__(self, sql: str, datasets: Mapping[str, DatasetInfo], output: Output):
        self.sql = sql
        self.catalog = datasets
        self.output = output
        self.tokens: list[Token] = []
        self.read: list[DatasetInfo] = []  # in the order the query names them
        self.uses: set[tuple[str, str, Use]] = set()

    # Positions ----------------------------------------------------------------------------------

    def refuse(self, reason: str, offset: int | None) -> NoReturn:
        offset = min(max(offset or 0, 0), len(self.sql))
        line = self.sql.count("\n", 0, offset) + 1
        column = offset - (self.sql.rfind("\n", 0, offset) + 1) + 1
        raise QueryError(reason, line=line, column=column)

    def span(self, node: exp.Expression) -> tuple[int, int] | None:
        """Only identifiers, literals and functions carry positions; a clause spans its parts."""
        starts, ends = [], []
        for part in node.walk():
            if "start" in part.meta:
                starts.append(part.meta["start"])
                ends.append(part.meta["end"])
        return (min(starts), max(ends)) if starts else None

    def start(self, node: exp.Expression) -> int | None:
        span = self.span(node)
        return span[0] if span else None

    def keyword(self, node: exp.Expression, kinds: Iterable[TokenType], after: int = 0) -> int:
        """Where a clause's keyword is: inside its span (NOT, OR), else just before it (ORDER BY
        x, LIMIT 3), else, for a clause without positioned parts, the first one after `after`."""
        kinds = frozenset(kinds)
        span = self.span(node)
        if span is None:
            later = (t for t in self.tokens if t.start >= after and t.token_type in kinds)
            return next((t.start for t in later), after)
        inside = [t for t in self.tokens if span[0] <= t.start <= span[1] and t.token_type in kinds]
        before = [t for t in self.tokens if t.start < span[0] and t.token_type in kinds]
        found = inside[:1] or before[-1:]
        return found[0].start if found else span[0]

    def select_offset(self, select: exp.Select) -> int:
        start = self.start(select)
        selects = [t.start for t in self.tokens if t.token_type == TokenType.SELECT]
        return max((s for s in selects if start is None or s <= start), default=0)

    def written(self, node: exp.Expression) -> str:
        """The source text of a node, e.g. `min` as typed, for messages."""
        span = self.span(node)
        text = self.sql[span[0] : span[1] + 1] if span else node.sql(dialect=_DIALECT)
        return text if len(text) <= 40 else text[:37] + "..."

    def function_name(self, node: exp.Expression) -> str:
        """A function's name as typed (`min`, `percentile_cont`): the span of its own position."""
        if "start" in node.meta:
            return self.sql[node.meta["start"] : node.meta["end"] + 1].upper()
        return self.written(node)

    # Statement ----------------------------------------------------------------------------------

    def parse(self) -> ParsedQuery:
        statement = self.statement()
        if isinstance(statement, exp.Union) and statement.args.get("distinct") is False:
            self.refuse(
                "UNION ALL is only allowed in FROM: SELECT ... FROM (SELECT ... UNION ALL "
                "SELECT ...) AS u GROUP BY ...",
                self.keyword(statement, (TokenType.UNION,)),
            )
        if isinstance(statement, exp.SetOperation):
            self.refuse_set_operation(statement)
        if isinstance(statement, exp.Subquery):
            self.refuse("the query must be a plain SELECT, not wrapped in parentheses", 0)
        if not isinstance(statement, exp.Select):
            first = self.tokens[0]
            self.refuse(f"only SELECT queries are allowed, not {first.text.upper()}", first.start)
        return self.select(statement)

    def statement(self) -> exp.Expr:
        try:
            self.tokens = _DIALECT.tokenize(self.sql)
        except TokenError as error:
            self.refuse_unreadable(error)
        self.refuse_comments()
        try:
            statements = _DIALECT.parser().parse(self.tokens, self.sql)
        except ParseError as error:
            self.refuse_unparsable(error)
        except RecursionError:
            self.refuse("the query is nested too deeply to read", 0)
        except Exception:  # sqlglot is not ours: whatever it trips on is a refusal, never a crash
            self.refuse("the query could not be read", 0)
        present = [statement for statement in statements if statement is not None]
        if not present:
            self.refuse("the query is empty", 0)
        if len(present) > 1:
            self.refuse(
                "only one statement is allowed: the approved text must be exactly one query",
                self.second_statement(),
            )
        return present[0]

    def refuse_comments(self) -> None:
        """Comments live between tokens, where only white space may otherwise be."""
        bounds = [0, *(b for t in self.tokens for b in (t.start, t.end + 1)), len(self.sql)]
        for gap_start, gap_end in zip(bounds[::2], bounds[1::2], strict=True):
            gap = self.sql[gap_start:gap_end]
            found = [at for at in (gap.find("--"), gap.find("/*")) if at >= 0]
            if found:
                self.refuse(_NO_COMMENTS, gap_start + min(found))

    def second_statement(self) -> int:
        after_semicolon = False
        for token in self.tokens:
            if token.token_type == TokenType.SEMICOLON:
                after_semicolon = True
            elif after_semicolon:
                return token.start
        return 0

    def refuse_unreadable(self, error: TokenError) -> NoReturn:
        cause = str(error.__cause__ or error)
        where = re.search(r"from \d+:(\d+)", cause)  # sqlglot names the character offset
        if cause.startswith("Missing"):
            self.refuse(
                "the query could not be read: a quote or comment is not closed",
                int(where.group(1)) if where else 0,
            )
        self.refuse(f"the query could not be read: {cause}", 0)

    def refuse_unparsable(self, error: ParseError) -> NoReturn:
        first = error.errors[0] if error.errors else {}
        line, column = first.get("line") or 1, first.get("col") or 1
        highlight, description = first.get("highlight") or "", first.get("description") or ""
        reason = "the query could not be read"
        if highlight:
            reason += f" near '{highlight}'"
        if description and "<" not in description:  # skip sqlglot's token dumps
            reason += f": {description[0].lower()}{description[1:]}"
        # sqlglot reports the column where the token ends; point at where it starts.
        token = next((t for t in self.tokens if (t.line, t.col) == (line, column)), None)
        if token is None:
            raise QueryError(reason, line=line, column=column)
        self.refuse(reason, token.start)

    def refuse_set_operation(self, node: exp.SetOperation) -> NoReturn:
        if isinstance(node, exp.Union):
            self.refuse(
                "UNION without ALL is not allowed: it drops duplicate rows, which changes what "
                "each person contributes; write UNION ALL",
                self.keyword(node, (TokenType.UNION,)),
            )
        word = "INTERSECT" if isinstance(node, exp.Intersect) else "EXCEPT"
        self.refuse(
            f"{word} is not allowed: it reveals which rows are in both datasets; "
            "only UNION ALL combines datasets",
            self.keyword(node, (TokenType.INTERSECT, TokenType.EXCEPT)),
        )

    def allow_only(self, node: exp.Expression, allowed: set[str], after: int = 0) -> None:
        """Refuse any argument of `node` that is set and not in `allowed`."""
        for name, value in node.args.items():
            if name in allowed or not _is_set(value):
                continue
            clause = "fetch" if isinstance(value, exp.Fetch) else name
            label = clause.rstrip("_").replace("_", " ").upper()
            reason, kinds = _CLAUSES.get(clause, (f"{label} is not part of the query language", ()))
            part = value[0] if isinstance(value, list) else value
            anchor = part if isinstance(part, exp.Expression) else node
            self.refuse(reason, self.keyword(anchor, kinds, after))

    # FROM ---------------------------------------------------------------------------------------

    def select(self, select: exp.Select) -> ParsedQuery:
        self.allow_only(select, {"expressions", "from_", "joins", "where", "group"})
        from_ = select.args.get("from_")
        if from_ is None:
            self.refuse("the query needs FROM and a dataset, e.g. FROM charite.patients", 0)
        result = _Result()
        joins = select.args.get("joins") or []
        if isinstance(from_.this, exp.Subquery):
            scope = [self.union(from_.this, result)]
            if joins:
                self.refuse(
                    "a UNION ALL source cannot be joined with other datasets",
                    self.keyword(joins[0], (TokenType.JOIN, TokenType.COMMA)),
                )
            shape = Shape.UNION
        else:
            scope = [self.table(from_.this)]
            for join in joins:
                self.join(join, scope, result)
            shape = Shape.JOIN if joins else Shape.SINGLE
        if self.output is Output.SYNTHETIC:
            self.projection(select, scope, result)
        else:
            self.items(select, scope, result)
        self.where(select.args.get("where"), scope, result)
        if self.output is Output.SYNTHETIC:
            if select.args.get("group") is not None:
                self.refuse(
                    f"GROUP BY is not allowed: {_EXTRACT}",
                    self.keyword(select.args["group"], (TokenType.GROUP_BY,)),
                )
        else:
            self.group(select.args.get("group"), scope, result)
        return ParsedQuery(
            shape=shape,
            datasets=tuple(info.qualified_name for info in self.read),
            dimensions=tuple(dimension for dimension, _ in result.dimensions),
            aggregates=tuple(result.aggregates),
            filters=tuple(result.filters),
            joins=tuple(result.joins),
            union_columns=result.union_columns,
            uses=frozenset(self.uses),
            output=self.output,
            projected=tuple(result.projected),
        )

    def name(self, node: Any, what: str) -> str:
        if not isinstance(node, exp.Identifier):
            offset = self.start(node) if isinstance(node, exp.Expression) else None
            self.refuse(f"{what} must be a plain name", offset)
        self.allow_only(node, {"this", "quoted"})
        # Postgres folds unquoted names to lower case.
        return node.this if node.args.get("quoted") else node.this.lower()

    def table(self, node: exp.Expression) -> _Source:
        if isinstance(node, exp.Subquery):
            self.refuse(
                "sub-queries are only allowed in FROM, as one UNION ALL of datasets",
                self.keyword(node, (TokenType.SELECT,)),
            )
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            self.refuse("FROM and JOIN read datasets, named organisation.dataset", self.start(node))
        if node.args.get("catalog"):
            self.refuse("a dataset is named organisation.dataset, in two parts", self.start(node))
        self.allow_only(node, {"this", "db", "alias"})
        slug = self.name(node.this, "a dataset")
        if node.args.get("db") is None:
            self.refuse(
                f"name the dataset with its organisation, as organisation.{slug}",
                self.start(node.this),
            )
        qualified = f"{self.name(node.args['db'], 'an organisation')}.{slug}"
        offset = self.start(node.args["db"])
        info = self.catalog.get(qualified)
        if info is None:
            self.refuse(f"dataset {qualified} is not in this room", offset)
        if any(read.qualified_name == qualified for read in self.read):
            self.refuse(f"{qualified} is read twice: a query reads each dataset once", offset)
        self.read.append(info)
        alias = self.table_alias(node.args.get("alias"))
        return _Source(
            label=qualified,
            qualifiers=frozenset({alias} if alias else {slug, qualified}),
            columns={name: (_Target(info, column),) for name, column in info.columns.items()},
        )

    def table_alias(self, node: exp.TableAlias | None) -> str | None:
        if node is None:
            return None
        if node.args.get("columns"):
            self.refuse("column aliases on a dataset are not allowed", self.start(node))
        self.allow_only(node, {"this"})
        return self.name(node.this, "an alias")

    def join(self, join: exp.Join, scope: list[_Source], result: _Result) -> None:
        target = join.this
        if isinstance(target, exp.Lateral):
            self.refuse(_CLAUSES["laterals"][0], self.keyword(target, (TokenType.LATERAL,)))
        if isinstance(target, exp.Subquery):
            self.refuse(
                "sub-queries are not allowed in joins", self.keyword(target, (TokenType.SELECT,))
            )
        joined_at = self.start(target) or 0
        # The words between the previous clause and the dataset: `,` or `[LEFT ...] JOIN`.
        at = max(
            (
                i
                for i, t in enumerate(self.tokens)
                if t.start < joined_at and t.token_type in {TokenType.JOIN, TokenType.COMMA}
            ),
            default=0,
        )
        if self.tokens[at].token_type == TokenType.COMMA:
            self.refuse(
                "comma joins are not allowed: write JOIN ... ON a.key = b.key",
                self.tokens[at].start,
            )
        while at > 0 and self.tokens[at - 1].token_type in _JOIN_WORDS:
            at -= 1
        join_offset = self.tokens[at].start
        words = " ".join(t.text.upper() for t in self.tokens[at:] if t.start < joined_at)
        kind = join.args.get("kind")
        if join.args.get("side") or join.args.get("method") or (kind and kind.upper() != "INNER"):
            self.refuse(
                f"{words} is not allowed: only inner joins (JOIN ... ON a.key = b.key), so no "
                "row is released without its match",
                join_offset,
            )
        if join.args.get("using"):
            self.refuse(
                "JOIN ... USING is not allowed: write ON a.key = b.key",
                self.keyword(join.args["using"][0], (TokenType.USING,)),
            )
        condition = join.args.get("on")
        if condition is None:
            self.refuse("JOIN needs ON a.key = b.key", join_offset)
        self.allow_only(join, {"this", "on", "kind"})
        joined = self.table(target)
        scope.append(joined)
        if any(isinstance(part, (exp.Subquery, exp.Select)) for part in condition.walk()):
            self.refuse(
                "sub-queries are not allowed in joins", self.keyword(condition, (TokenType.SELECT,))
            )
        while isinstance(condition, exp.Paren):
            condition = condition.this
        if not (
            isinstance(condition, exp.EQ)
            and isinstance(condition.this, exp.Column)
            and isinstance(condition.expression, exp.Column)
        ):
            self.refuse(
                "a join condition is one equality of two join keys, "
                "e.g. ON a.person_hash = b.person_hash",
                self.start(condition),
            )
        left = self.resolve(condition.this, scope, join_key=True)
        right = self.resolve(condition.expression, scope, join_key=True)
        if left.ref.dataset == joined.label:
            left, right = right, left
        if right.ref.dataset != joined.label or left.ref.dataset == joined.label:
            self.refuse(
                f"the join condition must compare a column of {joined.label} "
                "with a column of a dataset before it",
                left.offset,
            )
        left_type, right_type = left.targets[0].column.type, right.targets[0].column.type
        if left_type != right_type:
            self.refuse(
                f"join keys {left.written} and {right.written} have different types "
                f"({left_type} and {right_type})",
                right.offset,
            )
        result.joins.append(Join(self.use(left, Use.JOIN_KEY), self.use(right, Use.JOIN_KEY)))

    # UNION ALL ----------------------------------------------------------------------------------

    def union(self, node: exp.Subquery, result: _Result) -> _Source:
        self.allow_only(node, {"this", "alias"})
        if not isinstance(node.this, exp.SetOperation):
            self.refuse(
                "a sub-query in FROM must be a UNION ALL of datasets: "
                "(SELECT a, b FROM x.y UNION ALL SELECT a, b FROM z.w) AS u",
                self.keyword(node, (TokenType.SELECT, TokenType.L_PAREN)),
            )
        branches: list[exp.Select] = []
        pending: list[exp.Expression] = [node.this]
        while pending:  # a chain of UNION ALLs nests to the left; keep the written order
            part = pending.pop()
            if isinstance(part, exp.Union) and part.args.get("distinct") is False:
                self.allow_only(part, {"this", "expression", "distinct"})
                pending += [part.expression, part.this]
            elif isinstance(part, exp.SetOperation):
                self.refuse_set_operation(part)
            elif isinstance(part, exp.Select):
                branches.append(part)
            else:
                self.refuse(
                    "each UNION ALL branch is a plain SELECT from one dataset", self.start(part)
                )
        names: list[str] = []
        columns: dict[str, list[_Target]] = {}
        for branch in branches:
            after = self.select_offset(branch)
            self.allow_only(branch, {"expressions", "from_", "where"}, after)
            if branch.args.get("from_") is None:
                self.refuse("each UNION ALL branch reads one dataset", after)
            source = self.table(branch.args["from_"].this)
            projected = [self.projected(item, source) for item in branch.expressions]
            written = [resolved.targets[0].column.name for resolved in projected]
            if len(set(written)) != len(written):
                self.refuse("a UNION ALL branch projects each column once", after)
            names = names or written
            if written != names:
                self.refuse(
                    "every UNION ALL branch projects the same columns in the same order: "
                    f"expected {', '.join(names)}, got {', '.join(written)}",
                    after,
                )
            for resolved in projected:
                target = resolved.targets[0]
                first = columns.setdefault(target.column.name, [target])[0]
                if first.column.type != target.column.type:
                    self.refuse(
                        f"column {target.column.name} is {first.column.type} in "
                        f"{first.dataset.qualified_name} but {target.column.type} in "
                        f"{source.label}",
                        resolved.offset,
                    )
                if first is not target:
                    columns[target.column.name].append(target)
            self.where(branch.args.get("where"), [source], result)
        result.union_columns = tuple(names)
        alias = self.table_alias(node.args.get("alias"))
        return _Source(
            label="the UNION ALL",
            qualifiers=frozenset({alias} if alias else ()),
            columns={name: tuple(targets) for name, targets in columns.items()},
        )

    def projected(self, item: exp.Expression, source: _Source) -> _Resolved:
        if isinstance(item, exp.Star):
            self.refuse(_NO_STAR, self.start(item))
        if not isinstance(item, exp.Column):
            self.refuse(
                "a UNION ALL branch projects plain columns, without aliases or expressions",
                self.start(item),
            )
        return self.resolve(item, [source])

    # Columns ------------------------------------------------------------------------------------

    def resolve(
        self, node: exp.Column, scope: list[_Source], *, join_key: bool = False
    ) -> _Resolved:
        """The column a reference names. The privacy unit is refused everywhere but in a join
        condition (`join_key`), where `use` then checks the policy allows joining on it."""
        if isinstance(node.this, exp.Star):
            self.refuse(_NO_STAR, self.start(node))
        self.allow_only(node, {"this", "table", "db"})
        name = self.name(node.this, "a column")
        offset = self.start(node.this)
        parts = [node.args[part] for part in ("db", "table") if node.args.get(part)]
        if parts:
            qualifier = ".".join(self.name(part, "an alias") for part in parts)
            sources = [source for source in scope if qualifier in source.qualifiers]
            if not sources:
                self.refuse(
                    f"unknown alias {qualifier}: FROM names no such dataset", self.start(parts[0])
                )
            if len(sources) > 1:
                self.refuse(
                    f"{qualifier} is ambiguous: give each dataset an alias", self.start(parts[0])
                )
            source = sources[0]
            written = f"{qualifier}.{name}"
            if name not in source.columns:
                self.refuse(f"column {written} does not exist in {source.label}", offset)
        else:
            written = name
            sources = [source for source in scope if name in source.columns]
            if not sources:
                labels = " or ".join(source.label for source in scope)
                self.refuse(f"column {name} does not exist in {labels}", offset)
            if len(sources) > 1:
                labels = " and ".join(source.label for source in sources)
                self.refuse(f"column {name} is ambiguous: it is in {labels}; qualify it", offset)
            source = sources[0]
        targets = source.columns[name]
        for target in targets:
            if target.column.role == ColumnRole.UNIT and not join_key:
                self.refuse(
                    f"{name} is the privacy unit of {target.dataset.qualified_name}: it is never "
                    "selected, grouped by, aggregated or filtered on (only a join may compare it, "
                    "where its policy allows it as a join key)",
                    offset,
                )
        return _Resolved(targets, written, offset)

    def use(self, resolved: _Resolved, use: Use) -> ColumnRef:
        """Check the use against each column's role and its dataset's policy, and record it."""
        label = _USE_LABEL[use]
        for target in resolved.targets:
            dataset, column = target.dataset.qualified_name, target.column
            if column.role not in _ROLES_FOR_USE[use]:
                self.refuse(
                    f"{column.name} in {dataset} has the role {column.role.replace('_', ' ')}, "
                    f"so it cannot be a {label}",
                    resolved.offset,
                )
            if column.name not in target.dataset.allowed.get(use, frozenset()):
                self.refuse(
                    f"{dataset}'s policy does not allow {column.name} as a {label}",
                    resolved.offset,
                )
            self.uses.add((dataset, column.name, use))
        return resolved.ref

    # SELECT -------------------------------------------------------------------------------------

    def items(self, select: exp.Select, scope: list[_Source], result: _Result) -> None:
        aliases: set[str] = set()
        for item in select.expressions:
            node, alias = item, None
            if isinstance(item, exp.Alias):
                self.allow_only(item, {"this", "alias"})
                node, alias = item.this, self.name(item.args["alias"], "an alias")
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                resolved = self.resolve(node, scope)
                ref = self.use(resolved, Use.DIMENSION)
                if any(ref == dimension.column for dimension, _ in result.dimensions):
                    self.refuse(f"{resolved.written} is selected twice", resolved.offset)
                dimension = Dimension(ref, alias or ref.column)
                result.dimensions.append((dimension, resolved))
                alias = dimension.alias
            elif type(node) in _AGGREGATES:
                aggregate = self.aggregate(node, alias, scope)
                result.aggregates.append(aggregate)
                alias = aggregate.alias
            else:
                self.refuse_item(node)
            if alias in aliases:
                self.refuse(f"the output column name {alias} is used twice", self.start(item))
            aliases.add(alias)
        if not result.aggregates:
            self.refuse(
                "the query releases no aggregate: add COUNT(*), SUM(column) or AVG(column)",
                self.select_offset(select),
            )

    def aggregate(self, node: exp.Expression, alias: str | None, scope: list[_Source]) -> Aggregate:
        kind = _AGGREGATES[type(node)]
        word, offset, argument = kind.value.upper(), self.start(node), node.this
        if isinstance(argument, exp.Distinct):
            self.refuse(f"{word}(DISTINCT ...) is not allowed: aggregates take every row", offset)
        if kind is AggregateKind.COUNT:
            self.allow_only(node, {"this", "big_int"})
            if not isinstance(argument, exp.Star):
                self.refuse("COUNT(column) is not allowed: use COUNT(*)", offset)
            self.allow_only(argument, set())
            # Every dataset's rows are counted, so every policy must allow it.
            for info in self.read:
                self.allow_aggregate(info, kind, offset)
            return Aggregate(kind, None, alias or "count")
        self.allow_only(node, {"this"})
        if isinstance(argument, exp.Func):
            self.refuse(
                f"nested functions are not allowed: {word} takes one measure column", offset
            )
        if not isinstance(argument, exp.Column) or isinstance(argument.this, exp.Star):
            self.refuse(f"{word} takes one measure column, not an expression", offset)
        resolved = self.resolve(argument, scope)
        ref = self.use(resolved, Use.MEASURE)
        for target in resolved.targets:
            if target.column.type not in _NUMERIC:
                self.refuse(
                    f"{resolved.written} is {target.column.type}, not a number", resolved.offset
                )
            self.allow_aggregate(target.dataset, kind, offset)
        return Aggregate(kind, ref, alias or f"{kind.value}_{ref.column}")

    def allow_aggregate(self, info: DatasetInfo, kind: AggregateKind, offset: int | None) -> None:
        if kind not in info.allowed_aggregates:
            self.refuse(
                f"{info.qualified_name}'s policy does not allow {kind.value.upper()}", offset
            )

    def refuse_item(self, node: exp.Expression) -> NoReturn:
        offset = self.start(node)
        if isinstance(node, (exp.Star, exp.Column)):
            self.refuse(_NO_STAR, offset)
        if isinstance(node, exp.Window):
            name = self.function_name(node.this)
            self.refuse(f"window functions ({name} OVER) are not allowed: {_ITEMS}", offset)
        if any(isinstance(part, (exp.Subquery, exp.Select, exp.Exists)) for part in node.walk()):
            self.refuse(
                f"sub-queries are not allowed in SELECT: {_ITEMS}",
                self.keyword(node, (TokenType.SELECT,)),
            )
        if isinstance(node, exp.Filter):
            self.refuse("FILTER (WHERE ...) is not allowed: put conditions in WHERE", offset)
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null, exp.Neg)):
            self.refuse(f"literals are not allowed in SELECT: {_ITEMS}", offset)
        if isinstance(node, (exp.Case, exp.If)):
            self.refuse(f"CASE is not allowed: {_ITEMS}", self.keyword(node, (TokenType.CASE,)))
        if isinstance(node, exp.Binary):
            self.refuse(f"arithmetic and operators are not allowed in SELECT: {_ITEMS}", offset)
        if isinstance(node, exp.Func):
            self.refuse(f"{self.function_name(node)} is not allowed: {_ITEMS}", offset)
        self.refuse(f"{self.written(node)} is not allowed: {_ITEMS}", offset)

    # Synthetic extracts -------------------------------------------------------------------------

    def projection(self, select: exp.Select, scope: list[_Source], result: _Result) -> None:
        """The columns of a synthetic extract: each a dimension (synthesized within its public
        domain) or a measure (within its public clamp bounds), allowed as such by its policy."""
        aliases: set[str] = set()
        for item in select.expressions:
            node, alias = item, None
            if isinstance(item, exp.Alias):
                self.allow_only(item, {"this", "alias"})
                node, alias = item.this, self.name(item.args["alias"], "an alias")
            if type(node) in _AGGREGATES:
                self.refuse(
                    f"{self.function_name(node)} is not allowed: {_EXTRACT}; aggregates are "
                    "released by an aggregate query",
                    self.start(node),
                )
            if isinstance(node, exp.Star) or (
                isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
            ):
                self.refuse(
                    "SELECT * is not allowed: name the columns the extract holds", self.start(node)
                )
            if not isinstance(node, exp.Column):
                self.refuse(f"{self.written(node)} is not allowed: {_EXTRACT}", self.start(node))
            resolved = self.resolve(node, scope)
            ref = self.use(resolved, self.synthesized_use(resolved))
            if any(ref == projected.column for projected in result.projected):
                self.refuse(f"{resolved.written} is selected twice", resolved.offset)
            projected = Projected(ref, alias or ref.column)
            if projected.alias in aliases:
                self.refuse(
                    f"the output column name {projected.alias} is used twice", self.start(item)
                )
            aliases.add(projected.alias)
            result.projected.append(projected)

    def synthesized_use(self, resolved: _Resolved) -> Use:
        """How a projected column is synthesized: a dimension over its public domain, or a
        measure over its public bounds; join keys and other columns have neither."""
        for target in resolved.targets:
            column, dataset = target.column, target.dataset.qualified_name
            if column.role == ColumnRole.JOIN_KEY:
                self.refuse(
                    f"{column.name} is a join key of {dataset}: join keys pick out people, so "
                    "they never appear in a synthetic extract",
                    resolved.offset,
                )
            if column.role == ColumnRole.DIMENSION and not column.domain:
                self.refuse(
                    f"{column.name} in {dataset} has no public domain to synthesize it in",
                    resolved.offset,
                )
            if column.role == ColumnRole.MEASURE and (
                column.type not in _NUMERIC or column.lower is None or column.upper is None
            ):
                self.refuse(
                    f"{column.name} in {dataset} is not a number with public clamp bounds, so "
                    "it has no public bins to synthesize it in",
                    resolved.offset,
                )
            if column.role not in (ColumnRole.DIMENSION, ColumnRole.MEASURE):
                self.refuse(
                    f"{column.name} in {dataset} has the role {column.role}: an extract holds "
                    "dimensions (with a public domain) and measures (with clamp bounds) only",
                    resolved.offset,
                )
        role = resolved.targets[0].column.role
        return Use.DIMENSION if role == ColumnRole.DIMENSION else Use.MEASURE

    # WHERE --------------------------------------------------------------------------------------

    def where(self, where: exp.Where | None, scope: list[_Source], result: _Result) -> None:
        if where is None:
            return
        pending: list[exp.Expression] = [where.this]
        while pending:  # AND chains nest deeply: walk them without recursion, left to right
            condition = pending.pop()
            if isinstance(condition, exp.Paren):
                pending.append(condition.this)
            elif isinstance(condition, exp.And):
                pending += [condition.expression, condition.this]
            else:
                result.filters += self.condition(condition, scope)

    def condition(self, node: exp.Expression, scope: list[_Source]) -> list[Filter]:
        if isinstance(node, exp.Or):
            self.refuse(f"OR is not allowed: {_CONDITIONS}", self.keyword(node, (TokenType.OR,)))
        if isinstance(node, exp.Not):
            self.refuse(f"NOT is not allowed: {_CONDITIONS}", self.keyword(node, (TokenType.NOT,)))
        if any(isinstance(part, (exp.Subquery, exp.Select, exp.Exists)) for part in node.walk()):
            self.refuse(
                "sub-queries are not allowed in WHERE", self.keyword(node, (TokenType.SELECT,))
            )
        if isinstance(node, exp.EQ):
            self.allow_only(node, {"this", "expression"})
            column, value = node.this, node.expression
            if not isinstance(column, exp.Column):
                column, value = value, column
            if not isinstance(column, exp.Column) or isinstance(value, exp.Column):
                self.refuse(
                    f"= compares one column with one value: {_CONDITIONS}", self.start(node)
                )
            return self.filters(self.resolve(column, scope), FilterOp.EQ, [value])
        if isinstance(node, exp.In):
            self.allow_only(node, {"this", "expressions"})
            if not isinstance(node.this, exp.Column):
                self.refuse(f"IN tests one column: {_CONDITIONS}", self.start(node))
            return self.filters(self.resolve(node.this, scope), FilterOp.IN, node.expressions)
        if isinstance(node, exp.Between):
            self.allow_only(node, {"this", "low", "high"})
            if not isinstance(node.this, exp.Column):
                self.refuse(f"BETWEEN tests one column: {_CONDITIONS}", self.start(node))
            bounds = [node.args["low"], node.args["high"]]
            return self.filters(self.resolve(node.this, scope), FilterOp.BETWEEN, bounds)
        # A comparison's operator (`<>`, `LIKE`, `IS`) is the first token after its left side.
        left = self.span(node.this) if isinstance(node.this, exp.Expression) else None
        if isinstance(node, exp.Binary) and left is not None:
            operator = next((t for t in self.tokens if t.start > left[1]), None)
            if operator is not None:
                self.refuse(
                    f"{operator.text.upper()} is not allowed: {_CONDITIONS}", operator.start
                )
        self.refuse(
            f"{self.written(node)} is not a condition the language allows: {_CONDITIONS}",
            self.start(node),
        )

    def filters(
        self, resolved: _Resolved, op: FilterOp, nodes: list[exp.Expression]
    ) -> list[Filter]:
        column = resolved.targets[0].column
        values = tuple(self.value(node, column, resolved) for node in nodes)
        if op is FilterOp.BETWEEN:
            if column.type not in _ORDERED:
                self.refuse(
                    f"BETWEEN needs a number or a date; {resolved.written} is {column.type}",
                    resolved.offset,
                )
            if values[0] > values[1]:
                self.refuse(
                    f"BETWEEN {self.written(nodes[0])} AND {self.written(nodes[1])}: "
                    "the low end is above the high end",
                    self.start(nodes[0]),
                )
        self.use(resolved, Use.FILTER)
        for target in resolved.targets:
            domain = target.column.domain
            if op is FilterOp.BETWEEN or target.column.role != ColumnRole.DIMENSION or not domain:
                continue
            for node, value in zip(nodes, values, strict=True):
                if value not in domain:
                    shown = ", ".join(repr(v) for v in domain[:10]) + (", ..." * (len(domain) > 10))
                    self.refuse(
                        f"{self.written(node)} is not in the public domain of "
                        f"{target.column.name} in {target.dataset.qualified_name} ({shown})",
                        self.start(node),
                    )
        # A filter on the UNION ALL holds in every branch, so it is stated for each dataset.
        return [Filter(target.ref, op, values) for target in resolved.targets]

    def value(self, node: exp.Expression, column: ColumnInfo, resolved: _Resolved) -> Any:
        # NULL is the one value without a position of its own.
        offset = self.start(node)
        if offset is None:
            offset = self.keyword(node, (TokenType.NULL,))
        wrong = f"{self.written(node)} does not match {resolved.written}, which is {column.type}"
        negative = isinstance(node, exp.Neg)
        literal = node.this if negative else node
        if isinstance(literal, exp.Boolean) and not negative:
            if column.type != "boolean":
                self.refuse(wrong, offset)
            return bool(literal.this)
        if not isinstance(literal, exp.Literal) or (negative and literal.is_string):
            self.refuse(f"values are plain numbers, strings, TRUE or FALSE: {_CONDITIONS}", offset)
        text = str(literal.this)
        if literal.is_string and column.type == "string":
            return text
        if literal.is_string and column.type == "date":
            try:
                return date.fromisoformat(text)
            except ValueError:
                self.refuse(f"{self.written(node)} is not a date: write 'YYYY-MM-DD'", offset)
        if literal.is_string or column.type not in _NUMERIC:
            self.refuse(wrong, offset)
        try:  # int() also refuses 2.5, and integers of more digits than Python reads
            number = int(text) if column.type == "integer" else float(text)
        except ValueError:
            self.refuse(wrong, offset)
        if not math.isfinite(number):
            self.refuse(wrong, offset)
        return -number if negative else number

    # GROUP BY -----------------------------------------------------------------------------------

    def group(self, group: exp.Group | None, scope: list[_Source], result: _Result) -> None:
        grouped: list[ColumnRef] = []
        only = "GROUP BY takes dimension columns only"
        if group is not None:
            for name in ("all", "rollup", "cube", "grouping_sets", "totals"):
                if _is_set(group.args.get(name)):
                    self.refuse(
                        f"{only}, not {name.upper().replace('_', ' ')}",
                        self.keyword(group, (TokenType.GROUP_BY,)),
                    )
            self.allow_only(group, {"expressions"})
            for node in group.expressions:
                if isinstance(node, exp.Literal):
                    self.refuse(
                        f"GROUP BY positions are not allowed: name the column; {only}",
                        self.start(node),
                    )
                if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                    self.refuse(
                        f"{only}, not ROLLUP, CUBE or GROUPING SETS", self.keyword(node, _GROUPINGS)
                    )
                if not isinstance(node, exp.Column):
                    self.refuse(f"{only}, not expressions", self.start(node))
                self.refuse_output_name(node, scope, result)
                resolved = self.resolve(node, scope)
                if resolved.ref in grouped:
                    self.refuse(f"{resolved.written} appears twice in GROUP BY", resolved.offset)
                if all(resolved.ref != dimension.column for dimension, _ in result.dimensions):
                    self.refuse(
                        f"{resolved.written} is in GROUP BY but not selected: select it, so "
                        "each released row says which group it is",
                        resolved.offset,
                    )
                grouped.append(resolved.ref)
        for dimension, resolved in result.dimensions:
            if dimension.column not in grouped:
                self.refuse(
                    f"{resolved.written} must appear in GROUP BY: only grouped dimensions and "
                    "aggregates are released, never row values",
                    resolved.offset,
                )

    def refuse_output_name(self, node: exp.Column, scope: list[_Source], result: _Result) -> None:
        if node.args.get("table") or not isinstance(node.this, exp.Identifier):
            return
        name = self.name(node.this, "a column")
        outputs = {d.alias for d, _ in result.dimensions} | {a.alias for a in result.aggregates}
        if name in outputs and not any(name in source.columns for source in scope):
            self.refuse(f"GROUP BY names columns, not output names like {name}", self.start(node))
