"""The database side of an append on PostgreSQL: one function call, one round trip.

`audit_append` locks the log's head row, takes the next sequence number (one past the log's
last event), splices it into the event's canonical bytes (the caller sends the bytes before and
after the number), and inserts the event with its leaf hash and its index of stable ids. It is
VOLATILE plpgsql, so under READ COMMITTED each statement in it takes a fresh snapshot: the
number is read after the lock is granted, and sees the append that held the lock before. A
single SQL statement could not do that; it would read from the snapshot it took before waiting.

It returns no row when the log has no head yet; the caller makes the head and calls it again.
"""

from __future__ import annotations

_FUNCTION = r"""
CREATE OR REPLACE FUNCTION audit_append(
    p_log text,
    p_type text,
    p_before bytea,
    p_after bytea,
    p_created_at timestamptz,
    p_ref_keys text[],
    p_ref_values text[]
) RETURNS TABLE (event_id bigint, log_id bigint, seq bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_log bigint;
    v_seq bigint;
    v_canonical bytea;
    v_event bigint;
BEGIN
    SELECT h.id INTO v_log FROM audit_auditlog h WHERE h.name = p_log FOR UPDATE;
    IF v_log IS NULL THEN
        RETURN;
    END IF;
    SELECT COALESCE(MAX(e.seq) + 1, 0) INTO v_seq FROM audit_auditevent e WHERE e.log_id = v_log;
    v_canonical := p_before || convert_to(v_seq::text, 'UTF8') || p_after;
    INSERT INTO audit_auditevent (log_id, seq, type, canonical, leaf_hash, created_at)
    VALUES (v_log, v_seq, p_type, v_canonical, sha256('\x00'::bytea || v_canonical), p_created_at)
    RETURNING id INTO v_event;
    INSERT INTO audit_auditeventref (event_id, key, ref)
    SELECT v_event, u.k, u.r FROM unnest(p_ref_keys, p_ref_values) AS u(k, r);
    RETURN QUERY SELECT v_event, v_log, v_seq;
END;
$$
"""

_SIGNATURE = "audit_append(text, text, bytea, bytea, timestamptz, text[], text[])"


def install(connection) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_FUNCTION)


def remove(connection) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION IF EXISTS {_SIGNATURE}")
