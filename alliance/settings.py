"""Settings for the alliance image-sharing network.

Every knob is read from the environment (see README's configuration table). The
defaults give the embedded mode: SQLite, files under DATA_DIR, Celery over kombu's
filesystem transport. DATABASE_URL, CELERY_BROKER_URL and S3_* switch to the real parts.
"""

import ipaddress
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from alliance.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not env_bool("ALLOW_DEV_SECRET_KEY", True):
        raise ImproperlyConfigured("SECRET_KEY must be set when ALLOW_DEV_SECRET_KEY=0")
    SECRET_KEY = "dev-only-not-secret-" + "x" * 40  # noqa: S105 - embedded demo mode only
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "guardian",  # the grant tables are its object permission models; its backend is not used
    "alliance",
    "imaging",
    "imaging.viewer",
    "consults",
    "referrals",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "alliance.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "alliance.middleware.ActiveDoctorMiddleware",
    "alliance.account_gate.AccountGateMiddleware",
    "alliance.middleware.ModuleSwitchMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "alliance.middleware.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "alliance.urls"
WSGI_APPLICATION = "alliance.wsgi.application"

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
                "django.template.context_processors.i18n",
                "alliance.context_processors.doctor",
                "consults.context_processors.consults",
                "referrals.context_processors.referrals",
                "imaging.context_processors.imaging",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
    if DATABASES["default"]["ENGINE"] not in {
        "django.db.backends.postgresql",
        "django.db.backends.sqlite3",
    }:
        raise ImproperlyConfigured("DATABASE_URL must be postgres://... or sqlite:///...")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# A kept connection is checked (one round trip) before its first use in each request, so
# that after a database restart a stale one is replaced instead of failing a request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- authentication -------------------------------------------------------------------
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
# Guardian's backend would ignore a grant's expiry and revocation: imaging.access decides (README).
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]
AUTHENTICATION_BACKENDS = [
    "alliance.auth_backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1) / 60  # hours
# --- accounts: sign-in throttling, second factor, API tokens (alliance/accounts.py) ---
# A lock holds one (username, client address) pair: a stranger who knows a username cannot
# lock its owner out from elsewhere. One address that fails this many times (any usernames)
# within LOGIN_LOCKOUT_MINUTES is refused for every username (alliance.access.address_refused).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=1)
# The client address is the audit trail's (alliance.audit.source_of: the socket's, unless a
# trusted proxy says otherwise), so that a lock and its audit row name the same address.
AXES_CLIENT_IP_CALLABLE = "alliance.audit.source_of"
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_IPWARE_PROXY_COUNT = None
# A new alliance's policy "second factor required for specialists and admins" starts on;
# `make run` (the demo) and the tests start it off.
OTP_REQUIRED_DEFAULT = env_bool("OTP_REQUIRED_DEFAULT", True)
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Alliance Cloud PACS")
# A REST API token works for this many days after it is made.
API_TOKEN_DAYS = env_int("API_TOKEN_DAYS", 90, minimum=1, maximum=3650)
# --- end accounts ---
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "alliance.views.locked_out"
AXES_VERBOSE = False

SECURE_COOKIES = env_bool("SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_HOURS", 12, minimum=1) * 3600
# Cloud film (imaging/films.py): wrong birth dates or PINs before a link (or a network
# address) is locked, for how long, and how long a verified patient's session lasts.
FILM_ATTEMPT_LIMIT = env_int("FILM_ATTEMPT_LIMIT", 5, minimum=1, maximum=100)
FILM_LOCK_MINUTES = env_int("FILM_LOCK_MINUTES", 15, minimum=1)
FILM_SESSION_MINUTES = env_int("FILM_SESSION_MINUTES", 30, minimum=1, maximum=24 * 60)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "SAMEORIGIN"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None

# --- i18n -----------------------------------------------------------------------------
LANGUAGE_CODE = env_str("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

# --- static and stored files ----------------------------------------------------------
# Under a sub-path of a site (a proxy forwarding https://host/pacs/ here), set SCRIPT_NAME=/pacs
# in the environment: gunicorn and Django then both use it, and the relative STATIC_URL
# becomes /pacs/static/.
FORCE_SCRIPT_NAME = env_str("SCRIPT_NAME", "").rstrip("/") or None
STATIC_URL = env_str("STATIC_URL", "static/")
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing folder before collectstatic
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"

S3_BUCKET = env_str("S3_BUCKET", "")
DICOM_STORAGE_BACKEND: dict[str, object]
if S3_BUCKET:
    DICOM_STORAGE_BACKEND = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID", ""),
            "secret_key": env_str("S3_SECRET_ACCESS_KEY", ""),
            "region_name": env_str("S3_REGION", "us-east-1"),
            "file_overwrite": True,
            "default_acl": None,
            "querystring_auth": False,
        },
    }
