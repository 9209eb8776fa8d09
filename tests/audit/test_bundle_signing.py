"""Only the audit worker signs: the production web tier can neither sign a checkpoint nor build a
bundle, and serves the bundles the worker built (a real worker process over Redis)."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.urls import reverse

from cleanroom.audit import checkpoints
from cleanroom.audit.bundles import export_bundle, request_bundle
from cleanroom.audit.log import record_event, room_log_name
from cleanroom.audit.models import AuditBundle, AuditEvent, Checkpoint, LogKey
from cleanroom.celery import app as project_app
from cleanroom.crypto.keys import KeyServiceError, key_service
from tests import factories
from tests.audit.bundling import run_verify, trust_file

REDIS = ("127.0.0.1", 6379)
BROKER = f"redis://{REDIS[0]}:{REDIS[1]}/13"


def production_web_tier(settings, keys: Path) -> None:
    """The web tier of a deployment: checkpoints and bundles go to the audit worker, and its key
    service (here: its own key folder) holds no log key."""
    settings.AUDIT_CHECKPOINT_SIGNING = "task"
    settings.AUDIT_LOG_KEY_HOLDER = False
    settings.KEY_SERVICE_ROOT = keys
    key_service.cache_clear()


def append(log: str) -> None:
    with transaction.atomic():
        record_event(log=log, type="test.event", actor=None, subject="job:1")


@pytest.mark.django_db
def test_the_web_tier_in_production_settings_cannot_sign_a_checkpoint_or_a_bundle(
    settings, world, tmp_path
) -> None:
    room = world.room()
    log = room_log_name(room.pk)
    # The audit worker (its own key folder) made the log key and signed once.
    settings.AUDIT_CHECKPOINT_SIGNING = "off"
    settings.KEY_SERVICE_ROOT = tmp_path / "audit-worker-keys"
    key_service.cache_clear()
    signed = checkpoints.sign_checkpoint(log)

    production_web_tier(settings, tmp_path / "web-keys")
    append(log)
    with pytest.raises(checkpoints.LogKeyRefused, match="only the audit worker signs"):
        checkpoints.sign_checkpoint(log)
    with pytest.raises(checkpoints.LogKeyRefused):
        export_bundle(room=room, output=tmp_path / "forged.zip")
    with pytest.raises(checkpoints.LogKeyRefused):
        checkpoints.sign_with_log_key("anything\n", LogKey.objects.get())
    with transaction.atomic():
        assert request_bundle(room=room, by=world.rita) is None  # asked of the worker instead
    assert list(Checkpoint.objects.filter(log__name=log)) == [signed]
    assert not AuditBundle.objects.exists()

    # Flipping the setting on a web host does not help: its key service has no log key.
    settings.AUDIT_LOG_KEY_HOLDER = True
    with pytest.raises(KeyServiceError, match="unknown key"):
        checkpoints.sign_checkpoint(log)
    assert list(Checkpoint.objects.filter(log__name=log)) == [signed]


# -- a real audit worker process ----------------------------------------------------------------


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerLog:
    """The worker's log lines, read as they come, with a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.selector = selectors.DefaultSelector()
        self.selector.register(process.stdout, selectors.EVENT_READ)
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.selector.select(timeout=left):
                break
            line = self.process.stdout.readline()
            if not line:
                break  # the worker exited
            self.lines.append(line)
            if text in line:
                return line
        pytest.fail(f"the audit worker never logged {text!r}:\n{''.join(self.lines[-30:])}")


@pytest.fixture
def audit_worker_process(settings, tmp_path):
    """`celery -A cleanroom worker -Q audit` in a process of its own, holding the log key in its
    own key folder, over Redis; the web side (this process) enqueues through the same broker."""
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        pytest.skip("needs Redis at 127.0.0.1:6379 (the broker of this test)")
    app = Celery("cleanroom-web-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url=BROKER, broker_transport_options={}, broker_connection_retry_on_startup=True
    )
    app.set_current()
    with app.connection() as conn:  # no tasks left from an earlier run
        conn.default_channel.queue_purge("audit")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CLEANROOM_BOOTSTRAP": "0",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CLEANROOM_AUDIT_SIGNING": "task",
        "CLEANROOM_AUDIT_KEY_HOLDER": "true",
        "CLEANROOM_KEY_ROOT": str(tmp_path / "audit-worker-keys"),
        "CLEANROOM_VAR_DIR": str(tmp_path / "audit-worker-var"),
        "SECRET_KEY": "audit-worker-test",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cleanroom", "worker", "-Q", "audit",
         "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--hostname", f"audit-test-{os.getpid()}@%h"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    log = WorkerLog(process)
    try:
        log.wait_for("ready.")
        yield log
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.selector.close()
        process.stdout.close()
        project_app.set_current()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_regulator_downloads_the_bundle_the_audit_worker_built_and_verify_py_accepts_it(
    audit_worker_process, settings, client, tmp_path, patients_csv
) -> None:
    production_web_tier(settings, tmp_path / "keys")
    world = factories.World.build()
    from jobs.rooms.services import contribute_dataset

    room = world.room()
    version = factories.dataset(world.charite, world.alice, patients_csv, jurisdiction="EU")
    contribute_dataset(room=room, dataset=version.dataset, by=world.alice)
    client.force_login(world.rita)
    assert client.get(reverse("audit-bundle-download", args=[room.slug])).status_code == 404

    response = client.post(reverse("audit-bundle-prepare", args=[room.slug]), follow=True)
    assert "once the audit worker has built and signed it" in response.content.decode()
    audit_worker_process.wait_for("cleanroom.audit.tasks.export_bundle[")
    audit_worker_process.wait_for("succeeded")

    bundle = AuditBundle.objects.get()
    response = client.get(reverse("audit-bundle-download", args=[room.slug]))
    assert response.status_code == 200
    path = tmp_path / "downloaded.zip"
    path.write_bytes(response.content)
    verdict = run_verify(path, trust_file(tmp_path))
    assert verdict.ok, verdict.stderr
    assert f"{bundle.tree_size} events" in verdict.stdout
    exported = AuditEvent.objects.get(log__name=room_log_name(room.pk), type="bundle.exported")
    assert exported.seq == bundle.tree_size
    # The log key lives in the worker's key folder, never in the web tier's.
    key = LogKey.objects.get()
    assert (tmp_path / "audit-worker-keys" / f"{key.key_id}.key").exists()
    assert not (tmp_path / "keys" / f"{key.key_id}.key").exists()
