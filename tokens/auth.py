"""Authenticate an API request: request in, Authentication out, or an AuthError with RFC 6750 fields.

This is the hot path of every API call, so it is written for cost:

* shape and signature are checked first, with no query (``credentials.parse``);
* a well-formed token costs one indexed raw SELECT that brings the owner along, and the token's
  access level, narrowed permissions and address allow-list, and its rotation (when it was rotated,
  when the overlap ends): their checks and the deprecation headers need no other query;
* a legacy key costs one raw SELECT that brings the owner, the policy and the end of the brownout
  window open now (if any) along; the cutover rule (``cutover_verdict``) then decides without a query;
* on a kept PostgreSQL connection that lookup is also the health check (see ``_fetch``).

Nothing is cached between requests: a revoked token, an expired token, a deactivated owner or a
changed policy is seen by the very next request on every process and node.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from . import credentials
from .constants import LEGACY_KEY_HEADER, SAFE_METHODS, TOKEN_PREFIX, Access, Method
from .http import client_ip
from .models import BrownoutWindow, LegacyApiKey, SitePolicy, Token
from .models.legacy import clean_legacy_key
from .models.policy import cutover_verdict
from .models.restrictions import address_allowed, load_list

_BEARER_RE = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+(\S+)")


class AuthError(Exception):
    """Refuse the request with 401 and an RFC 6750 ``WWW-Authenticate`` challenge."""

    def __init__(
        self,
        description,
        *,
        error="invalid_token",
        credential=None,
        legacy=False,
        looked_up=False,
        like_unknown=False,
        reason=None,
    ):
        super().__init__(description)
        self.error = error
        self.description = description
        # The well-formed credential that was refused (expired, revoked…), so the attempt is recorded.
        self.credential = credential
        # A refused legacy key, known or not: the answer points to the migration guide.
        self.legacy = legacy or (credential is not None and credential.method == Method.LEGACY_KEY)
        # The value was looked up in the database (it could have been a guess): the failure counts
        # against the client's limit. Values refused by their shape or signature cost no query and do not.
        self.looked_up = looked_up or credential is not None
        # Answer exactly as for an unknown value (no deprecation headers), though the use is recorded.
        self.like_unknown = like_unknown
        # Why, in one word of tokens.metrics.OUTCOMES (for counting, never shown to the client).
        self.reason = reason or ("unknown" if self.looked_up else "malformed")


class Refused(Exception):
    """Refuse a valid credential with 403: what it asks is more than the token may do."""

    def __init__(self, description, *, error, credential, scope=None):
        super().__init__(description)
        self.error = error  # "insufficient_scope" or "ip_not_allowed"
        self.description = description
        self.scope = scope  # the scope the request needed ("write"), for the challenge
        self.credential = credential
        self.reason = "address" if error == "ip_not_allowed" else "insufficient_scope"


@dataclass
class Authentication:
    """Who a request authenticated as, and with which credential (``request.auth``)."""

    method: Method  # BEARER or LEGACY_KEY, never SESSION
    id: int
    user: object
    first_use: bool
    deprecated_at: object = None  # legacy keys only
    sunset_at: object = None
    last_used_at: object = None
    # Least privilege (bearer tokens; legacy keys keep full access).
    access: str = Access.READ_WRITE
    permissions: object = None  # None: all of the owner's; else a list of "app_label.codename"
    allowed_ips: object = ()
    # A rotated bearer token in its overlap: when it was rotated and when its value stops (else None).
    rotated_at: object = None
    rotation_ends_at: object = None
    # Served, but the rehearsed security level would refuse it (recorded with the use).
    would_refuse: bool = False
    # The address of the last accepted use: a request from it cannot be from a new address.
    last_used_ip: str | None = None

    @property
    def token_id(self):
        """The bearer token's id, else None."""
        return self.id if self.method == Method.BEARER else None

    @property
    def legacy_key_id(self):
        """The legacy key's id, else None."""
        return self.id if self.method == Method.LEGACY_KEY else None


def _aware(value):
    # SQLite hands back naive UTC datetimes from a raw cursor (text for an aggregate, which has no
    # declared type); PostgreSQL aware ones.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@lru_cache(maxsize=1)
def _user_columns():
    User = get_user_model()
    fields = User._meta.concrete_fields
    return (
        User,
        [f.attname for f in fields],
        ", ".join(f"u.{connection.ops.quote_name(f.column)}" for f in fields),
    )


def _build_user(values):
    User, names, _sql = _user_columns()
    user = User.from_db(connection.alias, names, [_aware(v) if hasattr(v, "tzinfo") else v for v in values])
    return user


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


@lru_cache(maxsize=2)
def _token_sql(vendor):
    User, _names, user_sql = _user_columns()
    return (
        "SELECT t.id, t.digest, t.pepper_id, t.expires_at, t.revoked_at, t.last_used_at, t.last_used_ip, "
        "t.access, t.permissions, t.allowed_ips, t.rotated_at, t.rotation_ends_at, "
        f"{user_sql} FROM {_table(Token)} t JOIN {_table(User)} u ON u.id = t.user_id "
        "WHERE t.public_id = %s"
    )


