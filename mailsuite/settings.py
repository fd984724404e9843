"""mailsuite settings: everything an operator sets comes from the environment.

A fresh clone runs with no variables set: SQLite and blobs under
MAILSUITE_DATA_DIR (./var), dev ports, a self-signed TLS pair.
"""
import os
import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mailstore.storage import blob_storage_setting
from mailsuite.lib.config import (
    env_bool,
    env_bytes,
    env_domains,
    env_hostports,
    env_int,
    env_ips,
    env_networks,
    env_port,
    env_str,
    env_weighted_domains,
)
from mailsuite.lib.logs import FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("MAILSUITE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key():
    """SECRET_KEY from the environment, else one generated once into the data dir."""
    if key := env_str("DJANGO_SECRET_KEY"):
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("MAILSUITE_DEBUG", False)

MAILSUITE_HOSTNAME = env_str("MAILSUITE_HOSTNAME", "localhost").lower()
MAILSUITE_BIND = env_str("MAILSUITE_BIND", "127.0.0.1")
ALLOWED_HOSTS = [MAILSUITE_HOSTNAME, "localhost", "127.0.0.1", "[::1]"] + [
    h for h in env_str("MAILSUITE_ALLOWED_HOSTS").split(",") if h
]

# Ports. Dev defaults sit above 1024 so `make run` needs no privileges;
# production sets 25/587/465/143/993/110/995/4190.
MAILSUITE_SMTP_PORT = env_port("MAILSUITE_SMTP_PORT", 2525)
MAILSUITE_SUBMISSION_PORT = env_port("MAILSUITE_SUBMISSION_PORT", 2587)
MAILSUITE_SMTPS_PORT = env_port("MAILSUITE_SMTPS_PORT", 2465)
MAILSUITE_IMAP_PORT = env_port("MAILSUITE_IMAP_PORT", 2143)
MAILSUITE_IMAPS_PORT = env_port("MAILSUITE_IMAPS_PORT", 2993)
MAILSUITE_POP3_PORT = env_port("MAILSUITE_POP3_PORT", 2110)
MAILSUITE_POP3S_PORT = env_port("MAILSUITE_POP3S_PORT", 2995)
MAILSUITE_MANAGESIEVE_PORT = env_port("MAILSUITE_MANAGESIEVE_PORT", 24190)
MAILSUITE_HTTP_PORT = env_port("MAILSUITE_HTTP_PORT", 8000)
MAILSUITE_OUTBOUND_PORT = env_port("MAILSUITE_OUTBOUND_PORT", 25)

MAILSUITE_TLS_CERT = env_str("MAILSUITE_TLS_CERT", str(DATA_DIR / "tls" / "cert.pem"))
MAILSUITE_TLS_KEY = env_str("MAILSUITE_TLS_KEY", str(DATA_DIR / "tls" / "key.pem"))
MAILSUITE_DNS_SERVERS = env_hostports("MAILSUITE_DNS_SERVERS", 53)
MAILSUITE_TRUSTED_NETWORKS = env_networks("MAILSUITE_TRUSTED_NETWORKS")
# Load balancers that speak the PROXY protocol (v1/v2) to every mail listener (empty: off).
# Connections from these networks must start with a header naming the real client; a header
# from anyone else closes the connection (mailsuite.lib.proxyprotocol).
MAILSUITE_PROXY_PROTOCOL_FROM = env_networks("MAILSUITE_PROXY_PROTOCOL_FROM")
MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = env_bool("MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK", False)
MAILSUITE_RELAYHOST = env_str("MAILSUITE_RELAYHOST")
if MAILSUITE_RELAYHOST and not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?", MAILSUITE_RELAYHOST):
    raise ImproperlyConfigured(f"MAILSUITE_RELAYHOST={MAILSUITE_RELAYHOST!r}: expected host[:port] or [ipv6]:port")

# Operations (ops). MTA-STS (RFC 8461) policy served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt:
# off (none served), testing (report only) or enforce. The public IPs of this server, for the DNS
# doctor's reverse-DNS and block-list checks (default: the addresses MAILSUITE_HOSTNAME resolves
# to). The bearer token that /metrics requires when set (unset: loopback clients only).
MAILSUITE_MTA_STS_MODE = env_str("MAILSUITE_MTA_STS_MODE", "off").lower()
if MAILSUITE_MTA_STS_MODE not in ("off", "testing", "enforce"):
    raise ImproperlyConfigured(f"MAILSUITE_MTA_STS_MODE={MAILSUITE_MTA_STS_MODE!r}: expected off, testing or enforce")
MAILSUITE_PUBLIC_IP = env_ips("MAILSUITE_PUBLIC_IP")
MAILSUITE_METRICS_TOKEN = env_str("MAILSUITE_METRICS_TOKEN")

# Outbound queue.
MAILSUITE_QUEUE_LIFETIME = env_int("MAILSUITE_QUEUE_LIFETIME", 5 * 86400, minimum=60)  # seconds, then bounce
MAILSUITE_QUEUE_DELAY_WARNING = env_int("MAILSUITE_QUEUE_DELAY_WARNING", 4 * 3600, minimum=0)  # 0 = never
MAILSUITE_QUEUE_LEASE_SECONDS = env_int("MAILSUITE_QUEUE_LEASE_SECONDS", 1200, minimum=1)
MAILSUITE_QUEUE_SWEEP_SECONDS = env_int("MAILSUITE_QUEUE_SWEEP_SECONDS", 30, minimum=1)
MAILSUITE_QUEUE_DESTINATION_CONCURRENCY = env_int("MAILSUITE_QUEUE_DESTINATION_CONCURRENCY", 4, minimum=1)
# The domain of SRS-rewritten senders of forwarded mail (its MX must point here); empty
# means MAILSUITE_HOSTNAME.
MAILSUITE_SRS_DOMAIN = env_str("MAILSUITE_SRS_DOMAIN").lower()
MAILSUITE_MAX_HOPS = env_int("MAILSUITE_MAX_HOPS", 50, minimum=5)  # Received: fields before a loop is declared

# Sender authentication (antispam): domains whose ARC seals vouch for mail they forward, so
# that a DMARC failure they caused (a list footer, a new subject) is not held against it.
MAILSUITE_ARC_TRUSTED_SEALERS = env_domains("MAILSUITE_ARC_TRUSTED_SEALERS")
# DNS block lists, ZONE[:WEIGHT],… (weight 10 when left out): the client IP in DNSBL zones, the
# MAIL FROM domain in RHSBL zones; listings weighing MAILSUITE_DNSBL_REJECT_WEIGHT refuse at MAIL.
MAILSUITE_DNSBL_ZONES = env_weighted_domains("MAILSUITE_DNSBL_ZONES", 10)
MAILSUITE_RHSBL_ZONES = env_weighted_domains("MAILSUITE_RHSBL_ZONES", 10)
MAILSUITE_DNSBL_REJECT_WEIGHT = env_int("MAILSUITE_DNSBL_REJECT_WEIGHT", 10, minimum=1)
# Freemail and other shared domains beyond antispam.policy.SHARED_DOMAINS: writing to one
# user there gives the others no sender-reputation credit.
MAILSUITE_SPAM_SHARED_DOMAINS = env_domains("MAILSUITE_SPAM_SHARED_DOMAINS")
# Greylisting (antispam.greylist), for the domains whose inbound policy turns it on: a new
# (client /24 or /64, sender, recipient) must retry after DELAY seconds and within RETRY_WINDOW;
# its network then skips greylisting for ALLOW_DAYS days. SKIP_NETWORKS are never greylisted.
MAILSUITE_GREYLIST_DELAY = env_int("MAILSUITE_GREYLIST_DELAY", 300, minimum=0)
MAILSUITE_GREYLIST_RETRY_WINDOW = env_int("MAILSUITE_GREYLIST_RETRY_WINDOW", 2 * 86400, minimum=60)
MAILSUITE_GREYLIST_ALLOW_DAYS = env_int("MAILSUITE_GREYLIST_ALLOW_DAYS", 35, minimum=1)
MAILSUITE_GREYLIST_SKIP_NETWORKS = env_networks("MAILSUITE_GREYLIST_SKIP_NETWORKS")
# Seconds the MX port waits before its greeting; a client that talks first is refused (0 = off;
# loopback and trusted clients are never made to wait).
MAILSUITE_SMTP_GREETING_DELAY = env_int("MAILSUITE_SMTP_GREETING_DELAY", 0, minimum=0, maximum=30)
# Dangerous attachments (antispam.attachments) where a domain's inbound policy does not say:
# reject (554 5.7.1), quarantine (into Junk) or allow.
MAILSUITE_ATTACHMENT_POLICY = env_str("MAILSUITE_ATTACHMENT_POLICY", "reject")
if MAILSUITE_ATTACHMENT_POLICY not in ("reject", "quarantine", "allow"):
    raise ImproperlyConfigured(f"MAILSUITE_ATTACHMENT_POLICY={MAILSUITE_ATTACHMENT_POLICY!r}: expected reject, quarantine or allow")
# A ClamAV daemon (host:port or a UNIX socket path): when set, every inbound message is scanned
# and none is delivered unscanned (scanner down: 451 4.7.1).
MAILSUITE_CLAMD = env_str("MAILSUITE_CLAMD")
if MAILSUITE_CLAMD and "/" not in MAILSUITE_CLAMD and not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", MAILSUITE_CLAMD):
    raise ImproperlyConfigured(f"MAILSUITE_CLAMD={MAILSUITE_CLAMD!r}: expected host:port or a UNIX socket path")
MAILSUITE_CLAMD_TIMEOUT = env_int("MAILSUITE_CLAMD_TIMEOUT", 30, minimum=1)

# Celery: by default an embedded broker in the data dir (kombu's filesystem transport),
# which needs no server; CELERY_BROKER_URL=redis://… or amqp://… for several machines.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = DATA_DIR / "celery" / "broker"
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT = "mailsuite.lib.filebroker:Transport"  # kombu's, minus a race
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(DATA_DIR / "celery" / "control"),
        "polling_interval": 0.2,  # seconds between looks at the folder (kombu's default: 1)
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celery" / "beat-schedule")
# Whatever the broker: without this directory beat dies at start, and with it the queue's
# periodic sweep (deferred mail would never be retried, nor a lost task's mail delivered).
(DATA_DIR / "celery").mkdir(parents=True, exist_ok=True)
CELERY_BEAT_SCHEDULE = {
    "queue-sweep": {"task": "mta.tasks.sweep", "schedule": float(MAILSUITE_QUEUE_SWEEP_SECONDS)},
    "prune": {"task": "mta.tasks.prune", "schedule": 86400.0},
    "spam-learn": {"task": "antispam.tasks.learn", "schedule": 60.0},  # users' moves into/out of Junk
    "spam-prune": {"task": "antispam.tasks.prune", "schedule": 86400.0},  # greylist, learned examples
    "fetch-external": {"task": "migration.tasks.fetch_external_accounts", "schedule": 60.0},  # due ones only
}

# SMTP limits (RFC 5321 §4.5.3.1 minimums are far below these).
MAILSUITE_MESSAGE_SIZE_LIMIT = env_bytes("MAILSUITE_MESSAGE_SIZE_LIMIT", 50 * 1024**2)
MAILSUITE_MAX_RECIPIENTS = env_int("MAILSUITE_MAX_RECIPIENTS", 100, minimum=1)
MAILSUITE_SMTP_TIMEOUT = env_int("MAILSUITE_SMTP_TIMEOUT", 300, minimum=1)
MAILSUITE_SMTP_MAX_CONNECTIONS = env_int("MAILSUITE_SMTP_MAX_CONNECTIONS", 1000, minimum=1)
MAILSUITE_SMTP_MAX_CONNECTIONS_PER_IP = env_int("MAILSUITE_SMTP_MAX_CONNECTIONS_PER_IP", 50, minimum=1)
# IMAP: autologout timers (RFC 9051 §5.4: at least 30 minutes once logged in) and bounds.
MAILSUITE_IMAP_TIMEOUT = env_int("MAILSUITE_IMAP_TIMEOUT", 30 * 60, minimum=1)
MAILSUITE_IMAP_PREAUTH_TIMEOUT = env_int("MAILSUITE_IMAP_PREAUTH_TIMEOUT", 60, minimum=1)
MAILSUITE_IMAP_MAX_CONNECTIONS = env_int("MAILSUITE_IMAP_MAX_CONNECTIONS", 5000, minimum=1)
MAILSUITE_IMAP_IDLE_POLL = env_int("MAILSUITE_IMAP_IDLE_POLL", 30, minimum=1)  # seconds; events wake IDLE sooner
# Worker processes sharing the IMAP ports (SO_REUSEPORT); 0 = one per CPU core.
MAILSUITE_IMAP_WORKERS = env_int("MAILSUITE_IMAP_WORKERS", 0, minimum=0)
# Worker processes per SMTP listener (SO_REUSEPORT); 0 = one per CPU core.
MAILSUITE_SMTP_WORKERS = env_int("MAILSUITE_SMTP_WORKERS", 0, minimum=0)
# Threads per process that run ORM work off the event loop.
MAILSUITE_DB_THREADS = env_int("MAILSUITE_DB_THREADS", 4, minimum=1)
MAILSUITE_DB_WRITE_THREADS = env_int("MAILSUITE_DB_WRITE_THREADS", 2, minimum=1)
MAILSUITE_SUBADDRESS_SEPARATOR = env_str("MAILSUITE_SUBADDRESS_SEPARATOR", "+")
if len(MAILSUITE_SUBADDRESS_SEPARATOR) != 1:
    raise ImproperlyConfigured("MAILSUITE_SUBADDRESS_SEPARATOR must be one character")
MAILSUITE_DEFAULT_QUOTA = env_bytes("MAILSUITE_DEFAULT_QUOTA", 1024**3)
# Change events between processes (mailstore.events): local, postgres or redis://host:port/db.
MAILSUITE_EVENT_BUS = env_str("MAILSUITE_EVENT_BUS", "postgres" if re.match(r"postgres|pgsql", env_str("DATABASE_URL")) else "local")
if not re.fullmatch(r"local|postgres|(postgres(ql)?|rediss?)://\S+", MAILSUITE_EVENT_BUS):
    raise ImproperlyConfigured(f"MAILSUITE_EVENT_BUS={MAILSUITE_EVENT_BUS!r}: expected local, postgres or redis://host:port/db")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "mailsuite",
    "accounts",
    "mailstore",
    "mta",
    "imap",
    "pop3",
    "webmail",
    "sieve",
    "antispam",  # sender authentication and spam checks (issue 9)
    "migration",  # mail import/export, IMAP migration, external accounts (issue 12)
    "secmail",  # S/MIME and OpenPGP: keys, sign/encrypt, verify/decrypt, WKD, Autocrypt (issue 11)
    "ops",  # client autoconfiguration, DNS doctor, metrics and health (issue 10)
    "django_htmx",  # htmx and its SSE extension as static files, and the template tag
    "drf_spectacular",  # the API's OpenAPI 3 schema (issue 10)
    "drf_spectacular_sidecar",  # Swagger UI and Redoc files for /api/docs/, served here (no CDN)
    "api",  # the REST API and its tokens (issue 10)
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.auth.ScopePermission"],
    "DEFAULT_PAGINATION_CLASS": "api.rest.CursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["api.rest.FieldFilter", "api.rest.AddressSearch", "api.rest.OrderingFilter"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "EXCEPTION_HANDLER": "api.rest.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "mailsuite API",
    "DESCRIPTION": "Domains, accounts, aliases, redirects, Sieve scripts, routes, the outbound queue and the "
    "audit logs. Authenticate with `Authorization: Bearer TOKEN` (tokens from `manage.py apitoken create`) "
    "or a signed-in admin session. Domain admins see and change only their domains.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
}

