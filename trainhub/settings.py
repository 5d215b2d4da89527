"""Django settings for TrainHub: every value comes from an environment variable with a bare-machine default."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url

from trainhub.datadir import private_dir, private_file, private_secret, redis_url_with_credentials
from trainhub.envvars import envbool, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
# Only its owner may enter: it holds the secret key, the Redis password and the SQLite database.
DATA_DIR = private_dir(Path(envstr("TRAINHUB_DATA_DIR", str(BASE_DIR / "var"))).resolve())
# Set by the local runner (runs/local_runner.py), which loads the node package's code on a member's
# machine but holds no site's database, Redis or secret key: none is made for it, and it has none to
# use (Django's dummy database refuses every query, an empty SECRET_KEY every signature).
LOCAL_RUNNER = envbool("TRAINHUB_LOCAL_RUNNER", "False")

SECRET_KEY = "" if LOCAL_RUNNER else envstr("DJANGO_SECRET_KEY", "") or private_secret(DATA_DIR / "secret_key")
DEBUG = envbool("DEBUG", "False")

TRAINHUB_HOST = envstr("TRAINHUB_HOST", "127.0.0.1")
TRAINHUB_PORT = envint("TRAINHUB_PORT", 8000)
TRAINHUB_PUBLIC_URL = envstr(
    "TRAINHUB_PUBLIC_URL",
    f"http://{'localhost' if TRAINHUB_HOST in ('127.0.0.1', '0.0.0.0') else TRAINHUB_HOST}:{TRAINHUB_PORT}",
)
# What `Workspace.location` answers (the SDK's cloud counterpart names an Azure region there).
TRAINHUB_REGION = envstr("TRAINHUB_REGION", "local")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", f"localhost,127.0.0.1,[::1],{TRAINHUB_HOST}")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "") or []

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "ninja",  # serves Swagger UI's assets itself (its default loads them from a CDN)
    "trainhub.ops",
    "trainhub.workspaces",
    "trainhub.environments",
    "trainhub.compute",
    "runs",
    "metrics",
    "registry",
    "endpoints",
    "datastores",
    "trainhub.idempotency",
    "mlflow_compat",
    "sweeps",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "trainhub.urls"
ASGI_APPLICATION = "trainhub.asgi.application"

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

DATABASES: dict[str, Any] = {}
if not LOCAL_RUNNER:
    # A connection is kept and checked before reuse rather than opened anew: by the web process
    # from one request to the next (it keeps its request threads: trainhub/ops/request_threads.py),
    # by the controller from one round to the next.
    DATABASES["default"] = dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"), conn_max_age=600, conn_health_checks=True
    )
if DATABASES and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Made 0600 before SQLite opens it: its -wal and -shm files take the database file's mode.
    if DATABASES["default"]["NAME"] != ":memory:":
        private_file(Path(DATABASES["default"]["NAME"]))
    # Nodes, workers and the web server write to one file: WAL lets readers go on while one
    # writes, and IMMEDIATE transactions take the write lock up front instead of failing midway.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
if not LOCAL_RUNNER:
    STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

STORAGES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "files")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Sign-in throttling (django-axes), for the sign-in page and the admin's alike: after
# TRAINHUB_SIGNIN_FAILURE_LIMIT failures for one username, or from one client address, signing in
# there is refused (the right password too) for TRAINHUB_SIGNIN_LOCKOUT_MINUTES; each attempt
# meanwhile starts the wait again. The client address is the one daphne gives (see serve.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("TRAINHUB_SIGNIN_FAILURE_LIMIT", 10)
TRAINHUB_SIGNIN_LOCKOUT_MINUTES = envint("TRAINHUB_SIGNIN_LOCKOUT_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=TRAINHUB_SIGNIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "trainhub.workspaces.signin.client_address"
AXES_LOCKOUT_CALLABLE = "trainhub.workspaces.signin.locked_out"
AXES_VERBOSE = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "workspaces:list"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "False")
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "False")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Without a password in REDIS_URL, the site's own credential (user `trainhub`, its password made once
# in <data dir>/redis-password) is used: the Redis `make run` starts refuses every other client. The
# local runner has none: its executor's client (one host, no MPI daemons elsewhere) never connects.
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
if not LOCAL_RUNNER:
    REDIS_URL = redis_url_with_credentials(REDIS_URL, DATA_DIR)
# DEBUG's error pages and error mails show the settings: not these two.
DEFAULT_EXCEPTION_REPORTER_FILTER = "trainhub.ops.error_reports.SettingsFilter"

# No channel layer: live events reach sockets through trainhub/live/ (one Redis subscription per
# followed run per web process), not one Redis list per socket.

RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

if envbool("TRAINHUB_TEST_SESSION", "False"):
    # The suite creates thousands of users; PBKDF2's deliberate slowness would dominate it.
    PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]

# Runs and nodes.
TRAINHUB_NODE_WORK_DIR = envstr("TRAINHUB_NODE_WORK_DIR", str(DATA_DIR / "node-work"))
TRAINHUB_NODE_ADDRESS = envstr("TRAINHUB_NODE_ADDRESS", "")
# Whether a node runs Docker environments: "auto" (when a Docker engine answers as it starts), true, false.
TRAINHUB_NODE_DOCKER = envstr("TRAINHUB_NODE_DOCKER", "auto")
# Whether a node runs member code in its box (trainhub/sandbox.py): "auto" and true (a node where the
# box does not work refuses to start), false (runs unboxed, said loudly in the node's and runs' logs).
TRAINHUB_NODE_SANDBOX = envstr("TRAINHUB_NODE_SANDBOX", "auto")
# Whether the controller keeps one standby node process per local cluster already started (Django
# loaded, Redis connected) but not registered, so that a node it adds is ready within a fraction of a
# second instead of the few seconds a new process takes.
TRAINHUB_LOCAL_STANDBY = envbool("TRAINHUB_LOCAL_STANDBY", "True")
# How often a node samples each rank's CPU and memory into the run's system/ metrics (0: never).
TRAINHUB_SYSTEM_METRICS_SECONDS = envint("TRAINHUB_SYSTEM_METRICS_SECONDS", 5)
# The first uid of the boxes' unprivileged users (a node running as root); each run, build and export
# gets its own above it (trainhub/sandbox.py: box_uid).
TRAINHUB_RUN_UID_BASE = envint("TRAINHUB_RUN_UID_BASE", 200_000)
# The node's own variables a run gets (names; NAME* for a prefix): nothing else of the node's reaches it.
TRAINHUB_NODE_PASS_ENV = [
    name.strip() for name in envstr("TRAINHUB_NODE_PASS_ENV", "LANG,LANGUAGE,LC_*,TZ").split(",") if name.strip()
]
# The URL a node gives its runs to reach the server (metrics, model registration).
TRAINHUB_NODE_SERVER_URL = envstr("TRAINHUB_NODE_SERVER_URL", f"http://127.0.0.1:{TRAINHUB_PORT}")
# Slurm clusters (a compute target that is a Slurm partition): the slurm.conf the server's sbatch,
# squeue, scancel and sinfo read (default: Slurm's own), and the folder holding them (default: PATH).
TRAINHUB_SLURM_CONF = envstr("TRAINHUB_SLURM_CONF", "")
TRAINHUB_SLURM_BIN_DIR = envstr("TRAINHUB_SLURM_BIN_DIR", "")
# On the Slurm hosts: the Python of a TrainHub checkout there and that checkout, and a file of
# NAME=value lines (mode 0600) with the node settings (DATABASE_URL, REDIS_URL, TRAINHUB_DATA_DIR, …):
# a job carries none of the server's variables.
TRAINHUB_SLURM_NODE_PYTHON = envstr("TRAINHUB_SLURM_NODE_PYTHON", sys.executable)
TRAINHUB_SLURM_NODE_DIR = envstr("TRAINHUB_SLURM_NODE_DIR", str(BASE_DIR))
TRAINHUB_SLURM_NODE_ENV_FILE = envstr("TRAINHUB_SLURM_NODE_ENV_FILE", "")
# Where each job's own output (TrainHub's task, not the run's ranks) goes, on the Slurm hosts.
TRAINHUB_SLURM_JOB_LOG_DIR = envstr("TRAINHUB_SLURM_JOB_LOG_DIR", str(DATA_DIR / "logs" / "slurm"))
TRAINHUB_SNAPSHOT_MAX_BYTES = envint("TRAINHUB_SNAPSHOT_MAX_BYTES", 300 * 1024 * 1024)
TRAINHUB_SNAPSHOT_MAX_FILES = envint("TRAINHUB_SNAPSHOT_MAX_FILES", 2000)
TRAINHUB_SNAPSHOT_MAX_EXPANDED_BYTES = envint("TRAINHUB_SNAPSHOT_MAX_EXPANDED_BYTES", 1024 * 1024 * 1024)

# Model registry: the largest file a local registration may upload.
TRAINHUB_MODEL_MAX_BYTES = envint("TRAINHUB_MODEL_MAX_BYTES", 20 * 1024 * 1024 * 1024)

# Uploads (model files, snapshots, datastore files) arrive in resumable chunks appended to one
# staging file (same file system as the storage, so finishing one is a rename); unfinished ones
# are deleted after TRAINHUB_UPLOAD_STALE_SECONDS. No request body may pass TRAINHUB_REQUEST_MAX_BYTES.
# A chunk is one request (about 4 to 6 ms of the web process's CPU, whatever its size): 32 MiB
# chunks take 32 requests per GiB, held in memory while they arrive (the SDK has 3 on their way at
# once). 64 MiB chunks took 0.1 to 0.2 s less of the web process's CPU per GiB, but a server's
# first upload makes buffers twice as large, which cost more than that on these machines.
TRAINHUB_UPLOAD_DIR = envstr("TRAINHUB_UPLOAD_DIR", str(DATA_DIR / "uploads"))
TRAINHUB_UPLOAD_CHUNK_BYTES = envint("TRAINHUB_UPLOAD_CHUNK_BYTES", 32 * 1024 * 1024)
TRAINHUB_UPLOAD_STALE_SECONDS = envint("TRAINHUB_UPLOAD_STALE_SECONDS", 24 * 3600)
TRAINHUB_REQUEST_MAX_BYTES = envint("TRAINHUB_REQUEST_MAX_BYTES", max(64 * 1024 * 1024, TRAINHUB_UPLOAD_CHUNK_BYTES))

# How long the answer to a POST sent with an Idempotency-Key (metric batches, model registrations)
# is kept: a retry of it within that time gets the same answer and stores nothing twice.
TRAINHUB_IDEMPOTENCY_SECONDS = envint("TRAINHUB_IDEMPOTENCY_SECONDS", 24 * 3600)
# A chunk stays in memory in Django's request spool: the upload's staging file is its one copy.
FILE_UPLOAD_MAX_MEMORY_SIZE = TRAINHUB_UPLOAD_CHUNK_BYTES

# MLflow inside runs (mlflow_compat/): an artifact is one PUT, so one file is at most a request body;
# a run holds at most TRAINHUB_MLFLOW_MAX_FILES_PER_RUN files, and TRAINHUB_MLFLOW_MAX_RUN_BYTES bytes
# of files, before MLflow's uploads are refused.
TRAINHUB_MLFLOW_MAX_ARTIFACT_BYTES = min(
    envint("TRAINHUB_MLFLOW_MAX_ARTIFACT_BYTES", TRAINHUB_REQUEST_MAX_BYTES), TRAINHUB_REQUEST_MAX_BYTES
)
TRAINHUB_MLFLOW_MAX_FILES_PER_RUN = envint("TRAINHUB_MLFLOW_MAX_FILES_PER_RUN", 10_000)
TRAINHUB_MLFLOW_MAX_RUN_BYTES = envint("TRAINHUB_MLFLOW_MAX_RUN_BYTES", 10 * 1024**3)

# Datastores: the largest file one upload may hold, and where each node caches the data of its runs'
# inputs (under the node work directory, which a run's container sees as well), evicted by
# least-recent use past its size.
TRAINHUB_DATASTORE_MAX_FILE_BYTES = envint("TRAINHUB_DATASTORE_MAX_FILE_BYTES", 50 * 1024**3)
TRAINHUB_DATA_CACHE_DIR = envstr("TRAINHUB_DATA_CACHE_DIR", str(Path(TRAINHUB_NODE_WORK_DIR) / "_data-cache"))
TRAINHUB_DATA_CACHE_MAX_BYTES = envint("TRAINHUB_DATA_CACHE_MAX_BYTES", 50 * 1024**3)

# Environments: each node's cache of built virtualenvs, evicted by least-recent use past the size.
TRAINHUB_ENV_CACHE_DIR = envstr("TRAINHUB_ENV_CACHE_DIR", str(DATA_DIR / "envs"))
TRAINHUB_ENV_CACHE_MAX_BYTES = envint("TRAINHUB_ENV_CACHE_MAX_BYTES", 50 * 1024**3)
# Whether an environment's pip list may hold direct URL requirements (name @ https://…, git+…):
# off, so that packages come from the machine's pip indexes only. Local paths never may.
TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS = envbool("TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS", "False")
# Docker environments: after each image build, a node removes this site's images used last longer
# than these days ago, beyond the most recently used ones it always keeps.
TRAINHUB_IMAGE_KEEP_DAYS = envint("TRAINHUB_IMAGE_KEEP_DAYS", 14)
TRAINHUB_IMAGE_KEEP_COUNT = envint("TRAINHUB_IMAGE_KEEP_COUNT", 5)

# HTTPS, for a deployment behind a TLS proxy (with TRAINHUB_BEHIND_PROXY, daphne's --proxy-headers
# reads X-Forwarded-Proto and X-Forwarded-For). Off by default: `make run` serves plain HTTP on localhost.
TRAINHUB_BEHIND_PROXY = envbool("TRAINHUB_BEHIND_PROXY", "False")
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "False")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "False")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")

# Endpoints: the largest request body the scoring proxy passes on, and how long it waits for a
# replica's answer.
TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES = envint("TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES", 10 * 1024 * 1024)
TRAINHUB_ENDPOINT_TIMEOUT_SECONDS = envint("TRAINHUB_ENDPOINT_TIMEOUT_SECONDS", 60)
