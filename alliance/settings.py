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

from alliance import queues
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
    "imaging.hl7",
    "imaging.routing",
    "consults",
    "consults.teaching",
    "referrals",
    "consults.screening",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "alliance.ops.RequestLatencyMiddleware",
    "alliance.db_fresh.FreshConnectionMiddleware",
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
                "consults.teaching.context_processors.teaching",
                "referrals.context_processors.referrals",
                "imaging.context_processors.imaging",
                "consults.screening.context_processors.screening",
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
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The statements the hot paths prepare (alliance.prepared: key look-ups and inserts)
        # run their generic plan from the first: planning each execution is what preparing
        # saves. Django's own queries are not prepared and are planned as before.
        _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
        if "plan_cache_mode" not in _pg_options.get("options", ""):
            _pg_options["options"] = f"{_pg_options.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
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
# A container image collects them at build time outside DATA_DIR (a volume): deploy/Dockerfile.
STATIC_ROOT = Path(env_str("STATIC_ROOT", "") or DATA_DIR / "staticfiles").resolve()
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing folder before collectstatic
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"

S3_BUCKET = env_str("S3_BUCKET", "")
DICOM_STORAGE_BACKEND: dict[str, object]
RENDER_CACHE_BACKEND: dict[str, object]
if S3_BUCKET:
    from botocore.config import Config as _S3Config

    _S3_OPTIONS: dict[str, object] = {
        "bucket_name": S3_BUCKET,
        "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,
        "access_key": env_str("S3_ACCESS_KEY_ID", ""),
        "secret_key": env_str("S3_SECRET_ACCESS_KEY", ""),
        "region_name": env_str("S3_REGION", "us-east-1"),
        "file_overwrite": True,
        "default_acl": None,
        "querystring_auth": False,
        # An unreachable store fails a store within seconds (the C-STORE answers 0xA700, STOW
        # 503, the spool waits it out) instead of holding the sender for minutes.
        "client_config": _S3Config(
            connect_timeout=env_int("S3_CONNECT_TIMEOUT", 5, minimum=1),
            read_timeout=env_int("S3_READ_TIMEOUT", 60, minimum=1),
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": env_str("S3_ADDRESSING_STYLE", "auto")},
        ),
    }
    DICOM_STORAGE_BACKEND = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _S3_OPTIONS}
    # Thumbnails and previews beside the objects (imaging.storage.RENDER_CACHE_FOLDER), shared
    # by every node instead of rendered again on each one's disk.
    RENDER_CACHE_BACKEND = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {**_S3_OPTIONS, "location": "renders"},
    }
