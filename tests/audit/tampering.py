"""What an attacker with the database superuser can do: change audit rows behind the triggers.

On PostgreSQL the triggers are ENABLE ALWAYS, so only `ALTER TABLE ... DISABLE TRIGGER ALL`
(superuser) gets past them; on SQLite the triggers are dropped and put back.
"""

from __future__ import annotations

from collections.abc import Sequence

from cleanroom.audit import triggers


def tamper(connection, sql: str, params: Sequence | None = None) -> None:
    """Run `sql` against the audit tables with their append-only triggers out of the way."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Deferred foreign-key checks of rows inserted earlier in this transaction would
            # make PostgreSQL refuse the ALTER TABLE; run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in triggers.TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
            try:
                cursor.execute(sql, params)
            finally:
                for table in triggers.TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
                triggers.install(connection)  # back to ENABLE ALWAYS
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        else:
            triggers.remove(connection)
            try:
                cursor.execute(sql, params)
            finally:
                triggers.install(connection)
