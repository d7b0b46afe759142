"""Settings for the bearer-token portal, read from the environment (and `.env` if present)."""

import os
import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    CSRF_TRUSTED_ORIGINS=(list, []),
    TIME_ZONE=(str, "UTC"),
    TRUSTED_PROXIES=(list, []),
    SECURE_TLS=(bool, False),
    CONN_MAX_AGE=(int, 600),
    LOG_LEVEL=(str, "INFO"),
    SITE_URL=(str, "http://127.0.0.1:8000"),
    DATABASE_LOCK_TIMEOUT=(float, 5),
    DATABASE_STATEMENT_TIMEOUT=(float, 20),
    GITHUB_SECRET_SCANNING_KEYS=(str, ""),
)
environ.Env.read_env(BASE_DIR / ".env")

# Untracked folder for the SQLite database and secrets generated on first start.
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _persisted_secret(filename, make):
    """Return the secret kept in DATA_DIR/*filename*, creating it once with *make()*.

    Several gunicorn workers may start at the same moment: O_EXCL makes exactly one of
    them write the file and the others read what it wrote.
    """
    path = DATA_DIR / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                return value
            import time

            time.sleep(0.01)
        raise
    value = make()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


DEBUG = env("DEBUG")
SECRET_KEY = env.str("SECRET_KEY", default="") or _persisted_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# TOKEN_PEPPERS: "id=value,id=value". Token digests are HMACs under these, never under SECRET_KEY.
# The highest id signs new tokens; older ids keep verifying the tokens made with them.
TOKEN_PEPPERS = env.dict("TOKEN_PEPPERS", default={}) or {
    "1": _persisted_secret("token_pepper", lambda: secrets.token_urlsafe(48))
}

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")
SITE_URL = env("SITE_URL").rstrip("/")
# GitHub secret scanning: a file holding GitHub's public keys document (see docs/tokens.md); empty: off.
GITHUB_SECRET_SCANNING_KEYS = env("GITHUB_SECRET_SCANNING_KEYS")
# Client IPs are taken from X-Forwarded-For only when the direct peer is one of these proxies.
TRUSTED_PROXIES = env("TRUSTED_PROXIES")

INSTALLED_APPS = [
    "django.contrib.admin",
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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"),
}
_db = DATABASES["default"]
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
    _db["CONN_MAX_AGE"] = env("CONN_MAX_AGE")
else:
    # A new PostgreSQL connection per request costs more than the request; keep them, checked.
    _db["CONN_MAX_AGE"] = env("CONN_MAX_AGE")
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
                f"-c lock_timeout={int(env('DATABASE_LOCK_TIMEOUT') * 1000)}",
                f"-c statement_timeout={int(env('DATABASE_STATEMENT_TIMEOUT') * 1000)}",
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
TIME_ZONE = env("TIME_ZONE")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
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
if env("SECURE_TLS"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# One line per record on stdout, key=value, for a log collector. Request bodies and headers are never
# logged, so no token value can reach a log line.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r"},
    },
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"}},
    "root": {"handlers": ["stdout"], "level": env("LOG_LEVEL")},
    # Refused API calls are recorded as usage records; logging each 4xx again would only cost time.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "django.request": {"level": "ERROR"}},
}