else:
    DICOM_STORAGE_BACKEND = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "dicom", "file_permissions_mode": 0o640},
    }
    RENDER_CACHE_BACKEND = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    },
    "dicom": DICOM_STORAGE_BACKEND,
    "renders": RENDER_CACHE_BACKEND,
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
# DICOM over TLS (PS3.15 B.1, TLS 1.2 or later) on a port of its own beside DICOM_PORT; 0: off.
# The server's certificate chain and key are PEM files; with a CA file, devices may present a
# client certificate it issued, pinned per device (alliance.models.Device.tls_client_sha256).
DICOM_TLS_PORT = env_int("DICOM_TLS_PORT", 0, minimum=0, maximum=65535)
DICOM_TLS_CERT = env_str("DICOM_TLS_CERT", "")
DICOM_TLS_KEY = env_str("DICOM_TLS_KEY", "")
DICOM_TLS_CA = env_str("DICOM_TLS_CA", "")
if DICOM_TLS_PORT:
    for _name, _path, _needed in (
        ("DICOM_TLS_CERT", DICOM_TLS_CERT, True),
        ("DICOM_TLS_KEY", DICOM_TLS_KEY, True),
        ("DICOM_TLS_CA", DICOM_TLS_CA, False),
    ):
        if (_needed or _path) and not Path(_path).is_file():
            raise ImproperlyConfigured(f"{_name} must name a readable PEM file when DICOM_TLS_PORT is set: {_path!r}")
    if DICOM_TLS_PORT == DICOM_PORT:
        raise ImproperlyConfigured("DICOM_TLS_PORT must differ from DICOM_PORT")

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
# Queues by kind (alliance/queues.py; README "Workers and queues").
CELERY_QUEUE_PREFIX = env_str("CELERY_QUEUE_PREFIX", "")
CELERY_QUEUE_NAMES = tuple(CELERY_QUEUE_PREFIX + kind for kind in queues.KINDS)
CELERY_TASK_QUEUES = queues.declare(CELERY_QUEUE_PREFIX, quorum=queues.is_rabbitmq(CELERY_BROKER_URL))
CELERY_TASK_DEFAULT_QUEUE = CELERY_TASK_DEFAULT_EXCHANGE = CELERY_TASK_DEFAULT_ROUTING_KEY = (
    CELERY_QUEUE_PREFIX + "celery"
)
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
CELERY_TASK_ROUTES = queues.routes(CELERY_QUEUE_PREFIX)
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
# How long a render task waits, at most, for its node to stop taking in images before it
# renders anyway (imaging/activity.py): ingest first, and thumbnails still under a steady stream.
RENDER_DEFER_SECONDS = env_int("RENDER_DEFER_SECONDS", 60, minimum=0, maximum=3600)
# Files in DATA_DIR/tmp untouched this long are partial receives of a process that died.
TEMP_MAX_AGE_SECONDS = env_int("TEMP_MAX_AGE_SECONDS", 3600, minimum=60)
# A critical result (危急值) not acknowledged by the requesting side this long is escalated to
# its institution admin. A deployment-wide rule, like the hospital regulation it follows.
CRITICAL_ESCALATE_MINUTES = env_int("CRITICAL_ESCALATE_MINUTES", 15, minimum=1)
# Teaching cases (consults.teaching): the key of the keyed hashes that replace the UIDs of a
# de-identified copy (HMAC-SHA256, so that one study's copies keep their series together and
# nobody without the key can tell which study a copy came from), and the most images a case
# may copy at once. Changing the key changes the UIDs of copies made afterwards only.
TEACHING_UID_KEY = env_str("TEACHING_UID_KEY", "") or f"teaching-uids:{SECRET_KEY}"
TEACHING_MAX_IMAGES = env_int("TEACHING_MAX_IMAGES", 500, minimum=1, maximum=5000)
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
    # Break-glass e-mail and privilege change notices whose task never reached the broker.
    "break-glass-unsent-emails": {
        "task": "imaging.tasks.send_unsent_break_glass_emails",
        "schedule": float(RETRY_SWEEP_SECONDS),
    },
    "privilege-unsent-notices": {
        "task": "alliance.tasks.send_unsent_privilege_notices",
        "schedule": float(RETRY_SWEEP_SECONDS),
    },
    # Storage commitment reports whose task never reached the broker (imaging.commitment).
    "owed-commitment-reports": {
        "task": "imaging.tasks.resend_owed_commitments",
        "schedule": float(RETRY_SWEEP_SECONDS),
    },
    "stale-temp-files": {"task": "imaging.tasks.remove_stale_temp_files", "schedule": 3600.0},
    "figures-received-days": {"task": "imaging.tasks.roll_up_received_days", "schedule": 3600.0},
    "figures-consult-days": {"task": "consults.tasks.roll_up_consult_days", "schedule": 3600.0},
    # A signed report's PDF and text SR that did not reach its studies (consults.report_objects).
    "report-objects": {"task": "consults.tasks.write_missing_report_objects", "schedule": 600.0},
    "deleted-studies": {"task": "imaging.tasks.purge_deleted_studies", "schedule": 86400.0},
}

