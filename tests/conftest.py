"""Shared fixtures: isolated storage and keys per test, personas, and a flush that leaves the
test database as a fresh migration does (audit triggers and seeds in place)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.db.backends.base.operations import BaseDatabaseOperations

from cleanroom.audit import triggers
from cleanroom.crypto.keys import key_service
from parties.seed import seed_jurisdictions_and_sites
from tests import factories

_execute_sql_flush = BaseDatabaseOperations.execute_sql_flush


def _flush_like_a_fresh_migration(self, sql_list):
    """Transactional tests empty every table between tests. The audit table's triggers would
    rightly refuse that, so they are lifted for the flush and put back; and the seeded
    jurisdictions and sites come back, as a freshly migrated database has them."""
    triggers.remove(self.connection)
    try:
        _execute_sql_flush(self, sql_list)
    finally:
        triggers.install(self.connection)
    seed_jurisdictions_and_sites(django_apps)


BaseDatabaseOperations.execute_sql_flush = _flush_like_a_fresh_migration


@pytest.fixture(autouse=True, scope="session")
def static_root_exists():
    """WhiteNoise warns (an error under this suite's filterwarnings) when STATIC_ROOT is missing,
    as it is on a fresh clone before collectstatic; every test client request would fail."""
    Path(django_settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Personas are made with passwords; the production hasher costs a third of a second each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    settings.STORAGE_ROOT = tmp_path / "storage"
    settings.STORAGE_ROOTS = {}
    settings.STORAGE_SITES = {}
    settings.KEY_SERVICE_ROOT = tmp_path / "keys"
    settings.KEY_SERVICE_CALLER_KEYS = tmp_path / "keyservice-callers"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "keyservice-callers" / "web.key"
    settings.TEE_SIMULATED_ROOT_DIR = tmp_path / "tee"
    settings.MPC_INBOX_DIR = tmp_path / "mpc-inbox"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    key_service.cache_clear()
    yield tmp_path
    key_service.cache_clear()


@pytest.fixture
def world(db):
    """Two hospitals (EU, CH), a pharma analyst (US), an auditor, a regulator, an outsider."""
    return factories.World.build()


@pytest.fixture
def patients_csv(tmp_path):
    return factories.patients_csv(tmp_path / "patients.csv", rows=200)
