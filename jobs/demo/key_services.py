"""The owners' key services of the embedded default, as separate processes on this machine:
one `python -m keyservice` per organisation, each with its own SoftHSM2 token in
var/keyservices/<slug>/, pinning what its organisation would (its owners' approval credentials
as registered when it starts, its home jurisdiction's transfer rules, the sites, this
deployment's attestation roots and the enclave code it accepts) and answering the platform's
caller key. The demo starts them, names them to the web tier and the workers (KEY_SERVICES),
and stops them with itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from cleanroom.attestation.measured import measured_files
from cleanroom.attestation.trust import measure
from jobs.engines.tee.trust import TeeConfig, trusted_roots
from keyservice import config
from keyservice.config import OPERATIONS, Caller
from parties.models import Organization, Site
from parties.selectors import pinned_approvers


def _caller_key() -> Ed25519PrivateKey:
    path = Path(settings.KEY_SERVICE_CALLER_KEY)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
        path.chmod(0o600)
    return Ed25519PrivateKey.from_private_bytes(path.read_bytes())


def _pin(organization: Organization, state: Path, caller: Ed25519PrivateKey) -> None:
    tee = TeeConfig.from_settings(settings)
    sites = Site.objects.exclude(kind=Site.Kind.MPC_PARTY).select_related("jurisdiction")
    pinned = config.config_json(
        organization=organization.pk,
        approvers=list(pinned_approvers(organization)),
        jurisdictions=[organization.jurisdiction.rules()],
        sites={site.name: site.place() for site in sites},
        trusted_roots=trusted_roots(tee),
        allowed_measurements=[{0: measure(measured_files(tee.code_root))[0]}],
        # One caller for the demo's web tier and workers; a deployment gives each its own key,
        # allowed only its operations (the web tier keys and wrap, TEE hosts release, the
        # owner's own workers site-key).
        callers={
            "platform": Caller(
                key=caller.public_key().public_bytes_raw(), may=frozenset(OPERATIONS)
            )
        },
    )
    (state / "config.json").write_text(json.dumps(pinned, indent=1))


def _run(*args: str) -> list[str]:
    return [sys.executable, "-m", "keyservice", *args]


def _environment() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(settings.BASE_DIR), "LANG": "C.UTF-8"}


@contextmanager
def owner_key_services(organizations: Iterable[Organization]) -> Iterator[dict[str, str]]:
    """Start each organisation's key service; yields their addresses by slug, named in this
    process's settings and environment (for the workers it starts) while they run."""
    caller = _caller_key()
    processes, urls = [], {}
    named = settings.KEY_SERVICES
    environment = {
        k: os.environ.get(k) for k in ("CLEANROOM_KEY_SERVICES", "CLEANROOM_KEY_SERVICE_CALLER_KEY")
    }
    try:
        for organization in organizations:
            state = Path(settings.VAR_DIR) / "keyservices" / organization.slug
            if not (state / "token.pin").exists():
                subprocess.run(  # noqa: S603 - our own program, fixed arguments
                    _run("init", str(state), "--label", organization.slug),
                    env=_environment(),
                    check=True,
                    capture_output=True,
                )
            _pin(organization, state, caller)
            process = subprocess.Popen(  # noqa: S603 - our own program, fixed arguments
                _run("serve", str(state), "--label", organization.slug),
                env=_environment(),
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(process)
            assert process.stdout  # started with stdout=PIPE
            ready = process.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise RuntimeError(f"{organization.slug}'s key service did not start")
            urls[organization.slug] = f"http://127.0.0.1:{ready[1]}"
        settings.KEY_SERVICES = urls
        os.environ["CLEANROOM_KEY_SERVICES"] = ",".join(f"{k}={v}" for k, v in urls.items())
        os.environ["CLEANROOM_KEY_SERVICE_CALLER_KEY"] = str(settings.KEY_SERVICE_CALLER_KEY)
        yield urls
    finally:
        settings.KEY_SERVICES = named
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
            assert process.stdout  # started with stdout=PIPE
            process.stdout.close()


def pin_key_services_elsewhere(
    organizations: Iterable[Organization], folder: Path, timeout: float = 300
) -> dict[str, str]:
    """For key services that run elsewhere (deploy/compose.yaml: a container each), named in
    KEY_SERVICES: write what each organisation pins to `folder/<slug>/config.json`, where its
    container takes it from before it serves, and wait until each answers; their addresses by
    slug. A deployment's organisations write their own; the demo writes them for its four."""
    caller = _caller_key()
    urls = {}
    for organization in organizations:
        if organization.slug not in settings.KEY_SERVICES:
            raise RuntimeError(f"CLEANROOM_KEY_SERVICES names no key service for {organization}")
        # Written beside, then renamed: its container never copies half a file.
        pending = folder / f".{organization.slug}.pending"
        pending.mkdir(parents=True, exist_ok=True)
        _pin(organization, pending, caller)
        (folder / organization.slug).mkdir(exist_ok=True)
        os.replace(pending / "config.json", folder / organization.slug / "config.json")
        pending.rmdir()
        urls[organization.slug] = settings.KEY_SERVICES[organization.slug]
    deadline = time.monotonic() + timeout
    for slug, url in urls.items():
        address = urlsplit(url)
        while True:
            try:
                socket.create_connection((address.hostname, address.port or 443), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{slug}'s key service at {url} did not answer") from None
                time.sleep(1)
    return urls
