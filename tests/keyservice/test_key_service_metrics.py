"""A key service's metrics port: its refusals, counted by operation, for the organisation's own
Prometheus; the signed API itself serves no metrics."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from keyservice import config
from keyservice.config import Caller
from keyservice.signing import HEADER, sign_request


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(  # noqa: S310 - the test's own server
        f"{url}{path}", data=b"{}", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_a_key_service_counts_its_refusals_on_its_metrics_port(tmp_path):
    state = tmp_path / "state"
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(settings.BASE_DIR)}
    run = [sys.executable, "-m", "keyservice"]
    subprocess.run(
        [*run, "init", str(state), "--label", "metrics"],
        env=environment,
        check=True,
        capture_output=True,
    )
    caller = Ed25519PrivateKey.generate()
    pinned = config.config_json(
        organization=1,
        approvers=[],
        jurisdictions=[],
        sites={},
        trusted_roots=[],
        allowed_measurements=[],
        # The web tier's key: it may make keys, never ask for a release.
        callers={
            "web": Caller(key=caller.public_key().public_bytes_raw(), may=frozenset({"keys"}))
        },
    )
    (state / "config.json").write_text(json.dumps(pinned))
    metrics_port = _free_port()
    process = subprocess.Popen(
        [*run, "serve", str(state), "--label", "metrics", "--metrics-port", str(metrics_port)],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = process.stdout.readline().split()
        assert ready[0] == "ready"
        url = f"http://127.0.0.1:{ready[1]}"
        # A stranger, unsigned; then the web tier asking for a release it may not ask for.
        assert _post(url, "/keys", {}) == 401
        signed = sign_request("web", caller, "POST", "/release", b"{}")
        assert _post(url, "/release", {HEADER: signed}) == 403
        # The signed API answers no GET: the metrics are on their own port only.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{url}/metrics", timeout=10)  # noqa: S310
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            body = response.read().decode()
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
    refusals = {
        s.labels["code"]: s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == "cleanroom_refusals_total"
    }
    assert refusals == {"keyservice_unauthenticated": 1.0, "keyservice_release": 1.0}
