from django.db import migrations

from cleanroom.audit import triggers


def install(apps, schema_editor):
    # Only the event table existed then; later migrations add the other tables' triggers.
    triggers.install(schema_editor.connection, tables=[triggers.EVENT_TABLE])


def remove(apps, schema_editor):
    triggers.remove(schema_editor.connection, tables=[triggers.EVENT_TABLE])


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
