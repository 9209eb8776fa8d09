"""Database triggers that make the event table append-only, on PostgreSQL and SQLite.

PostgreSQL's triggers are ENABLE ALWAYS, so `session_replication_role = replica` does not
bypass them; only a superuser altering the table does, and the Merkle tree catches that.
"""

TABLE = "audit_auditevent"

_POSTGRES_INSTALL = [
    """
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    f"""CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    f"""CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER audit_no_update_delete",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER audit_no_truncate",
]
_POSTGRES_REMOVE = [
    f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_refuse_change()",
]
# SQLite has no TRUNCATE; `DELETE FROM t` without WHERE is caught by the delete trigger.
_SQLITE_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END""",
]
_SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS audit_no_update",
    "DROP TRIGGER IF EXISTS audit_no_delete",
]


def _statements(vendor: str, install: bool) -> list[str]:
    if vendor == "postgresql":
        return _POSTGRES_INSTALL if install else _POSTGRES_REMOVE
    if vendor == "sqlite":
        return _SQLITE_INSTALL if install else _SQLITE_REMOVE
    raise NotImplementedError(f"no append-only triggers for {vendor}")


def install(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, install=True):
            cursor.execute(sql)


def remove(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, install=False):
            cursor.execute(sql)
