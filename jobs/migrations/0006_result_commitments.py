from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0005_job_charged_at")]

    operations = [
        migrations.RenameField(model_name="result", old_name="sha256", new_name="commitment"),
        migrations.AddField(
            model_name="result", name="sealed_salt", field=models.BinaryField(default=b"")
        ),
        migrations.RenameField(model_name="resultfile", old_name="sha256", new_name="commitment"),
    ]
