"""Every Modeldeck setting, driven by environment variables with safe development defaults.

Each variable read here is listed, with its default, in `.env.example`.
"""

import os
from datetime import timedelta as _timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.settings.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("MODELDECK_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", False)

# SECRET_KEY from the environment, else from the file SECRET_KEY_FILE names, else from
# var/secret_key, which `dev.py run` writes once with a random key (so `manage.py` commands run
# in the checkout use the same key as the dev stack). No key lives in the source.
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    _secret_key_file = env_str("SECRET_KEY_FILE") or (
        str(VAR_DIR / "secret_key") if (VAR_DIR / "secret_key").exists() else ""
    )
    if _secret_key_file:
        try:
            SECRET_KEY = Path(_secret_key_file).read_text().strip()
        except OSError as _error:
            raise ImproperlyConfigured(
                f"SECRET_KEY_FILE {_secret_key_file} cannot be read: {_error.strerror}"
            ) from None
        if not SECRET_KEY:
            raise ImproperlyConfigured(f"SECRET_KEY_FILE {_secret_key_file} is empty")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: set SECRET_KEY or SECRET_KEY_FILE, or run `python3 dev.py run` "
        "once, which writes a random key to var/secret_key"
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list host names explicitly, never '*'")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "common",
    "accounts",
    "events",
    "registry",
    "deployments",
    "edge",
    "monitoring",
]

MIDDLEWARE = [
    # First, so that it times and counts every response, including those of other middleware.
    "monitoring.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "common.middleware.ContentSecurityPolicyMiddleware",
    "common.middleware.ApiNotFoundMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL names another.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'modeldeck.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; the timeout rides out short locks.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Artifact storage: a folder under var/ by default, S3-compatible storage when configured.
ARTIFACT_STORAGE = env_str("ARTIFACT_STORAGE", "filesystem")
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts"))).resolve()
if ARTIFACT_STORAGE == "filesystem":
    _artifact_backend = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACT_ROOT), "base_url": None},
    }
elif ARTIFACT_STORAGE == "s3":
    _artifact_backend = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    raise ImproperlyConfigured("ARTIFACT_STORAGE must be 'filesystem' or 's3'")
STORAGES = {
    "default": _artifact_backend,
    "artifacts": _artifact_backend,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Uploads stream to a temporary file past this size; the registry's handler caps the total.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
MODELDECK_MAX_UPLOAD_BYTES = env_int("MODELDECK_MAX_UPLOAD_BYTES", 2 * 1024**3)
# Larger models are inspected (signature, opsets) in the sandboxed validation child only.
MODELDECK_PARSE_IN_PROCESS_BYTES = env_int("MODELDECK_PARSE_IN_PROCESS_BYTES", 64 * 1024**2)
# Cap on the optional reference CSV that seeds drift detection.
MODELDECK_MAX_REFERENCE_BYTES = env_int("MODELDECK_MAX_REFERENCE_BYTES", 64 * 1024**2)

# Security headers. HSTS and the secure-cookie flags follow SECURE_COOKIES so that a plain-HTTP
# local install keeps working while `check --deploy` is clean with production values.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline scripts anywhere: every script is a static file. Plotly writes style attributes into
# its SVG, so styles allow 'unsafe-inline' (styles cannot run code).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
# Number of reverse proxies in front of the web process whose X-Forwarded-For we trust.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: text/plain and form bodies are refused (415) so browsers cannot forge API calls;
    # upload endpoints opt into multipart explicitly.
    "DEFAULT_PARSER_CLASSES": ["common.api.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "common.api.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"login": "10/min"},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modeldeck API",
    "DESCRIPTION": "Model registry, deployments, monitoring and experiments.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Several models have a `status`; these name their choice sets in the schema.
    "ENUM_NAME_OVERRIDES": {
        "BuildStatusEnum": "deployments.models.BuildStatus",
        "JobStatusEnum": "registry.models.JobStatus",
    },
}

# API tokens.
API_TOKEN_DEFAULT_DAYS = env_int("API_TOKEN_DEFAULT_DAYS", 90)
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365)

# Celery: JSON only, late acks so a killed worker's task is redelivered, bounded run time.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL == "filesystem://":
    # kombu's transport, but a message file never shows up half written (common/broker.py).
    CELERY_BROKER_TRANSPORT = "common.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    # kombu's filesystem transport expects its folders to exist.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcasts (worker remote control) go here, not into the current folder.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Must exceed the longest task so an unacknowledged task is not redelivered while running.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 900)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 960)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE

