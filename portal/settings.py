"""Settings for the bearer-token portal, read from the environment (and `.env` if present).

Every value a person sets is checked here, at import, which both `manage.py` and `gunicorn portal.wsgi`
do first: a setting that cannot work stops the process with one line that names it and says how to fix
it, never a traceback and never a server that runs on a setting it misread.
"""

import ipaddress
import logging
import os
import re
import secrets
import sys
import time
import zoneinfo
from pathlib import Path

import environ

from tokens.credentials import PEPPER_HINT, PepperError, parse_peppers

BASE_DIR = Path(__file__).resolve().parent.parent

# gunicorn stops the whole server ("App failed to load") when a worker exits with this code, instead of
# starting worker after worker; manage.py simply exits with it.
CONFIGURATION_ERROR = 4


def _refuse(name, problem, fix):
    """Stop the process with one line on stderr naming the setting *name*, its *problem* and the *fix*."""
    sys.stderr.write(f"Configuration error: {name} {problem}. {fix}\n")
    sys.stderr.flush()
    sys.exit(CONFIGURATION_ERROR)


env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")


def _raw(name, default):
    return os.environ.get(name, default)


def _bool(name, default):
    # django-environ reads any unknown word as False: "SECURE_TLS=ture" would silently switch TLS off.
    raw = _raw(name, default).strip().lower()
    if raw in ("1", "true", "yes", "on", "y"):
        return True
    if raw in ("0", "false", "no", "off", "n", ""):
        return False
    _refuse(name, f"is {raw!r}, which is neither true nor false", f"Set {name}=true or {name}=false.")


def _whole_number(name, default):
    raw = _raw(name, default).strip()
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        _refuse(
            name, f"is {raw!r}, not a whole number of seconds", f"Set {name} to 0 or more, e.g. {name}=600."
        )
    return int(raw)


def _seconds(name, default):
    raw = _raw(name, default).strip()
    if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,3})?", raw):
        _refuse(
            name, f"is {raw!r}, not a number of seconds", f"Set {name} to 0 (off) or more, e.g. {name}=5."
        )
    return float(raw)


def _list(name, default=""):
    return [item.strip() for item in _raw(name, default).split(",") if item.strip()]


def _networks(name):
    items = _list(name)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            _refuse(
                name,
                f"has {item!r}, which is not an IP address or network",
                f"List addresses or networks separated by commas, e.g. {name}=10.0.0.1,192.168.0.0/24.",
            )
    return items


