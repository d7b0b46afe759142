"""Constants that shape the token format and the schema. Never change them at runtime."""

from datetime import timedelta

from django.db import models
from django.utils.translation import gettext_lazy as _

# Base62: letters and digits only, so a double click selects the whole value and nothing needs escaping.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

TOKEN_PREFIX = "bpt_"  # "bearer portal token"; the underscore keeps double-click selection whole
PUBLIC_ID_LENGTH = 12  # ~71 bits: random, unique, the indexed lookup key; not secret
SECRET_LENGTH = 32  # ~190 bits from secrets.choice
SIGNATURE_LENGTH = 8  # ~47 bits of a keyed HMAC: forged values are refused before any query
TOKEN_LENGTH = len(TOKEN_PREFIX) + PUBLIC_ID_LENGTH + SECRET_LENGTH + SIGNATURE_LENGTH  # 56
LAST_CHARACTERS_LENGTH = 4
DIGEST_LENGTH = 64  # hex SHA-256

NAME_MAX_LENGTH = 100
PURPOSE_MAX_LENGTH = 500
USER_AGENT_MAX_LENGTH = 255
PATH_MAX_LENGTH = 255
LEGACY_KEY_MAX_LENGTH = 200
# Imported legacy keys must resist online guessing (see check_legacy_key_strength).
LEGACY_KEY_MIN_LENGTH = 16
LEGACY_KEY_MIN_DISTINCT = 8

API_PREFIX = "/api/"  # where portal/urls.py mounts tokens.api.urls; the middleware guards it
API_REALM = "api"
LEGACY_KEY_HEADER = "HTTP_REST_API_KEY"  # "Rest-Api-Key", any case
MIGRATION_GUIDE_PATH = "/docs/migration/"
FORWARD_AUTH_PATH = "/forward-auth"  # what reverse proxies ask for every request to a guarded API
# On SQLite, the database alias of the connection that writes the per-request usage records
# (portal/settings.py, tokens/usage/record.py); PostgreSQL has none.
USAGE_DATABASE = "usage"

PRESET_CHOICES = (
    ("1h", _("1 hour"), timedelta(hours=1)),
    ("1d", _("1 day"), timedelta(days=1)),
    ("7d", _("7 days"), timedelta(days=7)),
    ("30d", _("30 days"), timedelta(days=30)),
    ("90d", _("90 days"), timedelta(days=90)),
    ("1y", _("1 year"), timedelta(days=365)),
)
PRESETS = {key: delta for key, _label, delta in PRESET_CHOICES}

# Rotation: how long the old value keeps working beside the new one (the policy sets the longest).
OVERLAP_CHOICES = (
    ("none", _("None: the old value stops at once"), timedelta(0)),
    ("1h", _("1 hour"), timedelta(hours=1)),
    ("1d", _("1 day"), timedelta(days=1)),
    ("7d", _("7 days"), timedelta(days=7)),
)
DEFAULT_MAX_ROTATION_OVERLAP = timedelta(days=7)

# Least privilege: what a token may do, on top of its owner's permissions.
MAX_ALLOWED_IPS = 50
ALLOWED_IP_MAX_LENGTH = 64  # the longest IPv6 network in text is 43 characters; anything longer is not one
PERMISSION_MAX_LENGTH = 255
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(models.TextChoices):
    """A token's access level: read-only tokens may only use the safe methods."""

    READ = "read", _("Read only")
    READ_WRITE = "read_write", _("Read and write")


class Method(models.TextChoices):
    """How a request authenticated. The values are the words of the answers, logs, metrics and policy."""

    BEARER = "bearer", _("Bearer token")
    LEGACY_KEY = "legacy_key", _("Legacy API key")
    SESSION = "session", _("Browser session")


# Self-rotation notices: at most this many mails per rotation lineage in any hour (the rest are in
# the Activity Stream), so a token rotating itself in a loop cannot flood its owner's mailbox.
SELF_ROTATION_MAILS_PER_HOUR = 3
