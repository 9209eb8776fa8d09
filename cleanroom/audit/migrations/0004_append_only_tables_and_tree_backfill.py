"""Make the new audit tables append-only, and give logs written before the persisted tree
their nodes, compact range and id index."""

import json

from django.db import migrations

from cleanroom.audit import merkle, triggers
from cleanroom.audit.log import _refs
from cleanroom.audit.verifier.merkle import leaf_hash

NEW_TABLES = [t for t in triggers.TABLES if t != triggers.EVENT_TABLE]


def backfill(apps, schema_editor):
    AuditLog = apps.get_model("audit", "AuditLog")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditNode = apps.get_model("audit", "AuditNode")
    AuditEventRef = apps.get_model("audit", "AuditEventRef")
    for log in AuditLog.objects.all():
        frontier: list[bytes] = []
        nodes, refs = [], []
        events = AuditEvent.objects.filter(log=log).order_by("seq")
        for expected, event in enumerate(events.iterator()):
            if event.seq != expected:
                raise RuntimeError(f"{log.name} has a gap at seq {expected}; refusing to migrate")
            canonical = bytes(event.canonical)
            frontier, new = merkle.frontier_append(frontier, event.seq, leaf_hash(canonical))
            nodes += [AuditNode(log=log, level=lv, index=i, hash=h) for lv, i, h in new]
            body = json.loads(canonical)
            refs += [
                AuditEventRef(event=event, key=key, ref=ref)
                for key, ref in sorted(set(_refs(body["subject"], body["data"])))
            ]
        AuditNode.objects.bulk_create(nodes, batch_size=1000)
        AuditEventRef.objects.bulk_create(refs, batch_size=1000)
        AuditLog.objects.filter(pk=log.pk).update(frontier=merkle.join_frontier(frontier))


def install(apps, schema_editor):
    triggers.install(schema_editor.connection, tables=NEW_TABLES)


def remove(apps, schema_editor):
    triggers.remove(schema_editor.connection, tables=NEW_TABLES)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_merkle_nodes_checkpoints_witnesses")]
    # Triggers first: PostgreSQL refuses ALTER TABLE on a table with rows inserted (and
    # deferred foreign-key checks pending) earlier in the same transaction.
    operations = [
        migrations.RunPython(install, remove),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