# Monitoring: scraping, retention, drift thresholds, webhooks.
METRICS_SCRAPE_INTERVAL_SECONDS = env_float("METRICS_SCRAPE_INTERVAL_SECONDS", 5.0)
METRICS_SCRAPE_TIMEOUT_SECONDS = env_float("METRICS_SCRAPE_TIMEOUT_SECONDS", 2.0)
# `manage.py guard` scrapes every live endpoint and judges its rollback policy this often, in its
# own process: guardrails keep working (and roll back) while the broker, beat or workers are down.
GUARD_INTERVAL_SECONDS = env_float("GUARD_INTERVAL_SECONDS", 30.0)
METRICS_MAX_EXPOSITION_BYTES = env_int("METRICS_MAX_EXPOSITION_BYTES", 8 * 1024**2)
METRICS_MINUTE_RETENTION_DAYS = env_int("METRICS_MINUTE_RETENTION_DAYS", 7)
METRICS_HOUR_RETENTION_DAYS = env_int("METRICS_HOUR_RETENTION_DAYS", 90)
# Bearer token Prometheus presents to the dashboard's own /metrics; empty means staff only.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
DRIFT_WINDOW_MINUTES = env_int("DRIFT_WINDOW_MINUTES", 60)
DRIFT_PSI_THRESHOLD = env_float("DRIFT_PSI_THRESHOLD", 0.2)
DRIFT_JS_THRESHOLD = env_float("DRIFT_JS_THRESHOLD", 0.1)
DRIFT_DATASET_SHARE = env_float("DRIFT_DATASET_SHARE", 0.3)
DRIFT_MIN_ROWS = env_int("DRIFT_MIN_ROWS", 100)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5.0)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 30)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 3600)
# Prediction log: kept this long (with the feedback joined to it); gateways on this machine ship
# it to MODELDECK_INTERNAL_URL (the dashboard as local runtimes reach it; empty turns it off).
PREDICTION_LOG_RETENTION_DAYS = env_int("PREDICTION_LOG_RETENTION_DAYS", 30)
MODELDECK_INTERNAL_URL = env_str("MODELDECK_INTERNAL_URL", "http://127.0.0.1:8000")

# Edge fleets. Enrollment codes live this long by default (and at most the maximum); a device
# not heard from for EDGE_DEVICE_OFFLINE_SECONDS shows as offline on the fleet page.
EDGE_ENROLLMENT_CODE_HOURS = env_int("EDGE_ENROLLMENT_CODE_HOURS", 24)
EDGE_ENROLLMENT_CODE_MAX_HOURS = env_int("EDGE_ENROLLMENT_CODE_MAX_HOURS", 24 * 30)
EDGE_DEVICE_OFFLINE_SECONDS = env_int("EDGE_DEVICE_OFFLINE_SECONDS", 120)
EDGE_ROLLOUT_INTERVAL_SECONDS = env_float("EDGE_ROLLOUT_INTERVAL_SECONDS", 15.0)