else:
    DICOM_STORAGE_BACKEND = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "dicom", "file_permissions_mode": 0o640},
    }
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    },
    "dicom": DICOM_STORAGE_BACKEND,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DICOM_MAX_FILE_BYTES = env_int("DICOM_MAX_FILE_MB", 512, minimum=1) * 1024 * 1024
# A deflated data set (PS3.5 A.5) inflates to at most this, and (past its first 16 MB) to at
# most this many times its deflated size: a "deflate bomb" is refused, never held in memory.
DICOM_MAX_INFLATED_BYTES = (
    env_int("DICOM_MAX_INFLATED_MB", DICOM_MAX_FILE_BYTES // (1024 * 1024), minimum=1) * 1024 * 1024
)
DICOM_MAX_INFLATE_RATIO = env_int("DICOM_MAX_INFLATE_RATIO", 100, minimum=1)
# A STOW-RS request: its whole body and its number of parts (413 beyond, before the rest
# is read). deploy/nginx/alliance.conf's client_max_body_size must allow the same.
DICOMWEB_MAX_BODY_BYTES = env_int("DICOMWEB_MAX_BODY_MB", 1024, minimum=1) * 1024 * 1024
DICOMWEB_MAX_PARTS = env_int("DICOMWEB_MAX_PARTS", 5000, minimum=1)
# Longest wait for the next bytes of a request body (408 beyond): a stalled upload frees
# its worker instead of holding it (under gunicorn; nginx in front buffers bodies anyway).
REQUEST_BODY_TIMEOUT_SECONDS = env_int("REQUEST_BODY_TIMEOUT_SECONDS", 60, minimum=1, maximum=3600)
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 2000

# --- DICOM network --------------------------------------------------------------------
DICOM_HOST = env_str("DICOM_HOST", "127.0.0.1")
DICOM_PORT = env_int("DICOM_PORT", 11112, minimum=1, maximum=65535)
DICOM_CHECK_DEVICE_HOST = env_bool("DICOM_CHECK_DEVICE_HOST", True)
DICOM_AE_TITLE = env_str("DICOM_AE_TITLE", "CLOUDPACS")  # ours when we call out (C-MOVE)
# The objects we write into studies (key images, measurements, signed reports) name us as
# their maker, with UIDs under this root: an organisation root registered for the operator,
# or "2.25" (PS3.5 B.2), UIDs made from UUIDs, which need no registration.
DICOM_UID_ROOT = env_str("DICOM_UID_ROOT", "2.25")
if not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+", DICOM_UID_ROOT) or len(DICOM_UID_ROOT) > 24:
    raise ImproperlyConfigured("DICOM_UID_ROOT must be a UID root of at most 24 characters, e.g. 1.2.840.99999")
DICOM_MANUFACTURER = env_str("DICOM_MANUFACTURER", "Alliance Cloud PACS")
DICOM_MODEL_NAME = env_str("DICOM_MODEL_NAME", "Cloud PACS")
DICOM_SOFTWARE_VERSION = env_str("DICOM_SOFTWARE_VERSION", "1")
# A further instance of a series is answered once durable in the spool and indexed right after
# (imaging/spool.py; PostgreSQL and a local store only). False: every instance indexed first.
DICOM_WRITE_AHEAD = env_bool("DICOM_WRITE_AHEAD", True)
# Unindexed instances a server process's spool holds at most; past it, instances are indexed
# before their answer (imaging/spool.py).
DICOM_SPOOL_MAX_ENTRIES = env_int("DICOM_SPOOL_MAX_ENTRIES", 1000, minimum=1)
DICOM_PROCESSES = env_int("DICOM_PROCESSES", 1, minimum=1, maximum=64)  # share the port (SO_REUSEPORT)
# imaging/dicom/accel/: the server's faster path through pynetdicom (only on the pynetdicom
# version it was written for). False: pynetdicom's own path, as it ships.
DICOM_ACCELERATE = env_bool("DICOM_ACCELERATE", True)

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    _queue = DATA_DIR / "celery-queue"
    _queue.mkdir(exist_ok=True)
    (DATA_DIR / "celery-processed").mkdir(exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "processed_folder": str(DATA_DIR / "celery-processed"),
        "control_folder": str(DATA_DIR / "celery-control"),  # kombu's default is ./control
        "store_processed": False,
    }
else:
    # Redis (and SQS) hand a message taken by a worker that died without acknowledging it
    # (kill -9, out of memory) to another worker only after this many seconds (kombu's
    # default is an hour): a render batch takes seconds. It applies to every task on the
    # broker, so it must stay above the longest task and the longest retry countdown
    # (imaging.tasks: 300 s). RabbitMQ redelivers at once when the connection drops.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600, minimum=1)}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Side effects of a commit (render requests, notification e-mail) are sent to the broker
# after it; what a broker outage or a killed process lost is found by sweeps every
# RETRY_SWEEP_SECONDS and sent again once RETRY_AFTER_SECONDS old (younger ones may still
# be on their way).
RETRY_SWEEP_SECONDS = env_int("RETRY_SWEEP_SECONDS", 60, minimum=1)
RETRY_AFTER_SECONDS = env_int("RETRY_AFTER_SECONDS", 300, minimum=0)
# Files in DATA_DIR/tmp untouched this long are partial receives of a process that died.
TEMP_MAX_AGE_SECONDS = env_int("TEMP_MAX_AGE_SECONDS", 3600, minimum=60)
# A critical result (危急值) not acknowledged by the requesting side this long is escalated to
# its institution admin. A deployment-wide rule, like the hospital regulation it follows.
CRITICAL_ESCALATE_MINUTES = env_int("CRITICAL_ESCALATE_MINUTES", 15, minimum=1)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "critical-escalation": {
        "task": "consults.tasks.escalate_critical_results",
        "schedule": float(env_int("CRITICAL_CHECK_SECONDS", 60, minimum=5)),
    },
    "consult-deadlines": {
        "task": "consults.tasks.check_deadlines",
        "schedule": float(env_int("CONSULT_DEADLINE_CHECK_SECONDS", 60, minimum=5)),
    },
    "unsent-emails": {"task": "consults.tasks.send_unsent_emails", "schedule": float(RETRY_SWEEP_SECONDS)},
    "referral-reminders": {
        "task": "referrals.tasks.remind_waiting",
        "schedule": float(env_int("REFERRAL_REMINDER_CHECK_SECONDS", 300, minimum=5)),
    },
    "referral-unsent-emails": {"task": "referrals.tasks.send_unsent_emails", "schedule": float(RETRY_SWEEP_SECONDS)},
    "owed-renders": {"task": "imaging.tasks.requeue_owed_renders", "schedule": float(RETRY_SWEEP_SECONDS)},
    "stale-temp-files": {"task": "imaging.tasks.remove_stale_temp_files", "schedule": 3600.0},
    "figures-received-days": {"task": "imaging.tasks.roll_up_received_days", "schedule": 3600.0},
    "figures-consult-days": {"task": "consults.tasks.roll_up_consult_days", "schedule": 3600.0},
    "deleted-studies": {"task": "imaging.tasks.purge_deleted_studies", "schedule": 86400.0},
}

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "alliance.api.authentication.DoctorTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["alliance.api.permissions.IsActiveDoctor"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "alliance.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Alliance image-sharing network API",
    "DESCRIPTION": "Membership, imaging metadata, consults and referrals of a medical alliance.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's Swagger UI and ReDoc are served from our static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "PREPROCESSING_HOOKS": ["alliance.api.schema.only_rest_api"],
    # A consult has a state a referral has not ("preliminary", two-level sign-off): two enums.
    "ENUM_NAME_OVERRIDES": {
        "ConsultStatusEnum": "consults.models.Status",
        "ReferralStatusEnum": "referrals.models.Status",
    },
}
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/(dicomweb|api)/.*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type", "accept", "accept-encoding"]

