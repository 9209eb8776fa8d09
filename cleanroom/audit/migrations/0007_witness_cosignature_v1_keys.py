"""Witness keys become C2SP tlog-cosignature keys: their key IDs are computed with the
cosignature/v1 type byte 0x04. Cosignatures made before stay in the log (it is append-only) but
no longer verify under the new keys; witnesses cosign the next checkpoint in the new format."""

from django.db import migrations

from cleanroom.audit.verifier.notes import COSIGNATURE_ALGORITHM, ED25519_ALGORITHM, key_id


def rekey(algorithm: int):
    def run(apps, schema_editor):
        Witness = apps.get_model("audit", "Witness")
        for witness in Witness.objects.all():
            typed = bytes([algorithm]) + bytes(witness.public_key)
            witness.note_key_id = key_id(witness.name, typed).hex()
            witness.save(update_fields=["note_key_id"])

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_prepared_bundles")]
    operations = [
        migrations.RunPython(rekey(COSIGNATURE_ALGORITHM), rekey(ED25519_ALGORITHM)),
    ]