@lru_cache(maxsize=8)
def _legacy_sql(vendor, n_digests):
    User, _names, user_sql = _user_columns()
    placeholders = ", ".join(["%s"] * n_digests)
    return (
        "SELECT k.id, k.digest, k.pepper_id, k.revoked_at, k.last_used_at, k.last_used_ip, "
        "p.security_level, p.rehearsal_level, p.legacy_deprecated_at, p.legacy_sunset_at, "
        # The brownout open now: a range scan of the few windows not yet over (index brownout_ends).
        f"(SELECT MAX(b.ends_at) FROM {_table(BrownoutWindow)} b "
        "WHERE b.ends_at > %s AND b.starts_at <= %s), "
        f"{user_sql} FROM {_table(LegacyApiKey)} k JOIN {_table(User)} u ON u.id = k.user_id "
        f"JOIN {_table(SitePolicy)} p ON p.id = 1 WHERE k.digest IN ({placeholders})"
    )


def forget_cached_settings(*, setting, **kwargs):
    """Drop the cached SQL when the user model changes (``setting_changed``, in tests)."""
    if setting == "AUTH_USER_MODEL":
        for cached in (_user_columns, _token_sql, _legacy_sql):
            cached.cache_clear()


def _fetch(sql, params):
    """Run the request's lookup and return all its rows; the lookup doubles as the health check.

    With CONN_HEALTH_CHECKS, Django sends ``SELECT 1`` before the first query of every request on a
    kept connection: on PostgreSQL one more round trip per API call. The lookup is a read and safe
    to repeat, so it does the check itself: if the kept connection turns out to be dead, it is
    dropped and the lookup runs once more on a new one, which is what the health check would do.
    """
    checks_here = (
        connection.connection is not None
        and connection.health_check_enabled
        and not connection.health_check_done
        and not connection.in_atomic_block
    )
    if checks_here:
        connection.health_check_done = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except (InterfaceError, OperationalError):
        if not checks_here:
            raise
        connection.close()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def authenticate_bearer(value):
    """Return the Authentication for bearer token *value*, or raise AuthError."""
    # Shape and signature first: anything not issued here is refused before any query.
    try:
        parsed = credentials.parse(value)
    except credentials.MalformedToken:
        raise AuthError(_("The token is malformed or was not issued by this site.")) from None
    rows = _fetch(_token_sql(connection.vendor), [parsed.public_id])
    row = rows[0] if rows else None
    # A known id with the wrong secret gets the same answer as an unknown id: no enumeration.
    if row is None or not credentials.matches(parsed, row[1], row[2]):
        raise AuthError(_("The token is not valid."), looked_up=True)
    token_id, _digest, _pepper, expires_at, revoked_at, last_used_at, last_used_ip = row[:7]
    access, permissions, allowed_ips, rotated_at, rotation_ends_at = row[7:12]
    user = _build_user(row[12:])
    rotation_ends_at = _aware(rotation_ends_at)
    credential = Authentication(
        Method.BEARER,
        token_id,
        user,
        first_use=last_used_at is None,
        last_used_ip=last_used_ip,
        access=access,
        # An unrestricted token's columns read NULL and "[]": no JSON parsing on its path.
        permissions=None if permissions is None else load_list(permissions),
        allowed_ips=() if allowed_ips in ("[]", []) else load_list(allowed_ips),
        rotated_at=_aware(rotated_at),
        rotation_ends_at=rotation_ends_at,
    )
    now = timezone.now()
    if revoked_at is not None:
        raise AuthError(_("The token has been revoked."), credential=credential, reason="revoked")
    # The end of a rotation's overlap is a revocation that needs no job: the very moment it passes,
    # on every process and node, the old value is refused.
    if rotation_ends_at is not None and rotation_ends_at <= now:
        raise AuthError(
            _("The token was rotated and its overlap has ended: use its replacement."),
            credential=credential,
            reason="rotated",
        )
    if expires_at is not None and _aware(expires_at) <= now:
        raise AuthError(_("The token has expired."), credential=credential, reason="expired")
    if not user.is_active:
        raise AuthError(_("The token's owner is deactivated."), credential=credential, reason="deactivated")
    if credential.permissions is not None:
        narrow_permissions(user, credential.permissions)
    return credential


UNKNOWN_LEGACY_KEY = _lazy("The API key is not valid. Use a bearer token (Authorization: Bearer <token>).")


