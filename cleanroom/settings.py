"""Settings from the environment (12-factor), with an embedded default that needs no server.

With nothing set: SQLite and local folders under var/, a broker that needs no server (kombu's
filesystem transport), a simulated TEE. DATABASE_URL, CELERY_BROKER_URL and the storage roots
move each part onto real infrastructure; cleanroom/docs/configuration.md lists them all.
"""

import secrets
from pathlib import Path
from typing import Any

import environ
from csp.constants import NONCE

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("CLEANROOM_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """A per-checkout key for the embedded default; production must set SECRET_KEY."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Owners' passkeys (WebAuthn) are bound to this relying party, a domain (never an IP address),
# and asserted only from these origins.
WEBAUTHN_RP_ID = env.str("CLEANROOM_WEBAUTHN_RP_ID", default="localhost")
WEBAUTHN_ORIGINS = env.list("CLEANROOM_WEBAUTHN_ORIGINS", default=["http://localhost:8000"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "axes",
    "cleanroom.audit",
    "accounts",
    "parties",
    "jobs",
    "trails",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.SessionRecordMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it answers a locked-out login before any view.
    "axes.middleware.AxesMiddleware",
]

# Logins and API tokens: after AXES_FAILURE_LIMIT wrong passwords (or refused passkey
# assertions) for one username from one address, password, passkey and token sign-in are all
# refused for AXES_COOLOFF_TIME hours (audited as `account.locked_out`).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "parties.sign_in.PasskeyBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_TIME", default=1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# Failed attempts keep their form data for the operator: never a passkey's assertion.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "assertion"]
# API tokens (accounts): hashed at rest; each expires after at most this many days.
TOKEN_LIFETIME_DAYS = env.int("CLEANROOM_TOKEN_LIFETIME_DAYS", default=30)

# Pages run the project's own scripts and styles only: no inline script or style, no CDN.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # The nonce appears only in the policy of a page that asks for one (the composer, for
        # CodeMirror's style elements); every other page keeps 'self' alone.
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

ROOT_URLCONF = "cleanroom.urls"
WSGI_APPLICATION = "cleanroom.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "parties.context_processors.memberships",
            ],
        },
    },
]

# What this process is: "control" (web, control and audit workers, beat; and in the embedded
# default every site's worker too) or "site" (a site's worker with no platform secrets: no
# database, no key folder; it reaches the control plane through the site API alone).
CLEANROOM_ROLE = env.str("CLEANROOM_ROLE", default="control")
if CLEANROOM_ROLE not in ("control", "site"):
    raise ValueError(f"CLEANROOM_ROLE is 'control' or 'site', not {CLEANROOM_ROLE!r}")
DATABASES: dict[str, dict[str, Any]]
if CLEANROOM_ROLE == "site":
    # A backend that refuses every query with the reason (cleanroom/nodatabase).
    DATABASES = {"default": {"ENGINE": "cleanroom.nodatabase"}}
else:
    DATABASES = {
        "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'cleanroom.sqlite3'}")
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Serialise writers instead of failing with "database is locked" when the worker and the
    # web process write at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
    # Tests run workers in threads beside the test: a file, not shared-cache memory, lets them
    # wait for each other's locks as the embedded default's processes do.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-cleanroom.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "cleanroom" / "static"]
# Collected once per release (deploy/Containerfile, deploy/README.md), not at each start.
STATIC_ROOT = Path(env.str("CLEANROOM_STATIC_ROOT", default=str(VAR_DIR / "static")))
# WhiteNoise warns about a missing STATIC_ROOT; a fresh checkout has not run collectstatic.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Uploads: anything over 2.5 MB goes to a private temporary file while it is validated and
# encrypted; the upload handler refuses a file over the limit as it streams in.
DATASET_MAX_UPLOAD_BYTES = env.int("DATASET_MAX_UPLOAD_BYTES", default=2 * 1024**3)
FILE_UPLOAD_HANDLERS = [
    "parties.uploads.LimitedTemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR", default=None)
FILE_UPLOAD_PERMISSIONS = 0o600

