"""Events carry their leaf hash, and (on PostgreSQL) an append is one call of `audit_append`.

The Merkle tree is no longer extended by the append itself but by the checkpoint signer
(`tree.extend`), so logs written before stay as they are: their tree already covers them.
"""

from django.db import migrations, models

from cleanroom.audit import appending


def install(apps, schema_editor):
    appending.install(schema_editor.connection)


def remove(apps, schema_editor):
    appending.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_append_only_tables_and_tree_backfill")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="leaf_hash",
            field=models.BinaryField(max_length=32, null=True),
        ),
        migrations.RunPython(install, remove),
    ]