MIDDLEWARE = [
    "ops.middleware.RequestMetricsMiddleware",  # times everything below it for /metrics
    "ops.middleware.ServedDomainHostsMiddleware",  # autoconfig.DOMAIN & co. (before any Host check)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The browser's language (Accept-Language) unless the user chose one (cookie).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mailsuite.urls"
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
WSGI_APPLICATION = "mailsuite.wsgi.application"
ASGI_APPLICATION = "mailsuite.asgi.application"


# Several daemons write one SQLite file: WAL lets readers run beside a writer, IMMEDIATE
# takes the write lock at BEGIN so transactions never deadlock upgrading a read lock,
# and the timeout waits for a busy writer.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": (
        "PRAGMA journal_mode=WAL;PRAGMA synchronous=FULL;PRAGMA foreign_keys=ON;PRAGMA cache_size=-65536"
    ),
}


def _databases():
    url = env_str("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "mailsuite.db.sqlite3",
            "NAME": DATA_DIR / "mailsuite.sqlite3",
            # Daemons keep one connection per thread for their whole life.
            "CONN_MAX_AGE": None,
            "OPTIONS": SQLITE_OPTIONS,
            "TEST": {"NAME": DATA_DIR / "test.sqlite3"},
        }
    try:
        config = dj_database_url.parse(url, conn_max_age=None, conn_health_checks=True)
    except Exception as error:  # the library raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {error}") from None
    if config["ENGINE"].endswith("sqlite3"):
        config["ENGINE"] = "mailsuite.db.sqlite3"
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    return config


