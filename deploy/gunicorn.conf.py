"""Gunicorn for the web tier: `gunicorn -c deploy/gunicorn.conf.py cleanroom.wsgi`."""

import multiprocessing
import os

from cleanroom import metrics

wsgi_app = "cleanroom.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
# Uploads stream to disk and are validated and encrypted in the request: allow for large files.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 600))
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def when_ready(server):
    # The bound addresses, not the configured ones: a bind to port 0 gets a free port.
    server.log.info("cleanroom web tier ready on %s", " ".join(map(str, server.LISTENERS)))


def on_starting(server):
    # The workers' counters add up in PROMETHEUS_MULTIPROC_DIR, when it is set: start it empty.
    metrics.start_multiprocess_dir()
