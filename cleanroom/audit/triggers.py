"""Database triggers that make the audit tables append-only, on PostgreSQL and SQLite.

PostgreSQL's triggers are ENABLE ALWAYS, so `session_replication_role = replica` does not
bypass them; only a superuser altering the table does, and the Merkle tree catches that.

Append-only: the events, the Merkle nodes, the event index, the attachments, the checkpoints
and their cosignatures. The log heads (size, compact range) are updated by every append under a
row lock; the log keys and witnesses are configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

EVENT_TABLE = "audit_auditevent"
TABLES: tuple[str, ...] = (
    EVENT_TABLE,
    "audit_auditnode",
    "audit_auditeventref",
    "audit_auditattachment",
    "audit_checkpoint",
    "audit_cosignature",
)
# Kept for the names the first migration gave the event table's triggers.
TABLE = EVENT_TABLE

_POSTGRES_FUNCTION = """
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit records are append-only (% on % refused)', TG_OP, TG_TABLE_NAME;
    END;
    $$ LANGUAGE plpgsql
    """


def _postgres_install(table: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
        f"""CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
        f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER audit_no_update_delete",
        f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER audit_no_truncate",
    ]


def _postgres_remove(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {table}",
        f"DROP TRIGGER IF EXISTS audit_no_truncate ON {table}",
    ]


def _sqlite_names(table: str) -> tuple[str, str]:
    # SQLite trigger names are per database, not per table.
    if table == EVENT_TABLE:
        return "audit_no_update", "audit_no_delete"
    return f"{table}_no_update", f"{table}_no_delete"


# SQLite has no TRUNCATE; `DELETE FROM t` without WHERE is caught by the delete trigger.
def _sqlite_install(table: str) -> list[str]:
    update, delete = _sqlite_names(table)
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {update} BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, 'audit records are append-only (UPDATE refused)'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {delete} BEFORE DELETE ON {table}
            BEGIN SELECT RAISE(ABORT, 'audit records are append-only (DELETE refused)'); END""",
    ]


def _sqlite_remove(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name}" for name in _sqlite_names(table)]


def _statements(vendor: str, install: bool, tables: Sequence[str]) -> list[str]:
    statements: list[str] = []
    if vendor == "postgresql":
        if install:
            statements.append(_POSTGRES_FUNCTION)
        for table in tables:
            statements += (_postgres_install if install else _postgres_remove)(table)
        if not install and EVENT_TABLE in tables:
            # The event table's migration created the function; the others only use it, and
            # are removed first when migrating backwards.
            statements.append("DROP FUNCTION IF EXISTS audit_refuse_change()")
        return statements
    if vendor == "sqlite":
        for table in tables:
            statements += (_sqlite_install if install else _sqlite_remove)(table)
        return statements
    raise NotImplementedError(f"no append-only triggers for {vendor}")


def install(connection, tables: Sequence[str] = TABLES) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, True, tables):
            cursor.execute(sql)


def remove(connection, tables: Sequence[str] = TABLES) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, False, tables):
            cursor.execute(sql)