DATABASES = {"default": _databases()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "accounts.hashers.MailArgon2PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
# The languages the webmail is translated into.
LANGUAGES = [("en", "English"), ("es", "Español")]
# One catalogue for every user-facing page (webmail, secmail, migration, the spam pages). Listing it
# here lets `manage.py makemessages -l es` run from the top put strings of apps without a locale dir
# of their own (secmail/, migration/, templates/) into it; Django merges all catalogues at runtime.
LOCALE_PATHS = [BASE_DIR / "webmail" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise serves from here after collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "media"},
    },
    # Message bytes: written once, durable before the row that names them commits. Files
    # under DATA_DIR/blobs, or s3://BUCKET[/PREFIX]?endpoint=URL&region=NAME for several machines.
    "blobs": blob_storage_setting(env_str("MAILSUITE_BLOB_STORAGE"), DATA_DIR),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # pages pass the token to htmx themselves
# Cookies only over HTTPS (browsers also send them to http://localhost). Off only for a
# server reached over plain HTTP on another address, e.g. a test machine on a LAN.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("MAILSUITE_SECURE_COOKIES", True)
# A webmail session without "remember me" ends with the browser; with it, after this.
SESSION_COOKIE_AGE = env_int("MAILSUITE_SESSION_DAYS", 30, minimum=1) * 86400
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Logs go to stdout: plain text lines, or with MAILSUITE_LOG_FORMAT=json one JSON object per
# line with the structured fields (queue id, protocol, peer, account) for a log collector.
MAILSUITE_LOG_FORMAT = env_str("MAILSUITE_LOG_FORMAT", "plain").lower()
if MAILSUITE_LOG_FORMAT not in FORMATS:
    raise ImproperlyConfigured(f"MAILSUITE_LOG_FORMAT={MAILSUITE_LOG_FORMAT!r}: expected plain or json")
