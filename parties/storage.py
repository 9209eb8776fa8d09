"""Where encrypted dataset files live: one storage root per jurisdiction."""

from pathlib import Path

from django.conf import settings


def jurisdiction_root(code: str) -> Path:
    return settings.STORAGE_ROOTS.get(code.upper(), settings.STORAGE_ROOT / code.lower())


def stored_file(version) -> Path:
    return jurisdiction_root(version.dataset.jurisdiction.code) / version.storage_path