# One beat schedule for every periodic job; each entry says why it exists.
RECONCILE_INTERVAL_SECONDS = env_float("RECONCILE_INTERVAL_SECONDS", 15.0)
CELERY_BEAT_SCHEDULE = {
    # Level-triggered healing: re-converge every endpoint, so a killed worker or a crashed
    # serving process is repaired without anyone pressing a button.
    "reconcile-all-endpoints": {
        "task": "deployments.tasks.reconcile_all",
        "schedule": RECONCILE_INTERVAL_SECONDS,
    },
    # Pending versions whose validation task was lost (broker outage, worker killed before ack)
    # get re-enqueued; validation is idempotent.
    "requeue-stale-validations": {
        "task": "registry.tasks.requeue_stale_validations",
        "schedule": 60.0,
    },
    # Batch jobs whose message was lost or whose worker died are re-queued; the job restarts
    # from its stored input under a new attempt number, so a stale worker's writes are fenced.
    "requeue-stale-batch-jobs": {
        "task": "registry.tasks.requeue_stale_batch_jobs",
        "schedule": 120.0,
    },
    # Pull every live runtime's /metrics into minute rows; a stale scrape is dropped, not queued.
    "scrape-runtime-metrics": {
        "task": "monitoring.tasks.scrape_all",
        "schedule": METRICS_SCRAPE_INTERVAL_SECONDS,
        "options": {"expires": METRICS_SCRAPE_INTERVAL_SECONDS},
    },
    # Fold old minute rows into hour rows and delete what is past retention.
    "rollup-metrics": {"task": "monitoring.tasks.rollup_metrics", "schedule": 300.0},
    # Compare each endpoint's live feature histograms with its version's reference profile.
    "compute-drift": {"task": "monitoring.tasks.compute_drift_all", "schedule": 300.0},
    # Open and resolve alerts from the latest metrics and drift results.
    "evaluate-alerts": {"task": "monitoring.tasks.evaluate_alerts", "schedule": 60.0},
    # Guardrails: judge every endpoint's rollback policy; a breach rolls back and converges the
    # endpoint inline, so a bad version is pulled even while workers struggle. `manage.py guard`
    # does the same (and scrapes) without the broker; both running is harmless: the policy's row
    # lock and the new desired release keep a second evaluation from rolling back again.
    "evaluate-rollback-policies": {
        "task": "monitoring.tasks.evaluate_rollback_policies",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # A/B experiments: one sequential look per running experiment (valid under repeated looks).
    "evaluate-experiments": {"task": "monitoring.tasks.evaluate_experiments", "schedule": 60.0},
    # Drop prediction records and feedback past their retention.
    "prune-prediction-log": {"task": "monitoring.tasks.prune_prediction_log", "schedule": 3600.0},
    # Retry webhook deliveries whose backoff has elapsed (and send those the broker lost).
    "retry-webhook-deliveries": {
        "task": "events.tasks.retry_webhook_deliveries",
        "schedule": 30.0,
    },
    # Drop delivered or failed webhook deliveries and their events past the retention.
    "prune-events": {"task": "events.tasks.prune_events", "schedule": 3600.0},
    # Fleet rollouts move on with device heartbeats; this starts waves whose rate limit or
    # timeout ran out while no device reported (e.g. the whole wave is offline). The task lives
    # in edge/tasks.py and keeps its original name, so schedules and queued messages resolve.
    "advance-edge-rollouts": {
        "task": "deployments.edge.tasks.advance_edge_rollouts",
        "schedule": EDGE_ROLLOUT_INTERVAL_SECONDS,
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Registry validation limits (a hostile model can only kill the child process).
VALIDATION_TIMEOUT_SECONDS = env_int("VALIDATION_TIMEOUT_SECONDS", 120)
VALIDATION_MEMORY_BYTES = env_int("VALIDATION_MEMORY_BYTES", 4 * 1024**3)

# Batch prediction jobs (registry/batch.py scores in a child process with these limits).
BATCH_MAX_INPUT_BYTES = env_int("BATCH_MAX_INPUT_BYTES", 1024**3)
BATCH_CHUNK_ROWS = env_int("BATCH_CHUNK_ROWS", 10_000)
BATCH_MAX_ERRORS = env_int("BATCH_MAX_ERRORS", 100)
BATCH_MAX_CELL_CHARS = env_int("BATCH_MAX_CELL_CHARS", 10_000)
BATCH_MEMORY_BYTES = env_int("BATCH_MEMORY_BYTES", 4 * 1024**3)
BATCH_TIMEOUT_SECONDS = env_int("BATCH_TIMEOUT_SECONDS", 6 * 3600)
# A running job whose progress has not moved for this long lost its worker (registry/tasks.py).
BATCH_STALE_AFTER = _timedelta(minutes=env_int("BATCH_STALE_AFTER_MINUTES", 10))
# Optimization (registry/optimize.py): "basic" or "extended" keep the graph portable.
OPTIMIZE_GRAPH_LEVEL = env_str("OPTIMIZE_GRAPH_LEVEL", "basic")
OPTIMIZE_TIMEOUT_SECONDS = env_int("OPTIMIZE_TIMEOUT_SECONDS", 600)
OPTIMIZE_MEMORY_BYTES = env_int("OPTIMIZE_MEMORY_BYTES", 4 * 1024**3)
OPTIMIZE_REFERENCE_ROWS = env_int("OPTIMIZE_REFERENCE_ROWS", 1_000)

# Local deployment target.
LOCAL_TARGET_PORT_RANGE = env_str("LOCAL_TARGET_PORT_RANGE", "18100-18999")
RUNTIME_DIR = Path(env_str("RUNTIME_DIR", str(VAR_DIR / "runtime"))).resolve()
# How long a new serving process may take to report ready before the release fails.
DEPLOYMENTS_READY_TIMEOUT_SECONDS = env_float("DEPLOYMENTS_READY_TIMEOUT_SECONDS", 60.0)
# In-flight requests get this long on an old version after traffic moves away from it.
DEPLOYMENTS_DRAIN_SECONDS = env_float("DEPLOYMENTS_DRAIN_SECONDS", 2.0)
# A reconcile holds its endpoint's lease this long; a dead worker's lease then expires.
DEPLOYMENTS_LEASE_SECONDS = env_float("DEPLOYMENTS_LEASE_SECONDS", 60.0)
# A running image build whose worker sent no heartbeat for this long is failed and replaced.
DEPLOYMENTS_BUILD_STALE_SECONDS = env_float("DEPLOYMENTS_BUILD_STALE_SECONDS", 60.0)
# The only folder whose files target settings may name (kubeconfigs, Docker TLS keys); see
# common/credentials.py. Environment variables they name must start with MODELDECK_TARGET_.
TARGET_CREDENTIALS_DIR = Path(
    env_str("TARGET_CREDENTIALS_DIR", str(VAR_DIR / "credentials"))
).resolve()
# Docker engines (docker_host values) that team admins may point targets at; none by default,
# so docker targets use the workers' own engine. Example: tcp://gpu-box.internal:2376
TARGET_DOCKER_HOSTS = env_list("TARGET_DOCKER_HOSTS", [])
# Whether kubernetes targets may use the workers' own in-cluster service account.
TARGET_ALLOW_IN_CLUSTER = env_bool("TARGET_ALLOW_IN_CLUSTER", False)
# Wheels that serving images install with networking off (deployments/targets/docker/README.md).
MODELDECK_WHEELHOUSE = Path(
    env_str("MODELDECK_WHEELHOUSE", str(BASE_DIR / "var" / "wheelhouse"))
).resolve()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# --- scaling and rollback (scale) ---
# After a release replaces versions, their servers keep running this long so that a rollback
# is a gateway route switch with no server start (like Argo Rollouts' scaleDownDelaySeconds);
# 0 stops them once traffic moved away.
DEPLOYMENTS_WARM_SECONDS = env_float("DEPLOYMENTS_WARM_SECONDS", 300.0)
# --- security: operator policy for targets ---------------------------------------------------
# Base images docker targets may build on (the FROM line) and OCI runtimes they may name; by
# default only the project's own base image and the engine's default runtime.
TARGET_BASE_IMAGES = env_list("TARGET_BASE_IMAGES", ["modeldeck/base:bookworm"])
TARGET_RUNTIMES = env_list("TARGET_RUNTIMES", [])
# Addresses other than loopback that docker targets may publish serving ports on (0.0.0.0
# publishes on every interface of the engine's host).
TARGET_PUBLISH_HOSTS = env_list("TARGET_PUBLISH_HOSTS", [])
# Whether hosts that targets name (access_host, prediction_log_url, registry) may resolve to
# private ranges; link-local and cloud metadata addresses are refused regardless.
TARGET_ALLOW_PRIVATE_ADDRESSES = env_bool("TARGET_ALLOW_PRIVATE_ADDRESSES", False)

# --- security: files the app creates are its own -------------------------------------------
# var/ holds the database, sessions, artifacts and the broker: only this user may enter it, and
# uploaded files and their folders are created private even when stored elsewhere.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if VAR_DIR.stat().st_uid == os.getuid() and VAR_DIR.stat().st_mode & 0o077:
    VAR_DIR.chmod(0o700)
# --- Sign-in: throttling and lockout (django-axes), single sign-on (OpenID Connect) ------------
# accounts/throttle.py and accounts/oidc.py; the README's "Sign-in" section explains each one.
import json as _json  # noqa: E402
import re as _re  # noqa: E402

INSTALLED_APPS += ["axes"]
# Last, so that it turns a lockout noticed anywhere in the request into the lockout page.
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
# Failures are counted per client address (accounts.actor.client_ip, which trusts
# X-Forwarded-For only for TRUSTED_PROXY_COUNT hops); reaching the limit locks the address out
# of password and API-token sign-in until the cool-off ends.
AXES_FAILURE_LIMIT = env_int("SIGN_IN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = _timedelta(minutes=env_int("SIGN_IN_LOCKOUT_MINUTES", 15))
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME.total_seconds() < 60:
    raise ImproperlyConfigured("SIGN_IN_FAILURE_LIMIT >= 1 and SIGN_IN_LOCKOUT_MINUTES >= 1")
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "accounts.actor.client_ip"
AXES_HANDLER = "accounts.throttle.AuditedAxesHandler"
AXES_LOCKOUT_CALLABLE = "accounts.throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Successful sign-ins are not logged by axes; failures are audit events.
AXES_DISABLE_ACCESS_LOG = True

# OpenID Connect: on when OIDC_RP_CLIENT_ID is set. Endpoints come from the provider's
# /.well-known/openid-configuration.
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID")
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET")
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT")
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT_SECONDS", 10.0)
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
# The claim (a string or a list of strings) whose values name teams and roles, and the operator's
# map from each value to "team:role" (or a list of them), e.g.
# {"ml-admins": "ml-platform:admin", "analysts": ["ml-platform:viewer", "vision:scientist"]}.
# Sign-in makes the user's memberships in the mapped teams match the claim; other teams are left
# as `manage.py addmember` set them.
OIDC_TEAM_ROLE_CLAIM = env_str("OIDC_TEAM_ROLE_CLAIM", "groups")
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"


def _team_role_map(raw: str) -> dict[str, list[tuple[str, str]]]:
    try:
        loaded = _json.loads(raw or "{}")
    except ValueError as error:
        raise ImproperlyConfigured(f"OIDC_TEAM_ROLE_MAP is not JSON: {error}") from None
    if not isinstance(loaded, dict):
        raise ImproperlyConfigured("OIDC_TEAM_ROLE_MAP must be a JSON object")
    parsed = {}
    for value, targets in loaded.items():
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ImproperlyConfigured(f"OIDC_TEAM_ROLE_MAP[{value!r}]: use 'team:role' strings")
        parsed[value] = []
        for target in targets:
            team, _, role = target.partition(":")
            if not _re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", team) or role not in {
                "viewer",
                "scientist",
                "deployer",
                "admin",
            }:
                raise ImproperlyConfigured(
                    f"OIDC_TEAM_ROLE_MAP[{value!r}]: {target!r} is not 'team:role' with a team "
                    "slug and a role of viewer, scientist, deployer or admin"
                )
            parsed[value].append((team, role))
    return parsed


OIDC_TEAM_ROLE_MAP = _team_role_map(env_str("OIDC_TEAM_ROLE_MAP", "{}"))
if OIDC_ENABLED:
    _missing = [
        name
        for name in (
            "OIDC_RP_CLIENT_SECRET",
            "OIDC_OP_ISSUER",
            "OIDC_OP_AUTHORIZATION_ENDPOINT",
            "OIDC_OP_TOKEN_ENDPOINT",
            "OIDC_OP_USER_ENDPOINT",
            "OIDC_OP_JWKS_ENDPOINT",
        )
        if not globals()[name]
    ]
    if _missing:
        raise ImproperlyConfigured(f"OIDC_RP_CLIENT_ID is set, so set {', '.join(_missing)} too")
# Off: the login page offers only single sign-on and no password is checked anywhere (the
# admin site included); API tokens keep working.
LOCAL_PASSWORDS_ENABLED = env_bool("LOCAL_PASSWORDS_ENABLED", True)
if not LOCAL_PASSWORDS_ENABLED and not OIDC_ENABLED:
    raise ImproperlyConfigured("LOCAL_PASSWORDS_ENABLED=false needs OIDC_RP_CLIENT_ID (SSO)")
AUTHENTICATION_BACKENDS = [
    # First: refuses every sign-in from a locked-out address before any credential is checked.
    "axes.backends.AxesStandaloneBackend",
    *(["accounts.oidc.SignInBackend"] if OIDC_ENABLED else []),
    *(["django.contrib.auth.backends.ModelBackend"] if LOCAL_PASSWORDS_ENABLED else []),
]