# Screening programmes (consults.screening): the clinic is reminded this many days before a
# screening CT is due and again this many days after, while it is not done; beat looks for
# reminders to send, and for arrived scans to tag to their rounds, every few minutes.
SCREENING_REMIND_BEFORE_DAYS = env_int("SCREENING_REMIND_BEFORE_DAYS", 14, minimum=0, maximum=365)
SCREENING_REMIND_AFTER_DAYS = env_int("SCREENING_REMIND_AFTER_DAYS", 7, minimum=0, maximum=365)
CELERY_BEAT_SCHEDULE["screening-reminders"] = {
    "task": "consults.screening.tasks.remind_due",
    "schedule": float(env_int("SCREENING_CHECK_SECONDS", 3600, minimum=5)),
}
CELERY_BEAT_SCHEDULE["screening-match-scans"] = {
    "task": "consults.screening.tasks.match_scans",
    "schedule": float(env_int("SCREENING_MATCH_SECONDS", 300, minimum=5)),
}
# A signed reading's SR that did not reach its study (consults.screening.tasks).
CELERY_BEAT_SCHEDULE["screening-reading-srs"] = {
    "task": "consults.screening.tasks.write_missing_reading_srs",
    "schedule": 600.0,
}
CELERY_BEAT_SCHEDULE["screening-unsent-emails"] = {
    "task": "consults.screening.tasks.send_unsent_emails",
    "schedule": float(RETRY_SWEEP_SECONDS),
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
# --- HL7 v2 (imaging/hl7): orders in over MLLP, results out ------------------------------
# `manage.py hl7_listener` takes ORM^O01 and OMI^O23 orders from the registered HIS endpoints
# on this address; ORU^R01 results go to each endpoint's own host and port.
HL7_HOST = env_str("HL7_HOST", "127.0.0.1")
HL7_PORT = env_int("HL7_PORT", 2575, minimum=1, maximum=65535)
HL7_ENCODING = env_choice("HL7_ENCODING", "utf-8", {"utf-8", "gb18030", "latin-1", "ascii"})
HL7_APPLICATION = env_str("HL7_APPLICATION", "CLOUDPACS")  # MSH-3 of what we send (ACKs, ORU^R01)
HL7_TIMEOUT_SECONDS = env_int("HL7_TIMEOUT_SECONDS", 30, minimum=1, maximum=600)
HL7_SEND_RETRIES = env_int("HL7_SEND_RETRIES", 8, minimum=0, maximum=100)
# The signed report's PDF goes into the ORU^R01 as an ED OBX when it is no larger than this.
HL7_ORU_PDF_MAX_BYTES = env_int("HL7_ORU_PDF_MAX_BYTES", 2_000_000, minimum=0)

CELERY_BEAT_SCHEDULE["hl7-unsent"] = {
    "task": "consults.tasks.send_unsent_results",
    "schedule": float(RETRY_SWEEP_SECONDS),
}

# --- FHIR R4 (alliance/fhir, read-only) ------------------------------------------------
# Entries of a searchset Bundle when the search gives no _count (at most 1000 with one).
FHIR_PAGE_SIZE = env_int("FHIR_PAGE_SIZE", 50, minimum=1, maximum=1000)
# The namespace of the identifier systems the FHIR API writes: a patient ID of the institution
# with AE title CLINA is {FHIR_SYSTEM_BASE}/patient-id/CLINA, its accession numbers
# {FHIR_SYSTEM_BASE}/accession/CLINA. Keep it stable once systems outside store identifiers.
FHIR_SYSTEM_BASE = env_str("FHIR_SYSTEM_BASE", SITE_URL + "/fhir/sid").rstrip("/")
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/(dicomweb|api|fhir)/.*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type", "accept", "accept-encoding"]

# --- mail -----------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "cloudpacs@localhost")
# The SMTP server a deployment sends through (EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # TLS from the start, usually port 465
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1, maximum=600)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other: set one")

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
    # A load balancer's probe and a scraper on the node itself speak plain HTTP to gunicorn.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 365 * 86400, minimum=1)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    if env_bool("BEHIND_TLS_PROXY", True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# /metrics (imaging.health) answers loopback, and a scraper sending this bearer token.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
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
# ATNA_SYSLOG_KEY. Empty: no export. Beat sends what is pending every ATNA_SEND_SECONDS, only
# when a collector is set; without one it empties the outbox (which the audit table's trigger
# fills all the same) once an hour instead.
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
ATNA_SEND_SECONDS = env_int("ATNA_SEND_SECONDS", 10, minimum=1)
if ATNA_SYSLOG_URL:
    CELERY_BEAT_SCHEDULE["atna-export"] = {"task": "alliance.tasks.send_atna", "schedule": float(ATNA_SEND_SECONDS)}