# Data plane storage: one root per jurisdiction. CLEANROOM_STORAGE_ROOTS overrides single ones,
# e.g. "EU=/srv/eu,CH=/srv/ch"; the others live under CLEANROOM_STORAGE_ROOT/<code>.
STORAGE_ROOT = Path(env.str("CLEANROOM_STORAGE_ROOT", default=str(VAR_DIR / "storage")))
STORAGE_ROOTS = {
    code.upper(): Path(path)
    for code, path in env.dict("CLEANROOM_STORAGE_ROOTS", default={}).items()
}
# Jurisdictions whose files the web tier stores through their storage receiver, over HTTPS,
# e.g. "EU=https://storage.eu.example:8444": it never opens a path under their roots
# (parties/storage.py). A receiver (`manage.py storage_receiver`) listens where its URL says.
STORAGE_SITES = {
    code.upper(): url for code, url in env.dict("CLEANROOM_STORAGE_SITES", default={}).items()
}
# The local key service keeps each organisation's key-encryption key here. A cloud KMS replaces it.
KEY_SERVICE = env.str("CLEANROOM_KEY_SERVICE", default="cleanroom.crypto.keys.LocalKeyService")
# A site process has none (None: cleanroom.crypto.keys.key_service refuses).
KEY_SERVICE_ROOT = (
    None
    if CLEANROOM_ROLE == "site"
    else Path(env.str("CLEANROOM_KEY_ROOT", default=str(VAR_DIR / "keys")))
)
# Each owner organisation's own key service (python -m keyservice), by organisation slug, e.g.
# "charite=https://keys.charite.example:8443"; organisations not named here have the embedded
# one, which runs in the TEE host's process (refused by check --deploy).
KEY_SERVICES = env.dict("CLEANROOM_KEY_SERVICES", default={})
# The site a worker process runs at (each worker serves one site's queue).
CLEANROOM_SITE = env.str("CLEANROOM_SITE", default="")
# Each process signs its key service requests as a caller of its own, which each organisation
# pins with the operations it allows it: a site's worker as `site.<name>`, any other process as
# `web`. Its raw Ed25519 key is KEY_SERVICE_CALLER_KEY, by default its name's file in
# KEY_SERVICE_CALLER_KEYS.
KEY_SERVICE_CALLER = env.str(
    "CLEANROOM_KEY_SERVICE_CALLER", default=f"site.{CLEANROOM_SITE}" if CLEANROOM_SITE else "web"
)
KEY_SERVICE_CALLER_KEYS = Path(
    env.str("CLEANROOM_KEY_SERVICE_CALLER_KEYS", default=str(VAR_DIR / "keyservice-callers"))
)
KEY_SERVICE_CALLER_KEY = Path(
    env.str(
        "CLEANROOM_KEY_SERVICE_CALLER_KEY",
        default=str(KEY_SERVICE_CALLER_KEYS / f"{KEY_SERVICE_CALLER}.key"),
    )
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "cleanroom.api.Pages",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "cleanroom.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cleanroom.api.exception_handler",
    # JSON everywhere; the upload endpoints take multipart forms as well (parties/api.py).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Clean room API",
    "DESCRIPTION": (
        "Organisations, datasets pinned to jurisdictions, analysis policies and rooms. "
        "No endpoint ever returns rows."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the project's own static files: /api/docs/ works with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Without deep links: each operation's link sits inside its expand button, a control in a
    # control that keyboards and screen readers cannot reach on its own (axe: nested-interactive).
    "SWAGGER_UI_SETTINGS": {"deepLinking": False},
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PolicyMechanismEnum": "parties.models.AnalysisPolicy.Mechanism",
        "QueryMechanismEnum": "jobs.models.Query.Mechanism",
        "SourceFormatEnum": "parties.models.DatasetVersion.Format",
    },
}