LOGGING = logging_config(MAILSUITE_LOG_FORMAT, env_str("MAILSUITE_LOG_LEVEL", "INFO"))

# Login throttling and sending limits (accounts)
# Failed logins are counted per client IP (IPv6 per network of MAILSUITE_LOGIN_IPV6_PREFIX
# bits) and per address, in a window that starts at the first failure. Reaching the count
# blocks that IP or address (no password is checked) for MAILSUITE_LOGIN_BLOCK_INITIAL
# seconds, twice as long for each further block in a row, up to MAILSUITE_LOGIN_BLOCK_MAX.
# A count of 0 turns that kind of throttling off. Loopback gets no exemption.
MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = env_int("MAILSUITE_LOGIN_MAX_FAILURES_PER_IP", 5, minimum=0)
MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT", 10, minimum=0)
MAILSUITE_LOGIN_FAILURE_WINDOW = env_int("MAILSUITE_LOGIN_FAILURE_WINDOW", 600, minimum=1)
MAILSUITE_LOGIN_BLOCK_INITIAL = env_int("MAILSUITE_LOGIN_BLOCK_INITIAL", 60, minimum=1)
MAILSUITE_LOGIN_BLOCK_MAX = env_int("MAILSUITE_LOGIN_BLOCK_MAX", 3600, minimum=1)
if MAILSUITE_LOGIN_BLOCK_MAX < MAILSUITE_LOGIN_BLOCK_INITIAL:
    raise ImproperlyConfigured("MAILSUITE_LOGIN_BLOCK_MAX must not be below MAILSUITE_LOGIN_BLOCK_INITIAL")