# --- mail -----------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "cloudpacs@localhost")

# --- logging --------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "pynetdicom": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # kombu warns "No hostname was supplied" for every producer of the filesystem transport
        "kombu.connection": {"level": "ERROR" if CELERY_BROKER_URL == "filesystem://" else "WARNING"},
    },
}

# --- audit: trusted proxies, transport security, export (issue 22, items 3, 5, 8) -------
# The audit's source address (alliance.audit.source_of) reads X-Forwarded-For only from these
# peers: the addresses or CIDRs of the reverse proxies in front (e.g. "127.0.0.1,10.0.0.0/8").
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES: {_proxy!r} is not an address or CIDR") from None
# Refused reads are audited after their response is sent (alliance.middleware.AuditContextMiddleware).
MIDDLEWARE.insert(
    MIDDLEWARE.index("alliance.middleware.ActiveDoctorMiddleware") + 1, "alliance.middleware.AuditContextMiddleware"
)
CELERY_BEAT_SCHEDULE["denied-read-counts"] = {"task": "alliance.tasks.summarize_denied_reads", "schedule": 60.0}

# Transport security (issue 22 item 8). TLS=on says the site is served over HTTPS (by the
# reverse proxy in deploy/nginx, which sets X-Forwarded-Proto): plain HTTP is redirected, HSTS
# is sent (HSTS_SECONDS; preload on unless HSTS_PRELOAD=0: it only matters once the domain is
# submitted to the browsers' list), and cookies are Secure. The production settings are
# DEBUG=0, ALLOW_DEV_SECRET_KEY=0 with a SECRET_KEY, ALLOWED_HOSTS and TLS=on (README).
TLS = env_bool("TLS", False)
if TLS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 365 * 86400, minimum=1)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    if env_bool("BEHIND_TLS_PROXY", True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Responses carry Cache-Control: no-store unless their view chose private caching (pixel data).
MIDDLEWARE.insert(
    MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware") + 1, "alliance.middleware.NoStoreMiddleware"
)
# Bad input (issue 22 item 9): REST paging parameters are checked (400 naming the parameter).
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "alliance.api.pagination.StrictLimitOffsetPagination"
MIDDLEWARE.insert(
    MIDDLEWARE.index("alliance.middleware.AuditContextMiddleware") + 1, "alliance.middleware.NulInQueryMiddleware"
)
# The audit trail is append-only against the app's own database role too (issue 22 item 4):
# DATABASE_URL is the app's role (INSERT and SELECT on the audit table, owner of nothing);
# `manage.py migrate` connects as DATABASE_MIGRATE_URL, the owner, when it is set. Both roles
# are made by `manage.py db_roles` (deploy/postgres/README.md).
DATABASE_MIGRATE_URL = env_str("DATABASE_MIGRATE_URL", "")
if DATABASE_MIGRATE_URL and not DATABASE_MIGRATE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured(
        "DATABASE_MIGRATE_URL must be a postgres:// URL (the owner role of DATABASE_URL's database)"
    )
# IHE ATNA export (issue 22 item 5, alliance/atna.py): the audit trail is also sent to this
# syslog collector as DICOM PS3.15 A.5 messages: tcp://host:port, or tls://host:port (RFC 5425)
# with ATNA_SYSLOG_CA (the collector's CA file) and, for mutual TLS, ATNA_SYSLOG_CERT and
# ATNA_SYSLOG_KEY. Empty: no export. Beat sends what is pending every ATNA_SEND_SECONDS.
ATNA_SYSLOG_URL = env_str("ATNA_SYSLOG_URL", "")
if ATNA_SYSLOG_URL:
    from urllib.parse import urlsplit as _urlsplit

    _atna = _urlsplit(ATNA_SYSLOG_URL)
    try:
        _atna_port = _atna.port
    except ValueError:
        _atna_port = None
    if _atna.scheme not in {"tcp", "tls"} or not _atna.hostname or not _atna_port:
        raise ImproperlyConfigured(f"ATNA_SYSLOG_URL={ATNA_SYSLOG_URL!r} must be tcp://host:port or tls://host:port")
ATNA_SYSLOG_CA = env_str("ATNA_SYSLOG_CA", "")
ATNA_SYSLOG_CERT = env_str("ATNA_SYSLOG_CERT", "")
ATNA_SYSLOG_KEY = env_str("ATNA_SYSLOG_KEY", "")
ATNA_SOURCE_ID = env_str("ATNA_SOURCE_ID", SITE_URL.split("://")[-1].split("/")[0])
ATNA_ENTERPRISE_SITE_ID = env_str("ATNA_ENTERPRISE_SITE_ID", ATNA_SOURCE_ID)
ATNA_APP_NAME = env_str("ATNA_APP_NAME", "cloudpacs")
CELERY_BEAT_SCHEDULE["atna-export"] = {
    "task": "alliance.tasks.send_atna",
    "schedule": float(env_int("ATNA_SEND_SECONDS", 10, minimum=1)),
}
# No page is framed but the viewer inside a consult's report (imaging.viewer.views.study).
X_FRAME_OPTIONS = "DENY"
