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

from tokens.constants import USAGE_DATABASE
from tokens.credentials import PEPPER_HINT, PepperError, parse_peppers
from tokens.issuers import url_problem

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
# Service accounts: members of a group named "<team><suffix>" (e.g. "payments-sa-managers", synced from
# the identity provider) hold the manager role for the team's service accounts. Empty: only the roles
# administrators grant in the admin.
SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX = _raw("SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX", "").strip()


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
    "portal.middleware.RequestIdMiddleware",  # first: every response, redirects included, has its id
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tokens.middleware.DatabaseUnavailableMiddleware",
    "portal.middleware.SessionMiddleware",  # Django's, with the store built on first use
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tokens.middleware.ApiAuthenticationMiddleware",
    "portal.middleware.MessageMiddleware",  # Django's, with the storage built on first use
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tokens.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

# Two engines (portal/text_templates.py): the project's .txt templates (mails) are plain text, rendered
# by the second engine without HTML escaping; everything else is HTML, escaped, by the first (the one
# Django's admin and Template() use).
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "loaders": [
                (
                    "django.template.loaders.cached.Loader",
                    ["portal.text_templates.HtmlLoader", "django.template.loaders.app_directories.Loader"],
                )
            ],
        },
    },
    {
        "NAME": "text",
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            "autoescape": False,
            "loaders": [("django.template.loaders.cached.Loader", ["portal.text_templates.TextLoader"])],
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
    # commits at NORMAL, on a connection of its own (below; tokens/usage/record.py, docs/performance.md).
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
    # The same file through a second connection kept at synchronous=NORMAL, for the per-request usage
    # INSERT alone (tokens/usage/record.py): on the main connection it had to switch the setting there
    # and back around its statement, two PRAGMAs a request, because every other commit there is FULL.
    # Kept per process like the main one; the test run uses the same test file through it ("MIRROR").
    DATABASES[USAGE_DATABASE] = {
        **_db,
        "OPTIONS": {
            **_db["OPTIONS"],
            "init_command": _db["OPTIONS"]["init_command"].replace("synchronous=FULL", "synchronous=NORMAL"),
        },
        "TEST": {"MIRROR": "default"},
    }
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
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

# One line per record on stdout, key=value, for a log collector. Request bodies and headers are never
# logged, so no token value can reach a log line.
LOG_LEVEL = _raw("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    _refuse("LOG_LEVEL", f"is {LOG_LEVEL!r}, not a log level", "Use DEBUG, INFO, WARNING, ERROR or CRITICAL.")
# LOG_FORMAT=json: one JSON object a line (portal/logs.py), for the application and gunicorn's access log.
LOG_FORMAT = _raw("LOG_FORMAT", "text").strip().lower()
if LOG_FORMAT not in ("text", "json"):
    _refuse(
        "LOG_FORMAT", f"is {LOG_FORMAT!r}, neither text nor json", "Set LOG_FORMAT=text or LOG_FORMAT=json."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request": {"()": "portal.logs.RequestContextFilter"}},
    "formatters": {
        # No credential in any line, whatever logged it (portal/redaction.py), in either format.
        "text": {
            "()": "portal.redaction.RedactingFormatter",
            "format": (
                "time=%(asctime)s level=%(levelname)s logger=%(name)s request_id=%(request_id)s "
                "msg=%(message)r"
            ),
        },
        "json": {"()": "portal.logs.json_formatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["request"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    # Refused API calls are recorded as usage records; logging each 4xx again would only cost time.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "django.request": {"level": "ERROR"}},
}

# /metrics (Prometheus) is open to these addresses or networks (the client address as TRUSTED_PROXIES
# lets the portal see it), and to bearer tokens whose owner holds tokens.view_metrics.
METRICS_ALLOWED_IPS = _networks("METRICS_ALLOWED_IPS")
# METRICS_ENABLED=false: nothing is counted and /metrics answers 404 (the benchmark's baseline).
METRICS_ENABLED = _bool("METRICS_ENABLED", "true")
# Organisation sign-in (OpenID Connect; docs/sso.md). Off while OIDC_ISSUER is empty. The provider's
# endpoints and keys are read from its discovery document on first use (tokens/identity/provider.py),
# so the portal starts while the provider is down; what can be told without it is checked here.
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
OIDC_ISSUER = _raw("OIDC_ISSUER", "").strip()
_issuer = re.fullmatch(r"(https?)://([^/\s?#:]+|\[[0-9a-fA-F:]+\])(:[0-9]{1,5})?(/[^\s?#]*)?", OIDC_ISSUER)
if OIDC_ISSUER and not _issuer:
    _refuse(
        "OIDC_ISSUER",
        f"is {OIDC_ISSUER!r}, not an issuer URL",
        "Use the provider's issuer exactly, e.g. OIDC_ISSUER=https://login.example.com/realms/staff.",
    )
if _issuer and _issuer[1] == "http" and _issuer[2].lower() not in _LOOPBACK_HOSTS:
    _refuse(
        "OIDC_ISSUER",
        f"is {OIDC_ISSUER!r}, plain HTTP to another machine",
        "Use the provider's https:// issuer (http:// is accepted for localhost only, for tests).",
    )
OIDC_CLIENT_ID = _raw("OIDC_CLIENT_ID", "").strip()
OIDC_CLIENT_SECRET = _raw("OIDC_CLIENT_SECRET", "").strip()
for _name, _value in (("OIDC_CLIENT_ID", OIDC_CLIENT_ID), ("OIDC_CLIENT_SECRET", OIDC_CLIENT_SECRET)):
    if OIDC_ISSUER and not _value:
        _refuse(
            _name,
            "is empty while OIDC_ISSUER is set",
            f"Register the portal with the provider and set {_name} to what it gives you.",
        )
OIDC_PROVIDER_NAME = _raw("OIDC_PROVIDER_NAME", "your organisation").strip() or "your organisation"
OIDC_SCOPES = " ".join(_raw("OIDC_SCOPES", "openid email profile").split())
if "openid" not in OIDC_SCOPES.split():
    _refuse(
        "OIDC_SCOPES",
        f"is {OIDC_SCOPES!r}, without openid",
        "Keep openid in the list, e.g. OIDC_SCOPES='openid email profile groups'.",
    )
# Empty: the provider sends no groups (Google), and groups are kept here (admin, provisioning) instead.
OIDC_GROUPS_CLAIM = _raw("OIDC_GROUPS_CLAIM", "groups").strip()
if not re.fullmatch(r"[A-Za-z0-9_:/.\-]{0,200}", OIDC_GROUPS_CLAIM):
    _refuse(
        "OIDC_GROUPS_CLAIM",
        f"is {OIDC_GROUPS_CLAIM!r}, not a claim name",
        "Name the claim that lists a person's groups, e.g. OIDC_GROUPS_CLAIM=groups.",
    )
OIDC_STAFF_GROUPS = _list("OIDC_STAFF_GROUPS")
OIDC_SUPERUSER_GROUPS = _list("OIDC_SUPERUSER_GROUPS")
# Who may still sign in with a local password: everyone, staff only (break-glass), or nobody.
PASSWORD_SIGN_IN = _raw("PASSWORD_SIGN_IN", "staff" if OIDC_ISSUER else "on").strip().lower()
if PASSWORD_SIGN_IN not in ("on", "staff", "off"):
    _refuse(
        "PASSWORD_SIGN_IN",
        f"is {PASSWORD_SIGN_IN!r}, not on, staff or off",
        "Set PASSWORD_SIGN_IN=on (everyone), staff (administrators only) or off (provider only).",
    )
if PASSWORD_SIGN_IN != "on" and not OIDC_ISSUER:
    _refuse(
        "PASSWORD_SIGN_IN",
        f"is {PASSWORD_SIGN_IN} while OIDC_ISSUER is empty, which would lock people out",
        "Configure the provider (OIDC_ISSUER) first, or set PASSWORD_SIGN_IN=on.",
    )
# Creating or rotating a token, or widening one, needs a sign-in within this many minutes.
SUDO_MINUTES = _raw("SUDO_MINUTES", "15").strip()
if not re.fullmatch(r"[0-9]{1,4}", SUDO_MINUTES) or not 1 <= int(SUDO_MINUTES) <= 1440:
    _refuse(
        "SUDO_MINUTES",
        f"is {SUDO_MINUTES!r}, not a number of minutes from 1 to 1440",
        "Set SUDO_MINUTES=15, for example.",
    )
SUDO_MINUTES = int(SUDO_MINUTES)
# Passwords go through the password backend, which applies PASSWORD_SIGN_IN; provider sign-ins through the
# OpenID Connect one, which matches people by issuer and subject only.
AUTHENTICATION_BACKENDS = [
    "tokens.identity.signin.PasswordBackend",
    "tokens.identity.oidc.OrganisationBackend",
]
TEMPLATES[0]["OPTIONS"]["context_processors"].append("tokens.identity.signin.organisation_sign_in")
# Keyless CI (tokens/exchange.py, docs/ci.md): the OpenID Connect issuers whose jobs may trade their own
# token for a short-lived portal token, and how long one exchange may wait for an issuer's keys.
OIDC_FEDERATION_ISSUERS = _list("OIDC_FEDERATION_ISSUERS")
for _issuer in OIDC_FEDERATION_ISSUERS:
    if _problem := url_problem(_issuer):
        _refuse(
            "OIDC_FEDERATION_ISSUERS",
            f"has {_issuer!r}, which {_problem}",
            "List issuer URLs separated by commas, exactly as the tokens' iss claim spells them, "
            "e.g. OIDC_FEDERATION_ISSUERS=https://token.actions.githubusercontent.com,https://gitlab.com.",
        )
OIDC_FEDERATION_TIMEOUT = _seconds("OIDC_FEDERATION_TIMEOUT", "3")
if not 0 < OIDC_FEDERATION_TIMEOUT <= 20:
    _refuse(
        "OIDC_FEDERATION_TIMEOUT",
        f"is {OIDC_FEDERATION_TIMEOUT}, outside 0 to 20 seconds",
        "Set a few seconds, e.g. OIDC_FEDERATION_TIMEOUT=3: a worker waits at most this long for an issuer.",
    )
# SCIM 2.0 provisioning at /scim/v2/ (django-scim2 with the adapters of tokens/identity/scim.py).
SCIM_SERVICE_PROVIDER = {
    "USER_ADAPTER": "tokens.identity.scim.ScimUser",
    "GROUP_ADAPTER": "tokens.identity.scim.ScimGroup",
    "USER_FILTER_PARSER": "tokens.identity.scim_filters.UserFilter",
    "GROUP_FILTER_PARSER": "tokens.identity.scim_filters.GroupFilter",
    "SERVICE_PROVIDER_CONFIG_MODEL": "tokens.identity.scim.ServiceProviderConfig",
    "BASE_LOCATION_GETTER": "tokens.identity.scim.base_location",
    "SCHEMAS_GETTER": "tokens.identity.scim.schemas",
    "NETLOC": "unused: locations follow the address the client used",
    "AUTHENTICATION_SCHEMES": [{"type": "oauthbearertoken", "name": "Bearer token"}],
}
