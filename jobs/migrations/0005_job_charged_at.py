from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_synthetic_extracts")]

    operations = [
        migrations.RenameField(model_name="job", old_name="noise_drawn_at", new_name="charged_at"),
    ]