def narrow_permissions(user, permissions):
    """Let *user* hold, for this request, only those of *permissions* it holds itself right now.

    The owner's own answer is asked first-hand on each check (its backends read the database once per
    request), so a permission taken from the owner is gone from the token at once, and one given to
    the owner never reaches a token that was not narrowed to it. Superusers too: their "everything"
    is cut down to the list. Per instance, so only this request's user object is affected.
    """
    allowed = frozenset(permissions)
    owner = type(user)

    def has_perm(perm, obj=None):
        return perm in allowed and owner.has_perm(user, perm, obj)

    def has_module_perms(app_label):
        return any(p.startswith(f"{app_label}.") for p in allowed) and owner.has_module_perms(user, app_label)

    def get_all_permissions(obj=None):
        return owner.get_all_permissions(user, obj) & allowed

    user.has_perm = has_perm
    user.has_module_perms = has_module_perms
    user.get_all_permissions = get_all_permissions


def check_restrictions(credential, *, method, ip):
    """Raise Refused unless the token may be used from address *ip* for *method*.

    Behind forward authentication *method* is the original request's (tokens/gateway.py), which the
    proxy states, and *ip* the client's, which a trusted proxy states.
    """
    # The address first: from outside the allow-list a token may do nothing at all.
    if credential.allowed_ips and not address_allowed(credential.allowed_ips, ip):
        seen = ip or _("an unknown address")
        raise Refused(
            _("This token may not be used from %(address)s.") % {"address": seen},
            error="ip_not_allowed",
            credential=credential,
        )
    if credential.access == Access.READ and method not in SAFE_METHODS:
        raise Refused(
            _("This token is read-only: it may only make GET, HEAD and OPTIONS requests."),
            error="insufficient_scope",
            scope="write",
            credential=credential,
        )


def authenticate_legacy(key, *, now=None):
    """Return the Authentication for legacy API key *key* at *now*, or raise AuthError."""
    try:
        clean_legacy_key(key)
    except ValidationError:
        raise AuthError(_("The API key is malformed."), legacy=True) from None
    digests = credentials.legacy_digests(key)
    now = now or timezone.now()
    moment = connection.ops.adapt_datetimefield_value(now)
    rows = _fetch(_legacy_sql(connection.vendor, len(digests)), [moment, moment, *digests.values()])
    row = next((r for r in rows if digests.get(r[2]) == r[1]), None)
    if row is None:
        raise AuthError(UNKNOWN_LEGACY_KEY, legacy=True, looked_up=True)
    key_id, _digest, _pepper, revoked_at, last_used_at, last_used_ip = row[:6]
    level, rehearsal, deprecated_at, sunset_at, brownout = row[6:11]
    user = _build_user(row[11:])
    credential = Authentication(
        Method.LEGACY_KEY,
        key_id,
        user,
        first_use=last_used_at is None,
        deprecated_at=_aware(deprecated_at),
        sunset_at=_aware(sunset_at),
        last_used_at=_aware(last_used_at),
        last_used_ip=last_used_ip,
    )
    if revoked_at is not None:
        # Answered exactly like an unknown key: "has been revoked" would tell a guesser that the value
        # was once a key. The refusal is still recorded as a use of this key, for its owner and admins.
        raise AuthError(UNKNOWN_LEGACY_KEY, credential=credential, like_unknown=True, reason="revoked")
    verdict = cutover_verdict(
        method=Method.LEGACY_KEY,
        security_level=level,
        rehearsal_level=rehearsal,
        sunset_at=credential.sunset_at,
        brownout_ends_at=_aware(brownout),
        now=now,
    )
    if verdict.refusal is not None:
        raise AuthError(str(verdict.refusal), credential=credential, reason="level")
    credential.would_refuse = verdict.would_refuse
    if not user.is_active:
        raise AuthError(_("The API key's owner is deactivated."), credential=credential, reason="deactivated")
    newest = credentials.peppers()[0].id
    if row[2] != newest:
        # Legacy keys have no signature naming their pepper and never expire, so rotation cannot wait
        # for them: re-digest under the newest pepper on first use (rare; a cheap indexed UPDATE).
        LegacyApiKey.objects.filter(pk=key_id, pepper_id=row[2]).update(
            digest=digests[newest], pepper_id=newest
        )
    return credential


def authenticate(request, *, method=None, ip=None):
    """Return the Authentication the request carries, None when it carries none, or raise AuthError/Refused.

    *method* and *ip*: the method the credential is used for and the client's address, as the entry read
    them (``tokens.uses.Use``); the request's own method and ``client_ip()`` when not given.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    if header:
        match = _BEARER_RE.fullmatch(header.strip())
        if match:
            credential = authenticate_bearer(match.group(1))
            check_restrictions(
                credential,
                method=method or request.method,
                ip=client_ip(request) if ip is None else ip,
            )
            return credential
        # A header that tries to be ours and is malformed is refused, never ignored: ignoring it would
        # let the request go on as the browser session. Other schemes (a proxy's Basic…) are not ours.
        if header.lstrip()[:6].lower() == "bearer" or TOKEN_PREFIX in header:
            raise AuthError(_("The Authorization header must read: Bearer <token>."))
    # Bearer wins when both are sent; the legacy header is only looked at without one.
    key = request.META.get(LEGACY_KEY_HEADER)
    if key is not None:
        return authenticate_legacy(key.strip())
    return None
