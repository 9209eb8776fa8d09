import django.db.models.deletion
from django.db import migrations, models


def refuse_platform_signed_approvals(apps, schema_editor):
    """Approvals signed with the platform's key were never the owners': they cannot become
    valid ones. Re-approve on a fresh database (the demo: delete var/)."""
    if apps.get_model("jobs", "Approval").objects.exists():
        raise RuntimeError(
            "This database holds approvals signed with the platform's key, which owners' "
            "credentials replace; start from an empty database (the demo: delete var/)."
        )


class Migration(migrations.Migration):
    """Every approval is made by one of the owner organisation's own credentials."""

    dependencies = [
        ("jobs", "0007_participation_suspension"),
        ("parties", "0006_approval_credentials"),
    ]

    operations = [
        migrations.RunPython(refuse_platform_signed_approvals, migrations.RunPython.noop),
        migrations.RemoveField(model_name="approval", name="signature"),
        migrations.AddField(
            model_name="approval",
            name="credential",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="approvals",
                to="parties.approvalcredential",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="approval", name="evidence", field=models.JSONField(), preserve_default=False
        ),
    ]
