"""The owners' key services of the embedded default, as separate processes on this machine:
one `python -m keyservice` per organisation, each with its own SoftHSM2 token in
var/keyservices/<slug>/ (as an OS user of its own when started by root: keyservice/local.py),
pinning what its organisation would (its owners' approval credentials as registered when it
starts, its home jurisdiction's transfer rules, the sites, this deployment's attestation roots
and the enclave code it accepts) and the platform's callers: each process that calls it
(the web tier, each site's worker) with a key of its own and only the operations its part
needs. The demo starts them, names them to the web tier and the workers (KEY_SERVICES), and
stops them with itself."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from cleanroom.attestation.measured import measured_files
from cleanroom.attestation.trust import measure
from jobs.engines.tee.trust import TeeConfig, trusted_roots
from keyservice import config, local
from keyservice.config import Caller
from parties.models import Organization, Site
from parties.selectors import pinned_approvers

log = logging.getLogger(__name__)

# What each of the platform's processes may ask an owner's key service, by its part: the web
# tier makes and wraps dataset keys at upload, makes a job's delivery key, opens results for
# their readers, destroys a delivery key when a job it ends is cancelled, and carries an
# owner's kill switch from the platform's page (a deployment grants `resume` to no one but the
# organisation's own administrators); a TEE host relays the attested release and seals the
# result to its receivers; an owner's worker site asks its dataset's key for an input step; an
# MPC party opens the delivery and seals the result. Opening is granted by what was sealed: the
# web tier opens results only, never a job's output shares; a party those shares only. Any
# worker may end an MPC job, and a job's end destroys its delivery key.
WEB_TIER = frozenset(
    {"keys", "wrap", "receiving-key", "open-results", "destroy", "suspend", "resume"}
)
SITE_WORKERS = {
    Site.Kind.TEE: frozenset({"release", "receiving-key"}),
    Site.Kind.WORKER: frozenset({"site-key", "destroy"}),
    Site.Kind.MPC_PARTY: frozenset({"open-delivery", "receiving-key", "destroy"}),
}


def platform_callers() -> dict[str, frozenset[str]]:
    """Each process's caller name (as settings names it: `web`, or `site.<name>` for a site's
    worker) and the operations the organisations allow it."""
    callers = {"web": WEB_TIER}
    for site in Site.objects.order_by("name"):
        callers[f"site.{site.name}"] = SITE_WORKERS[Site.Kind(site.kind)]
    return callers


def _caller_key(name: str) -> Ed25519PrivateKey:
    """The caller's own key, made the first time: this process's at KEY_SERVICE_CALLER_KEY,
    each other's in KEY_SERVICE_CALLER_KEYS, where that process looks for it by name."""
    if name == settings.KEY_SERVICE_CALLER:
        path = Path(settings.KEY_SERVICE_CALLER_KEY)
    else:
        path = Path(settings.KEY_SERVICE_CALLER_KEYS) / f"{name}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
        path.chmod(0o600)
    return Ed25519PrivateKey.from_private_bytes(path.read_bytes())


def ensure_caller_keys() -> list[str]:
    """Make every platform caller's key where missing (as the pins below take them), so a
    set-up step can hand each process its own before any starts (deploy/compose.yaml's
    `credentials`); the callers' names."""
    names = list(platform_callers())
    for name in names:
        _caller_key(name)
    return names


def _pin(organization: Organization, state: Path, callers: Mapping[str, Caller]) -> None:
    tee = TeeConfig.from_settings(settings)
    sites = Site.objects.exclude(kind=Site.Kind.MPC_PARTY).select_related("jurisdiction")
    pinned = config.config_json(
        organization=organization.pk,
        approvers=list(pinned_approvers(organization)),
        jurisdictions=[organization.jurisdiction.rules()],
        sites={site.name: site.place() for site in sites},
        trusted_roots=trusted_roots(tee),
        allowed_measurements=[{0: measure(measured_files(tee.code_root))[0]}],
        callers=callers,
    )
    (state / "config.json").write_text(json.dumps(pinned, indent=1))


@contextmanager
def owner_key_services(
    organizations: Iterable[Organization], callers: Mapping[str, frozenset[str]] | None = None
) -> Iterator[dict[str, str]]:
    """Start each organisation's key service; yields their addresses by slug, named in this
    process's settings and environment (for the workers it starts) while they run. `callers`
    (by default `platform_callers()`) is what each service pins: tests that play every process
    in one name this process's caller alone."""
    wanted = platform_callers() if callers is None else callers
    pinned = {
        name: Caller(key=_caller_key(name).public_key().public_bytes_raw(), may=may)
        for name, may in wanted.items()
    }
    started: list[local.Started] = []
    urls, named = {}, settings.KEY_SERVICES
    # Each worker started meanwhile finds its own key by its site's caller name.
    unset = ("CLEANROOM_KEY_SERVICE_CALLER", "CLEANROOM_KEY_SERVICE_CALLER_KEY")
    environment = {k: os.environ.get(k) for k in ("CLEANROOM_KEY_SERVICES", *unset)}
    runner = None
    try:
        for organization in organizations:
            state = Path(settings.VAR_DIR) / "keyservices" / organization.slug
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            _pin(organization, state, pinned)
            service = local.start(state, organization.slug, Path(settings.BASE_DIR), runner=runner)
            started.append(service)
            runner = service.runner if service.account else None
            if service.refusal:
                log.warning("%s's key service runs %s", organization.slug, service.refusal)
        for organization, service in zip(organizations, started, strict=True):
            assert service.process.stdout is not None
            ready = service.process.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise RuntimeError(f"{organization.slug}'s key service did not start")
            urls[organization.slug] = f"http://127.0.0.1:{ready[1]}"
        settings.KEY_SERVICES = urls
        os.environ["CLEANROOM_KEY_SERVICES"] = ",".join(f"{k}={v}" for k, v in urls.items())
        for name in unset:
            os.environ.pop(name, None)
        yield urls
    finally:
        settings.KEY_SERVICES = named
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for service in started:
            service.process.terminate()
        for service in started:
            service.process.wait(timeout=30)
            if service.process.stdout is not None:
                service.process.stdout.close()


def pin_key_services_elsewhere(
    organizations: Iterable[Organization], folder: Path, timeout: float = 300
) -> dict[str, str]:
    """For key services that run elsewhere (deploy/compose.yaml: a container each), named in
    KEY_SERVICES: write what each organisation pins to `folder/<slug>/config.json`, where its
    container takes it from before it serves, and wait until each answers; their addresses by
    slug. A deployment's organisations write their own; the demo writes them for its four."""
    pinned = {
        name: Caller(key=_caller_key(name).public_key().public_bytes_raw(), may=may)
        for name, may in platform_callers().items()
    }
    urls = {}
    for organization in organizations:
        if organization.slug not in settings.KEY_SERVICES:
            raise RuntimeError(f"CLEANROOM_KEY_SERVICES names no key service for {organization}")
        # Written beside, then renamed: its container never copies half a file.
        pending = folder / f".{organization.slug}.pending"
        pending.mkdir(parents=True, exist_ok=True)
        _pin(organization, pending, pinned)
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
