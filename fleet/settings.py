"""Django settings, read from the environment (see the README's table).

Nothing set means the *embedded default*: SQLite, a local-memory cache, Channels' in-memory layer
and Celery tasks run in-process, so a fresh machine runs the whole product with no services.
``DATABASE_URL`` (MySQL/MariaDB) and ``REDIS_URL`` switch to the production services.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from fleet.env import env, secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("FLEET_VAR_DIR", default=str(BASE_DIR / "var")))

DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not DATABASE_URL and not REDIS_URL
# Worker threads of the embedded default's one server process (fleet/embedded_asgi.py): requests
# that wait (the synchronous live-query API, slow clients' bodies) each hold one.
EMBEDDED_SERVER_THREADS = env.int("FLEET_SERVER_THREADS", default=16)
# Agent requests get threads of their own (a core's worth of Python needs few), and one that waited
# longer than FLEET_SHED_AFTER seconds for them is answered 503 unrun (fleet/wsgi_bridge.py).
EMBEDDED_AGENT_THREADS = env.int("FLEET_AGENT_THREADS", default=4)
# osquery's requests run on the event loop's thread itself, without a thread handoff
# (fleet/embedded_asgi.py, inline_rule; docs/architecture.md, Serving).
EMBEDDED_INLINE_AGENT_REQUESTS = env.bool("FLEET_INLINE_AGENT_REQUESTS", default=True)
EMBEDDED_SHED_AFTER = env.float("FLEET_SHED_AFTER", default=8.0)
# Production web processes (fleet.wsgi under granian): at most this many agent requests run Django
# at once per process, and one that waited FLEET_SHED_AFTER seconds for a slot is answered 503 unrun
# (fleet/agent_admission.py). 0: no limit.
AGENT_CONCURRENCY = env.int("FLEET_AGENT_CONCURRENCY", default=2)
# The request threads of each production web worker (fleet.web_server sets it for its workers;
# 0: not served by it). With no more threads than AGENT_CONCURRENCY the gate is left out.
WEB_THREADS = env.int("FLEET_WEB_THREADS", default=0)
# REST calls that wait for agents (a synchronous live query or script run) one process holds at
# once; a web process holds one less than its threads, the embedded server half of its threads
# (fleet/held_requests.py). In production those calls belong to the ws role.
HELD_REQUESTS = env.int("FLEET_HELD_REQUESTS", default=32)
AGENT_SHED_AFTER = EMBEDDED_SHED_AFTER

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# scripts/bench.py only: serves the floor view (/bench/floor) and tells agents whether their node
# key was a cache hit (X-Fleet-Node-Key-Cache). Never set in production.
BENCH_MODE = env.bool("FLEET_BENCH", default=False)


def _secret_key() -> str:
    """The production key must be given; the embedded default keeps a generated one on disk."""
    key = secret("DJANGO_SECRET_KEY")
    if key:
        return key
    if DATABASE_URL:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set with DATABASE_URL"
        )
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Seals secrets kept in the database (fleet/sealing.py); derived from SECRET_KEY when unset.
SERVER_PRIVATE_KEY = secret("FLEET_SERVER_PRIVATE_KEY") or ""
# Loopback only unless told otherwise: production names its public host(s); `make run` adds this
# machine's names and addresses itself when it listens beyond loopback (BIND).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "fleet.apps.FleetAdminConfig",  # django.contrib.admin with the Fleet site (fleet/console.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_prometheus",
    "rest_framework",
    "knox",  # hashed, expiring REST tokens (replaces rest_framework.authtoken)
    "axes",  # failed-login throttling for the console and the token endpoint
    "fleet",  # the project's system checks (fleet/checks.py)
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "hosts",
    "software",
    "queries",
    "packs",
    "campaigns",
    "agentapi",
    "activities",  # the audit trail (docs/activities.md)
    "hostscripts",  # script library, per-host run queue, lock/unlock/wipe (docs/scripts.md)
    "devices",  # Fleet Desktop's device API and the My device page (docs/my-device.md)
    "updates",  # the TUF repository for agent updates (docs/agent-updates.md)
    "mdm",  # Apple MDM: SCEP, check-in and commands, APNs, configuration profiles (docs/apple-mdm.md)
    "users",  # console users, roles, invitations, password rules, `manage.py user` (docs/users.md)
    "taskserver",  # tasks on task agents that stay connected, agent keys, metric destinations (docs/tasks.md)
    "usage",  # anonymous usage statistics, opt-out (docs/usage-statistics.md)
]

MIDDLEWARE = [
    # Agent requests by endpoint and status, check-in latency (docs/metrics.md); outermost, cheap.
    "fleet.request_metrics.AgentRequestMetricsMiddleware",
    "agentapi.middleware.AgentJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # osquery and orbit endpoints are served from here: what follows is for people (and
    # django-prometheus' per-view metrics); agent requests are counted above.
    "agentapi.middleware.AgentFastPathMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who acts and from which surface, for the audit trail (after authentication).
    "activities.middleware.ActivityContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Turns a django-axes lockout into a 429 (fleet.api_auth.lockout_response); after auth, last.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "fleet.urls"
WSGI_APPLICATION = "fleet.wsgi.application"
ASGI_APPLICATION = "fleet.asgi.application"

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

# --- Database -------------------------------------------------------------------------------
if DATABASE_URL:
    _db = env.db_url_config(DATABASE_URL)
    if "mysql" in _db["ENGINE"]:
        # Timeouts, so an unresponsive server fails a request instead of hanging every worker.
        # The client library retries a timed-out read, so a read can take up to 3x the timeout:
        # the default keeps a check-in under osquery's 16 s limit.
        _db.setdefault("OPTIONS", {}).update(
            {
                "charset": "utf8mb4",
                "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
                "connect_timeout": env.int("DATABASE_CONNECT_TIMEOUT", default=3),
                "read_timeout": env.int("DATABASE_READ_TIMEOUT", default=4),
                "write_timeout": env.int("DATABASE_WRITE_TIMEOUT", default=4),
            }
        )
        _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    # Persistent connections help the WSGI web server (+30 % rps); ASGI processes must use 0 (they leak).
    _db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
else:
    _db = {
        "ENGINE": "fleet.sqlite_backend",  # Django's, with writers queued in-process (its docstring)
        "NAME": env.str("SQLITE_PATH", default=str(VAR_DIR / "db.sqlite3")),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not Django's default in-memory test database: live-server tests then give each
        # server thread its own connection, as in production, instead of one shared connection
        # that concurrent agents trip over ("cannot start a transaction within a transaction").
        "TEST": {"NAME": env.str("SQLITE_TEST_PATH", default=str(VAR_DIR / "test_db.sqlite3"))},
        # The embedded server runs requests on a fixed pool of threads (fleet/wsgi_bridge.py):
        # each keeps its connection instead of opening one (and setting its pragmas) per request.
        "CONN_MAX_AGE": env.int("DATABASE_CONN_MAX_AGE", default=60),
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channel layer, Celery --------------------------------------------------------------
# Redis timeouts (seconds). The cache answers "miss" at once while Redis is down (fleet/cache.py),
# so its calls may fail fast; the channel layer's socket timeout must outlast channels-redis'
# 5 s blocking read, or every idle WebSocket is closed after 5 s (redis-py 6+ defaults to 5 s).
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=0.5)
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=0.5)
REDIS_RETRY_SECONDS = env.float("REDIS_RETRY_SECONDS", default=10.0)
CHANNEL_LAYER_SOCKET_TIMEOUT = 15.0


def redis_channel_layer(url: str) -> dict:
    """The channels-redis layer for ``url`` (also used by the tests that hold sockets open)."""
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": url,
                    "socket_connect_timeout": max(REDIS_CONNECT_TIMEOUT, 2.0),
                    "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT,
                }
            ],
            "prefix": "fleet:ch",
            "capacity": 2000,
            "expiry": 30,
        },
    }


if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "fleet.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "fleet",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "RETRY_SECONDS": REDIS_RETRY_SECONDS,
            },
        }
    }
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 200_000},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # Room for a burst of task changes in a process's hub channel (taskserver/hub.py);
            # the in-memory layer takes no per-channel capacities (channels 4 reads them raw).
            "CONFIG": {"capacity": 5000},
        }
    }

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
# Live-query upkeep (campaigns/tasks.py): expire + sweep the store often, delete old results hourly.
# The embedded default has no beat: the server runs the same jobs itself, at most this often.
CAMPAIGN_UPKEEP_INTERVAL = env.float("LIVE_QUERY_UPKEEP_INTERVAL", default=60.0)
CAMPAIGN_RETENTION_INTERVAL = env.float("LIVE_QUERY_RETENTION_INTERVAL", default=3600.0)
SOFTWARE_COUNTS_INTERVAL = env.float("SOFTWARE_COUNTS_INTERVAL", default=300.0)
CELERY_BEAT_SCHEDULE: dict = {
    "campaigns-expire-and-sweep": {
        "task": "campaigns.expire_and_sweep",
        "schedule": CAMPAIGN_UPKEEP_INTERVAL,
        "options": {"expires": CAMPAIGN_UPKEEP_INTERVAL},  # a backlog of stale runs is dropped
    },
    "campaigns-delete-expired-results": {
        "task": "campaigns.delete_expired_results",
        "schedule": CAMPAIGN_RETENTION_INTERVAL,
        "options": {"expires": CAMPAIGN_RETENTION_INTERVAL},
    },
    # Software host counts (docs/software.md): a pass runs only when something changed.
    "software-recount-host-counts": {
        "task": "software.recount_host_counts",
        "schedule": SOFTWARE_COUNTS_INTERVAL,
        "options": {"expires": SOFTWARE_COUNTS_INTERVAL},
    },
}

# --- Auth, i18n, static -------------------------------------------------------------------------
# Fleet's rule: 12 characters or more with a number and a symbol; Django's checks besides. They
# apply wherever a password is chosen (console, invitation page, `manage.py user`, the console's
# own "Change password"), not to create_user() itself (users/services.py validates first).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "users.validators.FleetPasswordValidator"},
]
LOGIN_URL = "admin:login"
# Failed logins (console and POST /api/v1/auth/token/) are counted by django-axes per *pair* of
# username and client address: AXES_FAILURE_LIMIT failures lock that pair out for
# AXES_COOLOFF_TIME, so a password guesser is stopped while the real user, logging in from
# elsewhere, is not locked out by them. Failures older than the cool-off are forgotten, and a
# success clears them. The token endpoint also has a per-address rate (REST API section below).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Passwords as Django checks them; permissions from Fleet roles only (hosts/console_permissions.py).
    "hosts.console_permissions.FleetRoleBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout are refused without being counted, so a lockout ends on time.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "fleet.api_auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "fleet.api_auth.client_address"
# Behind a load balancer the client's address is the last X-Forwarded-For entry (the one it added).
CLIENT_ADDRESS_FROM_X_FORWARDED_FOR = env.bool("DJANGO_BEHIND_PROXY", default=False)
AXES_VERBOSE = False
# REST tokens (django-rest-knox): only a SHA-512 digest is stored, each expires after
# API_TOKEN_TTL_HOURS; logging in again gives a new one, logout revokes it.
API_TOKEN_TTL = timedelta(hours=env.float("API_TOKEN_TTL_HOURS", default=24 * 7))
API_TOKEN_LIMIT_PER_USER = 100  # live tokens a user keeps; a new login revokes the oldest beyond
REST_KNOX = {
    "TOKEN_TTL": API_TOKEN_TTL,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
# --- Users: invitations, links, email (docs/users.md) ----------------------------------------------
# Invitations expire after INVITE_TTL_DAYS (Fleet: 5 days); set-password links after
# PASSWORD_RESET_TIMEOUT (Django's three days). Both pages allow LINK_PAGE_RATE requests per address.
INVITE_TTL = timedelta(days=env.float("INVITE_TTL_DAYS", default=5))
LINK_PAGE_RATE = env.str("LINK_PAGE_RATE", default="20/min")
# Where people reach the console: links printed by `manage.py user` (the console uses the address
# the browser used).
FLEET_SERVER_URL = env.str("FLEET_SERVER_URL", default="http://127.0.0.1:8000")
# Invitations are emailed only when EMAIL_HOST is set; otherwise the console shows the link to copy.
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=EMAIL_PORT == 587)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=EMAIL_PORT == 465)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="fleet@localhost")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Security (production values: docs/deployment.md) -------------------------------------------
# Production (DATABASE_URL or REDIS_URL set) is HTTPS-only by default: redirect, HSTS and secure
# cookies, so `check --deploy` passes with only the required variables. The embedded default
# serves plain HTTP on loopback and keeps them off. Each can still be set either way.
_HTTPS_DEFAULT = not EMBEDDED
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("DJANGO_BEHIND_PROXY", default=False) else None
)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_HTTPS_DEFAULT)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000 if _HTTPS_DEFAULT else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE_HSTS_SECONDS > 0
)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=_HTTPS_DEFAULT)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# HSTS preload is a deliberate submission to the browsers' list (hstspreload.org), not a default:
# its absence is not a deployment defect. DJANGO_SECURE_HSTS_PRELOAD=1 opts in.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Content-Security-Policy (django-csp): scripts and everything else from this server only; inline
# styles stay allowed for the admin's templates (inline scripts do not).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "fleet.api_errors.exception_handler",
}
# Login attempts per client address on POST /api/v1/auth/token/ (fleet.api_auth.LoginRateThrottle).
API_LOGIN_RATE = env.str("API_LOGIN_RATE", default="30/min")
SPECTACULAR_SETTINGS = {
    "TITLE": "Fleet (Django) REST API",
    "DESCRIPTION": "Hosts, teams and enroll secrets of a device fleet managed through osquery.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs pages are for signed-in users and token holders, like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's files from the drf-spectacular-sidecar package, not a CDN: the docs page works
    # offline and within the Content-Security-Policy (everything from this server).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- osquery agent API --------------------------------------------------------------------------
OSQUERY = {
    # provided | uuid | instance | hostname (Fleet's osquery.host_identifier)
    "HOST_IDENTIFIER": env.str("OSQUERY_HOST_IDENTIFIER", default="provided"),
    "DETAIL_UPDATE_INTERVAL": env.int("OSQUERY_DETAIL_UPDATE_INTERVAL", default=3600),
    "LABEL_UPDATE_INTERVAL": env.int("OSQUERY_LABEL_UPDATE_INTERVAL", default=3600),
    "MAX_JITTER_PERCENT": env.int("OSQUERY_MAX_JITTER_PERCENT", default=10),
    "ENROLL_COOLDOWN": env.int("OSQUERY_ENROLL_COOLDOWN", default=0),
    # A host's cached check-in state lives this long, renewed while the host is active and dropped
    # whenever an input changes (hosts/nodekeys.py); a short lifetime only adds misses.
    "NODE_KEY_CACHE_TTL": env.int("OSQUERY_NODE_KEY_CACHE_TTL", default=24 * 3600),
    # Per-process caches (the embedded default) learn of other processes' changes through this file.
    "NODE_KEY_CHANGE_STAMP_FILE": env.str(
        "OSQUERY_NODE_KEY_CHANGE_STAMP_FILE", default=str(VAR_DIR / "run" / "nodekeys.stamp")
    ),
    "SEEN_FLUSH_INTERVAL": env.float("OSQUERY_SEEN_FLUSH_INTERVAL", default=5.0),
    "MAX_ENROLL_SIZE": env.int("OSQUERY_MAX_ENROLL_SIZE", default=1 << 20),
    "MAX_REQUEST_SIZE": env.int("OSQUERY_MAX_REQUEST_SIZE", default=1 << 20),
    "MAX_WRITE_SIZE": env.int("OSQUERY_MAX_DISTRIBUTED_WRITE_SIZE", default=5 << 20),
    "MAX_LOG_SIZE": env.int("OSQUERY_MAX_LOG_WRITE_SIZE", default=10 << 20),
    # Objects and arrays one agent body may hold (bounds the memory its parse can take).
    "MAX_JSON_CONTAINERS": env.int("OSQUERY_MAX_JSON_CONTAINERS", default=250_000),
    "RESULT_LOG_FILE": env.str(
        "OSQUERY_RESULT_LOG_FILE", default=str(VAR_DIR / "logs" / "osquery_result.log")
    ),
    "STATUS_LOG_FILE": env.str(
        "OSQUERY_STATUS_LOG_FILE", default=str(VAR_DIR / "logs" / "osquery_status.log")
    ),
}
MAX_ENROLL_SECRETS_PER_SCOPE = 50

# --- osquery log destinations and query reports (docs/logging.md) ------------------------------
# Destinations per stream, comma-separated: filesystem, stdout, webhook, nats. The filesystem
# paths are OSQUERY_RESULT_LOG_FILE / OSQUERY_STATUS_LOG_FILE above.
OSQUERY_LOGGING = {
    "RESULT_PLUGINS": env.list("OSQUERY_RESULT_LOG_PLUGIN", default=["filesystem"]),
    "STATUS_PLUGINS": env.list("OSQUERY_STATUS_LOG_PLUGIN", default=["filesystem"]),
    # One log request spends at most this long on all its destinations (osquery gives up at 16 s).
    "DELIVERY_BUDGET": env.float("OSQUERY_LOG_DELIVERY_BUDGET", default=8.0),
    # After a failure a network destination fails fast for this long (per process), then tries again.
    "CIRCUIT_OPEN_SECONDS": env.float("OSQUERY_LOG_CIRCUIT_OPEN_SECONDS", default=10.0),
    "FILESYSTEM_MAX_BYTES": env.int("OSQUERY_FILESYSTEM_MAX_SIZE_MB", default=500) * 1024 * 1024,
    "FILESYSTEM_MAX_BACKUPS": env.int("OSQUERY_FILESYSTEM_MAX_BACKUPS", default=3),
    "WEBHOOK_RESULT_URL": env.str("OSQUERY_WEBHOOK_RESULT_URL", default=""),
    "WEBHOOK_STATUS_URL": env.str("OSQUERY_WEBHOOK_STATUS_URL", default=""),
    "WEBHOOK_TOKEN": secret("OSQUERY_WEBHOOK_TOKEN") or "",
    "WEBHOOK_TIMEOUT": env.float("OSQUERY_WEBHOOK_TIMEOUT", default=3.0),
    "WEBHOOK_RETRY_BUDGET": env.float("OSQUERY_WEBHOOK_RETRY_BUDGET", default=6.0),
    "WEBHOOK_BATCH_LINES": env.int("OSQUERY_WEBHOOK_BATCH_LINES", default=500),
    "NATS_SERVERS": env.list("OSQUERY_NATS_SERVER", default=["nats://127.0.0.1:4222"]),
    "NATS_RESULT_SUBJECT": env.str("OSQUERY_NATS_RESULT_SUBJECT", default="osquery.result"),
    "NATS_STATUS_SUBJECT": env.str("OSQUERY_NATS_STATUS_SUBJECT", default="osquery.status"),
    "NATS_TIMEOUT": env.float("OSQUERY_NATS_TIMEOUT", default=3.0),
    "NATS_JETSTREAM": env.bool("OSQUERY_NATS_JETSTREAM", default=False),
    "NATS_CREDS_FILE": env.str("OSQUERY_NATS_CREDS_FILE", default=""),
    "NATS_TOKEN": secret("OSQUERY_NATS_TOKEN") or "",
    # Rows kept per query report, all hosts together (Fleet's query_report_cap, there 1,000).
    "QUERY_REPORT_CAP": env.int("QUERY_REPORT_CAP", default=10_000),
    "QUERY_REPORTS_DISABLED": env.bool("QUERY_REPORTS_DISABLED", default=False),
}

# --- Audit trail forwarding (docs/activities.md) -----------------------------------------------
# Fleet's activity audit log: every activity as a JSON line on these destinations, off by default.
# Credentials, timeouts, rotation and circuit breakers are the osquery logs' (OSQUERY_LOGGING).
ACTIVITY_AUDIT_LOG = {
    "ENABLED": env.bool("ACTIVITY_ENABLE_AUDIT_LOG", default=False),
    "PLUGINS": env.list("ACTIVITY_AUDIT_LOG_PLUGIN", default=["filesystem"]),
    "FILE": env.str("ACTIVITY_AUDIT_LOG_FILE", default=str(VAR_DIR / "logs" / "audit.log")),
    "WEBHOOK_URL": env.str("ACTIVITY_WEBHOOK_AUDIT_URL", default=""),
    "NATS_SUBJECT": env.str("ACTIVITY_NATS_AUDIT_SUBJECT", default="fleet.audit"),
    # After a commit, a request spends at most this long delivering its lines; the rest wait.
    "DELIVERY_BUDGET": env.float("ACTIVITY_AUDIT_DELIVERY_BUDGET", default=2.0),
}
if ACTIVITY_AUDIT_LOG["ENABLED"]:  # lines a destination outage left behind, every minute
    CELERY_BEAT_SCHEDULE["activities-deliver-audit-backlog"] = {
        "task": "activities.deliver_audit_backlog",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    }

# --- Live queries ----------------------------------------------------------------------------
LIVE_QUERY = {
    # A campaign still running after this long is expired (Fleet: 24 h).
    "MAX_DURATION": env.int("LIVE_QUERY_MAX_DURATION", default=24 * 3600),
    # Results are kept this many days after a campaign starts, then deleted.
    "RETENTION_DAYS": env.int("LIVE_QUERY_RETENTION_DAYS", default=30),
    # Rows kept per campaign, all hosts together; beyond it a host's answer is counted, rows dropped.
    "MAX_ROWS": env.int("LIVE_QUERY_MAX_ROWS", default=100_000),
    # How long a web process trusts its copy of the list of active campaigns (Fleet: 1 s).
    "ACTIVE_CACHE_SECONDS": env.float("LIVE_QUERY_ACTIVE_CACHE_SECONDS", default=1.0),
    # The synchronous REST form waits at most this long (Fleet's FLEET_LIVE_QUERY_REST_PERIOD).
    "REST_PERIOD": env.float("LIVE_QUERY_REST_PERIOD", default=25.0),
    "STORE_TTL": env.int("LIVE_QUERY_STORE_TTL", default=7 * 24 * 3600),
    # Live queries one web process hands out per second at most (0: no limit); campaigns/handout.py.
    "HANDOUT_RATE": env.float("LIVE_QUERY_HANDOUT_RATE", default=200.0),
}

# --- Scripts (docs/scripts.md) -----------------------------------------------------------------
SCRIPTS = {
    # The synchronous REST form (POST /api/v1/scripts/run/sync/) waits at most this long.
    "SYNC_MAX_WAIT": env.float("SCRIPTS_SYNC_MAX_WAIT", default=300.0),
    "SYNC_POLL_INTERVAL": env.float("SCRIPTS_SYNC_POLL_INTERVAL", default=0.5),
    # Hosts one request may target (a team, labels, a list of hosts).
    "MAX_HOSTS_PER_RUN": env.int("SCRIPTS_MAX_HOSTS_PER_RUN", default=10_000),
}

# --- Metrics and logging ---------------------------------------------------------------------
METRICS_TOKEN = secret("METRICS_TOKEN") or ""
# /metrics' database gauges (hosts by status, script runs...) are computed at most this often, kept
# in the shared cache: each is a GROUP BY over its whole table (docs/metrics.md).
METRICS_STATE_CACHE_SECONDS = env.float("METRICS_STATE_CACHE_SECONDS", default=30.0)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "fleet.logformat.SingleLineFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "filters": {
        "agent_client_errors": {"()": "agentapi.errorlog.DropAgentClientErrors"},
        "rate_limit": {"()": "fleet.logformat.RateLimitFilter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["rate_limit"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # One line per APNs push and HTTP/2 frame is noise; failures are logged by mdm.push.
        "httpx": {"level": "WARNING"},
        # Agents' 4xx replies are counted and summarised by agentapi.errorlog instead.
        "django.request": {"filters": ["agent_client_errors"]},
    },
}

# --- TLS for agents under `make run` (production terminates TLS at the load balancer) ------------
TLS_CERT_FILE = env.str("FLEET_TLS_CERT_FILE", default=str(VAR_DIR / "tls" / "cert.pem"))
TLS_KEY_FILE = env.str("FLEET_TLS_KEY_FILE", default=str(VAR_DIR / "tls" / "key.pem"))
# host[:port] agents use to reach this server; empty means "the host the admin's browser used,
# on TLS_PORT" (the "Add hosts" page shows it).
AGENT_TLS_HOSTNAME = env.str("FLEET_AGENT_TLS_HOSTNAME", default="")
TLS_PORT = env.int("TLS_PORT", default=8443)

# --- Agent updates (TUF) (docs/agent-updates.md) ------------------------------------------------
# The repository orbit updates itself, osqueryd and Fleet Desktop from, served read-only at /tuf/.
# `manage.py updates` keeps the signing keys in KEYS_DIR (never served) and writes REPOSITORY_DIR;
# with BASE_URL set, /tuf/ redirects there instead (a bucket or CDN holding the repository).
_UPDATES_ROOT = Path(env.str("FLEET_UPDATES_ROOT", default=str(VAR_DIR / "tuf")))
AGENT_UPDATES = {
    "REPOSITORY_DIR": env.str("FLEET_UPDATES_REPOSITORY_DIR", default=str(_UPDATES_ROOT / "repository")),
    "KEYS_DIR": env.str("FLEET_UPDATES_KEYS_DIR", default=str(_UPDATES_ROOT / "keys")),
    "BASE_URL": env.str("FLEET_UPDATES_BASE_URL", default=""),
    # timestamp.json is valid 14 days; it is re-signed (FLEET_TIMESTAMP_PASSPHRASE) when fewer remain.
    "TIMESTAMP_REFRESH_DAYS": env.float("FLEET_UPDATES_TIMESTAMP_REFRESH_DAYS", default=7.0),
    "TIMESTAMP_CHECK_INTERVAL": env.float("FLEET_UPDATES_TIMESTAMP_CHECK_INTERVAL", default=4 * 3600.0),
    "KEY_SCRYPT_N": 2**15,  # cost of deriving a key's sealing key from its passphrase (go-tuf's)
}
CELERY_BEAT_SCHEDULE["updates-refresh-timestamp"] = {
    "task": "updates.refresh_timestamp",
    "schedule": AGENT_UPDATES["TIMESTAMP_CHECK_INTERVAL"],
    "options": {"expires": AGENT_UPDATES["TIMESTAMP_CHECK_INTERVAL"]},
}
# Clients ask for the next root.json at every check and get a 404: not worth a log line each.
LOGGING["filters"]["tuf_not_found"] = {"()": "updates.logfilter.DropRepositoryNotFound"}
LOGGING["loggers"]["django.request"]["filters"].append("tuf_not_found")

# --- Fleet Desktop and My device (docs/my-device.md) ------------------------------------------
# A device token is valid TOKEN_TTL seconds after orbit set it (Fleet: one hour); the one before a
# rotation stays valid one TTL more. FAILURE_LIMIT bad tokens from one address within
# FAILURE_WINDOW seconds ban that address for BAN_SECONDS (Fleet: 1,000 a minute, one minute).
FLEET_DESKTOP = {
    "TOKEN_TTL": env.int("DEVICE_TOKEN_TTL_SECONDS", default=3600),
    "FAILURE_LIMIT": env.int("DEVICE_AUTH_FAILURE_LIMIT", default=1000),
    "FAILURE_WINDOW": env.int("DEVICE_AUTH_FAILURE_WINDOW_SECONDS", default=60),
    "BAN_SECONDS": env.int("DEVICE_AUTH_BAN_SECONDS", default=60),
}
# Device tokens travel in URL paths: the log handler rewrites them out of every record.
LOGGING["filters"]["device_tokens"] = {"()": "devices.logfilter.RedactDeviceTokens"}
LOGGING["handlers"]["console"]["filters"].append("device_tokens")

# --- Apple MDM (docs/apple-mdm.md) ---------------------------------------------------------------
# DIR holds the MDM CA (`manage.py mdm setup`: ca.pem, ca.key owner-only) and, after `--dev`, the
# local APNs stand-in's certificates; production mounts it from a secret. SERVER_URL is the https
# base URL devices reach (empty: the URL the request came in on). The push certificate lives in
# the database, its key sealed (fleet/sealing.py). Silent devices with pending commands are pushed
# again every REPUSH_INTERVAL seconds; a profile pending or verifying longer than STUCK_AFTER
# seconds is sent again (and counted).
_MDM_DIR = env.str("FLEET_MDM_DIR", default=str(VAR_DIR / "mdm"))
MDM = {
    "DIR": _MDM_DIR,
    "SERVER_URL": env.str("FLEET_MDM_SERVER_URL", default=""),
    "APNS_URL": env.str("FLEET_MDM_APNS_URL", default="https://api.push.apple.com"),
    # `mdm setup --dev` pushes to a local stand-in here instead of Apple (simulator, make run, tests).
    "DEV_APNS_URL": env.str("FLEET_MDM_DEV_APNS_URL", default="https://127.0.0.1:8446"),
    "PUSH_DISABLED": env.bool("FLEET_MDM_PUSH_DISABLED", default=False),
    "REPUSH_INTERVAL": env.float("FLEET_MDM_REPUSH_INTERVAL", default=60.0),
    "RECONCILE_INTERVAL": env.float("FLEET_MDM_RECONCILE_INTERVAL", default=30.0),
    "STUCK_AFTER": env.float("FLEET_MDM_STUCK_AFTER_SECONDS", default=900.0),
    "DEVICE_CERT_DAYS": env.int("FLEET_MDM_DEVICE_CERT_DAYS", default=365),
    # Optional: sign enrollment profiles with a certificate macOS already trusts (e.g. the server's
    # TLS certificate and its chain) so the profile shows as "Verified"; default: the MDM CA.
    "SIGNING_CERT_FILE": env.str("FLEET_MDM_SIGNING_CERT_FILE", default=""),
    "SIGNING_KEY_FILE": env.str("FLEET_MDM_SIGNING_KEY_FILE", default=""),
    "MAX_BODY": 4 * 1024 * 1024,  # the largest check-in or command report accepted (bytes)
}
CELERY_BEAT_SCHEDULE["mdm-push-pending"] = {
    "task": "mdm.push_pending",
    "schedule": MDM["REPUSH_INTERVAL"],
    "options": {"expires": MDM["REPUSH_INTERVAL"]},
}
CELERY_BEAT_SCHEDULE["mdm-reconcile-profiles"] = {
    "task": "mdm.reconcile_profiles",
    "schedule": MDM["RECONCILE_INTERVAL"],
    "options": {"expires": MDM["RECONCILE_INTERVAL"]},
}

# Task server (taskserver/, docs/tasks.md).
TASKSERVER = {
    # Heartbeats both ways this often (sent to agents in `welcome`); a session silent for three of
    # them is closed, and an agent's last_seen_at is written at most once per heartbeat.
    "HEARTBEAT": env.float("TASKSERVER_HEARTBEAT", default=10.0),
    # An agent online but unheard of this long (its daphne process died) is marked offline by the
    # sweep every live process runs, at most every SWEEP_INTERVAL seconds; its `any` tasks move.
    "STALE_AFTER": env.float("TASKSERVER_STALE_AFTER", default=45.0),
    "SWEEP_INTERVAL": env.float("TASKSERVER_SWEEP_INTERVAL", default=15.0),
    # The embedded default's in-process channel layer cannot carry a change made in another process
    # (`manage.py apply`, a second server process): such changes bump this file, and every session
    # checks it this often and sends its agent the full task list when another process bumped it.
    "CHANGE_STAMP_FILE": env.str(
        "TASKSERVER_CHANGE_STAMP_FILE", default=str(VAR_DIR / "run" / "taskserver.stamp")
    ),
    "CHANGE_POLL_INTERVAL": env.float("TASKSERVER_CHANGE_POLL_INTERVAL", default=2.0),
    # An agent tied to a host gets a new task list within this many seconds when its host's labels
    # change what byLabels routes give it (label membership changes come from osquery, not the API).
    "LABEL_RECHECK_INTERVAL": env.float("TASKSERVER_LABEL_RECHECK_INTERVAL", default=60.0),
}
# Seconds the points of the metrics agents send to the `server` destination are kept (charts,
# REST); /metrics exports series seen within it (taskserver/metric_store.py, docs/tasks.md).
TASKSERVER_METRICS_RETENTION = env.int("TASKSERVER_METRICS_RETENTION", default=6 * 3600)

# --- Anonymous usage statistics (usage/, docs/usage-statistics.md) ---------------------------------
# Fleet's usage analytics: on unless FLEET_USAGE_STATISTICS_ENABLED=false (which wins over the
# console's checkbox), sent at most every FREQUENCY seconds to URL. This project runs no collector,
# so URL is empty by default and nothing is sent until an operator (or a fork) sets one.
USAGE_STATISTICS = {
    "ENABLED": env.bool("FLEET_USAGE_STATISTICS_ENABLED", default=True),
    "URL": env.str("FLEET_USAGE_STATISTICS_URL", default=""),
    "FREQUENCY": 24 * 3600.0,
    # Beat (and, on the embedded default, each server process) looks this often whether a send is
    # due, as Fleet's hourly `stats` cron does; a failed attempt is retried after as long.
    "CHECK_INTERVAL": 3600.0,
    "CONNECT_TIMEOUT": 5.0,
    "TIMEOUT": 10.0,  # the whole POST, connect included
}
CELERY_BEAT_SCHEDULE["usage-send-statistics"] = {
    "task": "usage.send_statistics",
    "schedule": USAGE_STATISTICS["CHECK_INTERVAL"],
    "options": {"expires": USAGE_STATISTICS["CHECK_INTERVAL"]},
}