def _private_folder(path):
    """Create *path* readable by this account only (0700), and tighten it if it exists looser.

    The folder holds the SQLite database (session keys, digests) and the generated secrets.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as error:
        _refuse(
            "DATA_DIR",
            f"({path}) cannot be created or made private: {error.strerror}",
            "Point DATA_DIR at a folder this account owns.",
        )
    return path


DEBUG = _bool("DEBUG", "false")
# Untracked folder for the SQLite database and secrets generated on first start.
DATA_DIR = _private_folder(Path(_raw("DATA_DIR", str(BASE_DIR / "data"))))


def _persisted_secret(filename, make):
    """Return the secret kept in DATA_DIR/*filename*, creating it once with *make()*.

    Several gunicorn workers may start at the same moment: O_EXCL makes exactly one of
    them write the file and the others read what it wrote.
    """
    path = DATA_DIR / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # an older version or a copy left it readable by others
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.01)
        raise
    value = make()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


SECRET_KEY = _raw("SECRET_KEY", "") or _persisted_secret("secret_key", lambda: secrets.token_urlsafe(50))
# TOKEN_PEPPERS: "id=value,id=value". Token digests are HMACs under these, never under SECRET_KEY.
# The highest id signs new tokens; older ids keep verifying the tokens made with them. The rules are
# those of the system check (tokens.credentials.pepper_problems).
if _raw("TOKEN_PEPPERS", "").strip():
    try:
        TOKEN_PEPPERS = parse_peppers(_raw("TOKEN_PEPPERS", ""))
    except PepperError as error:
        _refuse("TOKEN_PEPPERS", f"cannot be used: {error}", PEPPER_HINT + ".")
else:
    TOKEN_PEPPERS = {"1": _persisted_secret("token_pepper", lambda: secrets.token_urlsafe(48))}

ALLOWED_HOSTS = _list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = _list("CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not re.fullmatch(r"https?://[^/\s]+", _origin):
        _refuse(
            "CSRF_TRUSTED_ORIGINS",
            f"has {_origin!r}, which is not an origin",
            "List origins with their scheme and no path, "
            "e.g. CSRF_TRUSTED_ORIGINS=https://tokens.example.com.",
        )
SITE_URL = _raw("SITE_URL", "http://127.0.0.1:8000").strip().rstrip("/")
if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", SITE_URL):
    _refuse(
        "SITE_URL",
        f"is {SITE_URL!r}, not an http(s) address",
        "Set the address people open, e.g. SITE_URL=https://tokens.example.com.",
    )
# GitHub secret scanning: a file holding GitHub's public keys document (see docs/tokens.md); empty: off.
GITHUB_SECRET_SCANNING_KEYS = _raw("GITHUB_SECRET_SCANNING_KEYS", "").strip()
# Client IPs are taken from X-Forwarded-For only when the direct peer is one of these proxies.
TRUSTED_PROXIES = _networks("TRUSTED_PROXIES")


def _limit(name, default):
    """Read a failure limit: a whole number of attempts, at least 1 (0 would refuse every attempt)."""
    try:
        value = env.int(name, default=default)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 1_000_000:
        _refuse(
            name,
            f"is {_raw(name, '')!r}, not a whole number of attempts from 1 to 1000000",
            f"Set {name}={default} (the default) or another limit.",
        )
    return value


# Failure limits (tokens/throttle.py): attempts allowed per window before the next one is refused.
# Sign-in: per username and per client address, in 15 minutes.
SIGN_IN_FAILURES_PER_USERNAME = _limit("SIGN_IN_FAILURES_PER_USERNAME", 5)
SIGN_IN_FAILURES_PER_ADDRESS = _limit("SIGN_IN_FAILURES_PER_ADDRESS", 20)
# Password reset mails: per e-mail address and per client address, in an hour.
PASSWORD_RESETS_PER_EMAIL = _limit("PASSWORD_RESETS_PER_EMAIL", 3)
PASSWORD_RESETS_PER_ADDRESS = _limit("PASSWORD_RESETS_PER_ADDRESS", 10)
# Refused API credentials per client address, in a minute (a CI fleet behind one NAT may need more).
API_FAILURES_PER_ADDRESS = _limit("API_FAILURES_PER_ADDRESS", 30)
# Leak reports (/api/credentials/revoke) per client address, in 10 minutes.
LEAK_REPORTS_PER_ADDRESS = _limit("LEAK_REPORTS_PER_ADDRESS", 30)

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # django.contrib.admin with the throttled sign-in (portal/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "tokens",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tokens.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tokens.middleware.ApiAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tokens.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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

_DATABASE_FIX = (
    "Use sqlite:////absolute/path/portal.sqlite3 or postgres://user:password@host:5432/name "
    "(percent-encode special characters in the password)."
)
try:
    # The URL itself is never printed: it may hold a password.
    _database_url = _raw("DATABASE_URL", f"sqlite:///{DATA_DIR / 'portal.sqlite3'}")
    DATABASES = {"default": env.db_url_config(_database_url)}
except Exception:  # django-environ raises ValueError, KeyError or ImproperlyConfigured as it goes
    _refuse("DATABASE_URL", "cannot be read as a database URL", _DATABASE_FIX)
_db = DATABASES["default"]
_ENGINES = ("django.db.backends.sqlite3", "django.db.backends.postgresql")
if _db.get("ENGINE") not in _ENGINES or not _db.get("NAME"):
    _refuse(
        "DATABASE_URL",
        "names no SQLite file or PostgreSQL database (the two this portal supports)",
        _DATABASE_FIX,
    )
CONN_MAX_AGE = _whole_number("CONN_MAX_AGE", "600")
# PostgreSQL only; read on every engine so that a mistake is told at once, not on the first deployment.
DATABASE_LOCK_TIMEOUT = _seconds("DATABASE_LOCK_TIMEOUT", "5")
DATABASE_STATEMENT_TIMEOUT = _seconds("DATABASE_STATEMENT_TIMEOUT", "20")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and one writer work at once across gunicorn workers; the busy timeout makes a
    # writer wait instead of failing with "database is locked"; IMMEDIATE takes the write lock at BEGIN
    # so two transactions never deadlock upgrading read locks. synchronous=FULL syncs every commit
    # to disk before it returns, so no change a person or an administrator made (a revocation, a
    # deactivated user, a policy) can come back after a power cut; only the per-request usage INSERT
    # switches to NORMAL for its own statement (UsageRecordQuerySet.record, docs/performance.md).
    # A checkpoint (copying the WAL into the database file, with two fsyncs) runs inside whichever
    # request commits past the threshold: every 10,000 pages instead of SQLite's 1,000 costs a
    # request about half as much on average.
    _db.setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=FULL;PRAGMA foreign_keys=ON;"
                "PRAGMA wal_autocheckpoint=10000"
            ),
        }
    )
    # A file, not memory, so that gunicorn servers started by the live tests share it.
    _db.setdefault("TEST", {})["NAME"] = str(DATA_DIR / "test_portal.sqlite3")
    # Opening a SQLite connection (file, pragmas, Django's SQL functions) costs far more than the
    # token check itself; keep one per process. Every autocommitted statement still reads the latest
    # commit, so a revocation is seen by the very next request.
    _db["CONN_MAX_AGE"] = CONN_MAX_AGE
else:
    # A new PostgreSQL connection per request costs more than the request; keep them, checked.
    _db["CONN_MAX_AGE"] = CONN_MAX_AGE
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Nothing waits forever (docs/security.md, "Lock order"). Every transaction here holds its row
    # locks for milliseconds, so a lock wait of 5 s means something is stuck: the waiting request fails
    # closed with a 503 (PostgreSQL's LockNotAvailable is a DatabaseError) instead of piling up
    # workers. 20 s per statement stays under gunicorn's 30 s worker timeout, so a runaway query
    # ends as a 503 from the worker rather than a killed worker. 0 switches either off (for example
    # DATABASE_STATEMENT_TIMEOUT=0 for a migration that builds an index on a large table).
    _db["OPTIONS"]["options"] = " ".join(
        filter(
            None,
            [
                _db["OPTIONS"].get("options", ""),
                f"-c lock_timeout={int(DATABASE_LOCK_TIMEOUT * 1000)}",
                f"-c statement_timeout={int(DATABASE_STATEMENT_TIMEOUT * 1000)}",
            ],
        )
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The database cache is shared by every process and node, which the sign-in throttle needs.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "portal_cache",
        # The default of 300 entries would let a burst of failed sign-ins from many addresses push
        # the throttle's own counters out; expired entries are still culled as the table fills.
        "OPTIONS": {"MAX_ENTRIES": 1_000_000},
    }
}

# A failed CSRF check under /api/ answers in the API's JSON error shape.
CSRF_FAILURE_VIEW = "tokens.api.views.csrf_failure"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "profile"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = _raw("TIME_ZONE", "UTC").strip()
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (ValueError, zoneinfo.ZoneInfoNotFoundError):
    _refuse(
        "TIME_ZONE", f"is {TIME_ZONE!r}, not a known time zone", "Use a name such as UTC or Europe/Paris."
    )
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

try:
    EMAIL_CONFIG = env.email_url_config(_raw("EMAIL_URL", "consolemail://"))
except Exception:  # as for DATABASE_URL: never print the URL, it may hold a password
    _refuse(
        "EMAIL_URL",
        "cannot be read as a mail server URL",
        "Use e.g. smtp+tls://user:password@mail.example.com:587 or consolemail://.",
    )
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="portal@localhost")

# Security headers. HSTS and secure cookies only make sense when the site is served over TLS.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
# The CSRF cookie stays readable by scripts (Django's default): a browser script that writes to the API
# with the session sends it back as X-CSRFToken. HttpOnly would add no protection here.
if _bool("SECURE_TLS", "false"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# One line per record on stdout, key=value, for a log collector. Request bodies and headers are never
# logged, so no token value can reach a log line.
LOG_LEVEL = _raw("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    _refuse("LOG_LEVEL", f"is {LOG_LEVEL!r}, not a log level", "Use DEBUG, INFO, WARNING, ERROR or CRITICAL.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"}
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    # Refused API calls are recorded as usage records; logging each 4xx again would only cost time.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "django.request": {"level": "ERROR"}},
}
