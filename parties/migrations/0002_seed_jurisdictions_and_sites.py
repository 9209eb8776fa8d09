"""Seed the jurisdictions and sites (parties/seed.py)."""

from django.db import migrations

from parties.seed import seed_jurisdictions_and_sites


def seed(apps, schema_editor):
    seed_jurisdictions_and_sites(apps)


def unseed(apps, schema_editor):
    apps.get_model("parties", "Site").objects.all().delete()
    apps.get_model("parties", "Jurisdiction").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("parties", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