else:
    CELERY_BEAT_SCHEDULE["atna-outbox"] = {"task": "alliance.tasks.empty_atna_outbox", "schedule": 3600.0}
# No page is framed but the viewer inside a consult's report (imaging.viewer.views.study).
X_FRAME_OPTIONS = "DENY"

# Routing (issue 18 item 1, imaging/routing/): studies forwarded to an institution's own PACS or
# workstation by C-STORE or STOW-RS. A study is routed by the ingest rules once nothing arrived
# for it for ROUTE_QUIET_SECONDS (the beat sweep looks every ROUTE_SWEEP_SECONDS). A transient
# failure (refused connection, timeout, out of resources, HTTP 5xx) is tried again after
# ROUTE_RETRY_BASE_SECONDS, doubling up to ROUTE_RETRY_MAX_SECONDS (at most the broker's
# visibility timeout: a retry is a countdown held by the worker), ROUTE_MAX_ATTEMPTS times.
ROUTE_QUIET_SECONDS = env_int("ROUTE_QUIET_SECONDS", 30, minimum=0)
ROUTE_SWEEP_SECONDS = env_int("ROUTE_SWEEP_SECONDS", 10, minimum=1)
ROUTE_RETRY_BASE_SECONDS = env_int("ROUTE_RETRY_BASE_SECONDS", 30, minimum=1)
ROUTE_RETRY_MAX_SECONDS = env_int("ROUTE_RETRY_MAX_SECONDS", 300, minimum=1)
if ROUTE_RETRY_MAX_SECONDS < ROUTE_RETRY_BASE_SECONDS:
    raise ImproperlyConfigured("ROUTE_RETRY_MAX_SECONDS must not be below ROUTE_RETRY_BASE_SECONDS")
ROUTE_MAX_ATTEMPTS = env_int("ROUTE_MAX_ATTEMPTS", 8, minimum=1)
# Seconds to wait for a peer: to connect and associate, and for each C-STORE response (or a
# STOW-RS answer, per request).
ROUTE_PEER_TIMEOUT = env_int("ROUTE_PEER_TIMEOUT", 60, minimum=1)
# At most this many prior studies of the patient go with a case when a rule asks for them.
ROUTE_PREFETCH_LIMIT = env_int("ROUTE_PREFETCH_LIMIT", 10, minimum=0)
# The key that encrypts DICOMweb destinations' bearer tokens at rest (any string; changing it
# makes the stored tokens unreadable: enter them again). Empty: derived from SECRET_KEY.
ROUTE_TOKEN_KEY = env_str("ROUTE_TOKEN_KEY", "")
CELERY_BEAT_SCHEDULE["routing-sweep"] = {"task": "imaging.routing.tasks.sweep", "schedule": float(ROUTE_SWEEP_SECONDS)}

# A beat run still waiting when the next one is due is discarded by the worker that finds it
# (Celery's expires): a worker away for an hour (a render worker stopped, say) comes back to
# one sweep, not sixty queued sweeps each sending the same owed work again.
for _entry in CELERY_BEAT_SCHEDULE.values():
    _entry["options"] = {"expires": _entry["schedule"], **dict(_entry.get("options") or {})}  # type: ignore[call-overload]