# Celery: no default queue for data-plane work; each step is routed to `site.<name>`.
# The filesystem transport uses no host, but kombu warns, once per process, of a URL without one.
# CELERY_BROKER_URL_FILE: a file holding the URL instead (a site's container takes its own broker
# user's URL from its own folder, not from the environment: deploy/compose.yaml).
_BROKER_URL_FILE = env.str("CELERY_BROKER_URL_FILE", default="")
CELERY_BROKER_URL = (
    Path(_BROKER_URL_FILE).read_text().strip()
    if _BROKER_URL_FILE
    else env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
)
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's filesystem transport: messages are files in one folder shared by all processes.
    for folder in ("queue", "control"):
        (VAR_DIR / "broker" / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "broker" / "queue"),
        "data_folder_out": str(VAR_DIR / "broker" / "queue"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Control-plane housekeeping runs on its own queue; data-plane steps never use it.
CELERY_TASK_DEFAULT_QUEUE = "control"
# A running job or step holds a lease its site renews every third of JOB_LEASE_SECONDS; the
# sweep, every JOB_LEASE_SWEEP_SECONDS, sends again or ends what a dead site left running. So a
# job whose site died is sent again or ended within the two added up (jobs/docs/running-queries.md).
JOB_LEASE_SECONDS = env.float("JOB_LEASE_SECONDS", default=30.0)
JOB_LEASE_SWEEP_SECONDS = env.float("JOB_LEASE_SWEEP_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE = {
    "expire-queries": {"task": "jobs.expire_queries", "schedule": 300.0},
    "dispatch-pending-jobs": {"task": "jobs.dispatch_pending", "schedule": 30.0},
    "expire-leases": {"task": "jobs.expire_leases", "schedule": JOB_LEASE_SWEEP_SECONDS},
}
TEE_ENCLAVE_TIMEOUT = env.int("TEE_ENCLAVE_TIMEOUT", default=600)
# Seconds a synthesizer may train inside the enclave (CTGAN's epochs stop at this limit).
SYNTHESIS_TIME_LIMIT = env.float("SYNTHESIS_TIME_LIMIT", default=300.0)

# Cookies and transport. The defaults suit the embedded default on http://localhost; production
# sets the HTTPS ones (deploy/env.example) and `check --deploy` refuses weaker values
# (Django's security checks and accounts/checks.py).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("CLEANROOM_SESSION_HOURS", default=12) * 3600
SESSION_COOKIE_SAMESITE = env.str("SESSION_COOKIE_SAMESITE", default="Lax")
# The CSRF cookie is not HttpOnly: the token is in every page anyway, so (as Django's docs say)
# hiding the cookie from scripts protects nothing.
CSRF_COOKIE_HTTPONLY = False
CSRF_COOKIE_SAMESITE = env.str("CSRF_COOKIE_SAMESITE", default="Lax")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)
# Health checks and Prometheus scrape the web tier from inside the deployment's network, over
# plain HTTP: they are not redirected to HTTPS (/metrics still asks for its bearer token).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