MAILSUITE_LOGIN_IPV6_PREFIX = env_int("MAILSUITE_LOGIN_IPV6_PREFIX", 64, minimum=1, maximum=128)
# Days the login audit (every login attempt, any protocol) is kept; pruned by a periodic job.
MAILSUITE_LOGIN_EVENT_DAYS = env_int("MAILSUITE_LOGIN_EVENT_DAYS", 30, minimum=1)
# Seconds a verified password is remembered (as a keyed hash) so repeated logins skip
# the slow password hash; 0 turns it off.
MAILSUITE_AUTH_CACHE_SECONDS = env_int("MAILSUITE_AUTH_CACHE_SECONDS", 300, minimum=0)
# Days expunged UIDs are remembered for QRESYNC clients (RFC 7162 VANISHED); older ones
# make a reconnecting client re-check what it holds.
MAILSUITE_EXPUNGED_DAYS = env_int("MAILSUITE_EXPUNGED_DAYS", 60, minimum=1)
# Sending limits per account (sliding windows); domains and accounts may override them. 0 = no limit.
MAILSUITE_SEND_MESSAGES_PER_HOUR = env_int("MAILSUITE_SEND_MESSAGES_PER_HOUR", 500, minimum=0)
MAILSUITE_SEND_RECIPIENTS_PER_DAY = env_int("MAILSUITE_SEND_RECIPIENTS_PER_DAY", 2000, minimum=0)
# Message security (secmail): off keeps no private key on the server (users can then only
# verify signatures and encrypt to others; their own keys stay in their mail clients).
MAILSUITE_SERVER_PRIVATE_KEYS = env_bool("MAILSUITE_SERVER_PRIVATE_KEYS", True)