# Metrics (cleanroom/metrics.py, deploy/README.md "Metrics"). The web tier serves /metrics only
# to a request bearing CLEANROOM_METRICS_TOKEN (without one, /metrics does not exist); each
# Celery worker and beat serve theirs on CLEANROOM_METRICS_PORT (0: none) at
# CLEANROOM_METRICS_ADDRESS, an internal address that only Prometheus reaches.
METRICS_TOKEN = env.str("CLEANROOM_METRICS_TOKEN", default="")
METRICS_PORT = env.int("CLEANROOM_METRICS_PORT", default=0)
METRICS_ADDRESS = env.str("CLEANROOM_METRICS_ADDRESS", default="127.0.0.1")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"refusals": {"()": "cleanroom.log_filters.RefusalsWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["refusals"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}

TEST_RUNNER = "cleanroom.testing.PytestRunner"

# --- Audit log (cleanroom.audit) ---------------------------------------------------------------
# Checkpoints name their log by origin "<prefix>/<log>", e.g. "cleanroom.local/room/7"; the log
# key is named after the prefix. AUDIT_CHECKPOINT_SIGNING: "task" enqueues signing on the
# Celery queue "audit" after each commit (production: the audit worker alone uses the log key),
# "inline" signs in-process after the commit (the embedded default), "off" leaves it to
# `manage.py sign_checkpoints`.
CLEANROOM_LOG_ORIGIN_PREFIX = env.str("CLEANROOM_LOG_ORIGIN_PREFIX", default="cleanroom.local")
AUDIT_CHECKPOINT_SIGNING = env.str(
    "CLEANROOM_AUDIT_SIGNING",
    default="inline" if CELERY_BROKER_URL.startswith("filesystem") else "task",
)
# AUDIT_LOG_KEY_HOLDER: whether this process may use the log key (sign checkpoints and bundle
# manifests). The embedded default's single process does; in production ("task") only the audit
# worker, started with CLEANROOM_AUDIT_KEY_HOLDER=true; the web tier enqueues and never signs.
AUDIT_LOG_KEY_HOLDER = env.bool(
    "CLEANROOM_AUDIT_KEY_HOLDER", default=AUDIT_CHECKPOINT_SIGNING != "task"
)
CELERY_TASK_ROUTES = {"cleanroom.audit.tasks.*": {"queue": "audit"}}

# --- TEE attestation (cleanroom.attestation) ---------------------------------------------------
# TEE_ALLOW_SIMULATED trusts this deployment's simulated attestation root, generated on first use
# in TEE_SIMULATED_ROOT_DIR and named "SIMULATED TEE - NOT HARDWARE BACKED": the embedded default,
# labelled simulated everywhere. It is not hardware backed, so `check --deploy` refuses it
# (cleanroom.E001); production sets TEE_ALLOW_SIMULATED=false and trusts the pinned AWS Nitro root
# alone. TEE_MEASUREMENT_ALLOWLIST: the enclave measurements the key service accepts, comma
# separated; each entry a PCR0 hex value, or "PCR0=<hex>+PCR1=<hex>" when several must match.
TEE_ALLOW_SIMULATED = env.bool("TEE_ALLOW_SIMULATED", default=True)
TEE_SIMULATED_ROOT_DIR = Path(env.str("TEE_SIMULATED_ROOT_DIR", default=str(VAR_DIR / "tee")))
TEE_MEASUREMENT_ALLOWLIST = env.list("TEE_MEASUREMENT_ALLOWLIST", default=[])

# --- MPC compute parties (jobs.engines.mpc) ----------------------------------------------------
# MPC_CREDENTIALS_DIR holds the per-deployment MPC CA and each party site's TLS and sealing keys
# (`manage.py mpc_credentials`; made on first use otherwise); at a site of a production
# deployment, only the CA's certificate and that site's own keys. MPC_CERTIFICATES_DIR: where
# every party's certificate is found (parties/<site>/tls.crt), default MPC_CREDENTIALS_DIR; an
# input site needs only these and ca.crt (jobs/engines/mpc/certificates.py).
# MPC_PARTY_ADDRESSES: the address each MPC party site listens on and is reached at, "site=host"
# comma separated; a site not named uses 127.0.0.1. A job's party i uses port
# MPC_PORT_BASE + (job id * 8 + i) mod 8192, so concurrent jobs do not collide.
# MPC_PARTY_TIMEOUT: seconds a party process may take, in total.
# MPC_INBOX_ADDRESSES: where each MPC party site's share inbox (`manage.py mpc_inbox`) listens
# and is reached, "site=host:port" comma separated; a site not named listens on 127.0.0.1, port
# MPC_PORT_BASE + 8192 + its site id. MPC_INBOX_DIR: the folder whose <site>/ subfolder the
# inbox stores received input shares in, and the site's compute step reads them from.
MPC_CREDENTIALS_DIR = Path(env.str("MPC_CREDENTIALS_DIR", default=str(VAR_DIR / "mpc")))
MPC_CERTIFICATES_DIR = env.str("MPC_CERTIFICATES_DIR", default="")
MPC_PARTY_ADDRESSES = env.dict("MPC_PARTY_ADDRESSES", default={})
MPC_PORT_BASE = env.int("MPC_PORT_BASE", default=20000)
MPC_PARTY_TIMEOUT = env.int("MPC_PARTY_TIMEOUT", default=120)
MPC_INBOX_ADDRESSES = env.dict("MPC_INBOX_ADDRESSES", default={})
MPC_INBOX_DIR = Path(env.str("MPC_INBOX_DIR", default=str(VAR_DIR / "mpc-inbox")))

# --- The site API's certificates (parties/site_certificates.py) -------------------------------
# `manage.py site_certificates` makes the site API CA, its server certificate and each site's
# client certificate here; a host of a production deployment keeps only its own part.
SITE_API_CREDENTIALS_DIR = Path(
    env.str("CLEANROOM_SITE_API_CREDENTIALS_DIR", default=str(VAR_DIR / "site-api"))
)
# The site API's CA certificate: the control plane checks each site's certificate against it,
# a site the control plane's server certificate. A site process (CLEANROOM_ROLE=site) reaches
# the site API at SITE_API_URL (e.g. https://control.example:8443/site-api) with its own
# certificate and key, by default its folder under SITE_API_CREDENTIALS_DIR.
SITE_API_CA = Path(
    env.str("CLEANROOM_SITE_API_CA", default=str(SITE_API_CREDENTIALS_DIR / "ca.crt"))
)
SITE_API_URL = env.str("CLEANROOM_SITE_API_URL", default="")
SITE_API_CERTIFICATE = Path(
    env.str(
        "CLEANROOM_SITE_API_CERTIFICATE",
        default=str(SITE_API_CREDENTIALS_DIR / "sites" / CLEANROOM_SITE / "tls.crt"),
    )
)
SITE_API_KEY = Path(
    env.str(
        "CLEANROOM_SITE_API_KEY",
        default=str(SITE_API_CREDENTIALS_DIR / "sites" / CLEANROOM_SITE / "tls.key"),
    )
)
if CLEANROOM_ROLE == "site" and not SITE_API_URL:
    raise ValueError("A site process (CLEANROOM_ROLE=site) needs CLEANROOM_SITE_API_URL.")
