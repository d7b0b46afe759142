"""Check a credential for a request and record its use, for every entry that takes a credential.

The API's middleware, ``/forward-auth`` (gateway.py), RFC 7662 introspection, SCIM and ``/metrics`` all
go through here. The entry reads what the request says about its sender once, into a ``Use`` (the
method and path the credential is used for, the client's address, its user agent, when the check
began); every later step (the failure limit, the address allow-list, the record of a refusal or a use,
the new-address alert) reads them from the Use, never from the request again.
"""

import logging
import time
from dataclasses import dataclass
from functools import partial

from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date

from . import metrics
from .auth import AuthError, Refused, authenticate
from .constants import LEGACY_KEY_HEADER, MIGRATION_GUIDE_PATH, Method
from .errors import refused, service_unavailable, too_many_requests, unauthorized
from .http import client_ip
from .models import LegacyApiKey, RefusedClient, Token, TokenEvent
from .models.alerts import is_new_address, record_new_address
from .models.legacy import clean_legacy_key
from .throttle import api_client_locked, count_api_failure
from .usage.record import record, record_with

log = logging.getLogger(__name__)

MIGRATION_LINK = f'<{MIGRATION_GUIDE_PATH}>; rel="deprecation"; type="text/plain"'


@dataclass(frozen=True)
class Use:
    """One use of a credential, as its entry read it from the request.

    *method* and *path* are what the credential is used for: for the API the request's own; behind
    forward authentication (tokens/gateway.py) the guarded request's, as a trusted proxy states them.
    *ip* is the client's address (``client_ip``: believed from trusted proxies only), *user_agent* its
    User-Agent header (None when it sent none), *started* when the check began (``time.perf_counter``).
    """

    method: str
    path: str
    ip: str | None
    user_agent: str | None
    started: float
    entry: str = "api"  # where the check is asked, for the metrics: api, forward_auth, introspection…

    @classmethod
    def of(cls, request, *, entry="api", method=None, path=None, started=None):
        """Return the Use of *request* at *entry*: its own method and path unless others are given."""
        return cls(
            method=method or request.method,
            path=path or request.path,
            ip=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT"),
            started=time.perf_counter() if started is None else started,
            entry=entry,
        )


def _carries_a_legacy_key(request):
    """Return True when the request has a Rest-Api-Key header of a shape that reaches the lookup."""
    key = request.META.get(LEGACY_KEY_HEADER)
    if key is None:
        return False
    try:
        clean_legacy_key(key.strip())
    except ValidationError:
        return False
    return True


def authenticate_use(request, use):
    """Run the API's credential checks on *request* for *use*; every entry shares them.

    Return ``(credential, None)`` for an accepted credential, ``(None, None)`` when the request carries
    none, and ``(None, response)`` for a refusal (401, 403, 429 or 503), already recorded as a use.
    """
    try:
        # A legacy key has no signature, so any value of the right shape reaches the lookup and may be
        # a guess: a client that has failed too often is stopped before it (one indexed read). Bearer
        # tokens skip this read: a guessed one fails its signature before any query.
        if _carries_a_legacy_key(request) and (wait := api_client_locked(use.ip)):
            metrics.count_check(use.entry, Method.LEGACY_KEY, "limit")
            return None, too_many_requests(wait)
        credential = authenticate(request, method=use.method, ip=use.ip)
        metrics.observe_check(use.entry, use.started)
        return credential, None
    except AuthError as refusal:
        metrics.observe_check(use.entry, use.started)
        return None, refuse(use, refusal)
    except Refused as refusal:
        metrics.observe_check(use.entry, use.started)
        # A read-only token writing, or a token used from outside its allow-list: refused and recorded.
        response = refused(refusal)
        return None, record_use(use, refusal.credential, response, accepted=False, reason=refusal.reason)
    except DatabaseError:
        # Fail closed: without the database nobody is authenticated, nor treated as anonymous.
        log.error("database unavailable during authentication")
        metrics.count_check(use.entry, _kind(request), "unavailable")
        return None, service_unavailable()


def _kind(request):
    return Method.BEARER if request.META.get("HTTP_AUTHORIZATION") else Method.LEGACY_KEY


def refuse(use, refusal):
    """Answer a refused credential: 401, or 429 once the client has failed too often; record it.

    Only failures write here, so a client with a valid credential never pays for the limit.
    """
    kind = Method.LEGACY_KEY if refusal.legacy else Method.BEARER
    wait = None
    if refusal.looked_up:
        try:
            # Counted atomically with the attempt itself, so parallel guesses cannot pass the limit.
            wait = count_api_failure(use.ip)
            if refusal.credential is None:
                RefusedClient.objects.record(ip=use.ip, user_agent=use.user_agent)
        except DatabaseError:
            log.error("failed authentication could not be counted")
            metrics.count_check(use.entry, kind, "unavailable")
            return service_unavailable()
    response = too_many_requests(wait) if wait else unauthorized(refusal.description, error=refusal.error)
    reason = "limit" if wait else refusal.reason
    if refusal.credential is not None:
        record_use(
            use,
            refusal.credential,
            response,
            accepted=False,
            deprecation=not refusal.like_unknown,
            reason=reason,
        )
    else:
        metrics.count_check(use.entry, kind, reason)
    if refusal.legacy:
        response["Link"] = MIGRATION_LINK
    return response


def record_use(use, credential, response, *, accepted, deprecation=True, reason="insufficient_scope"):
    """Record the use, mark legacy-key and rotating-token responses deprecated; return the response.

    A refused use is counted with its *reason* (by default: a permission the token lacks).
    """
    metrics.count_check(use.entry, credential.method, metrics.ACCEPTED if accepted else reason)
    now = timezone.now()
    if credential.method == Method.LEGACY_KEY and deprecation:
        _deprecation_headers(response, credential)
    elif credential.rotation_ends_at is not None and credential.rotation_ends_at > now:
        _rotation_headers(response, credential)
    user_agent = use.user_agent or ""
    fields = {
        "token_id": credential.token_id,
        "legacy_key_id": credential.legacy_key_id,
        "user_id": credential.user.pk,
        "at": now,
        "accepted": accepted,
        "method": use.method,
        "path": use.path,
        "status": response.status_code,
        "ip": use.ip,
        "user_agent": user_agent,
        "duration_ms": (time.perf_counter() - use.started) * 1000,
        "would_refuse": accepted and credential.would_refuse,
    }
    try:
        # Asked before the record is written, so that this request's own record is not "seen" yet;
        # two first requests at once both find the address new and write one event (its unique key).
        new_address = accepted and is_new_address(
            token_id=credential.token_id,
            legacy_key_id=credential.legacy_key_id,
            ip=use.ip,
            last_ip=credential.last_used_ip,
        )
        if accepted and _marks_use(credential, now):
            # The rare request that writes the credential's row (its first use; a key's first use
            # of the day) writes it and the record together, or neither.
            if record_with(partial(_mark_use, credential, now, use.ip), **fields):
                _use_event(credential, now, use.ip)
        else:
            record(**fields)
        if new_address:
            # The mail goes out later, from manage.py send_alerts.
            record_new_address(
                token_id=credential.token_id,
                legacy_key_id=credential.legacy_key_id,
                user_id=credential.user.pk,
                ip=use.ip,
                at=now,
                user_agent=user_agent,
            )
    except DatabaseError:
        log.error("usage record could not be written")
        # An accepted request that cannot be recorded is not served; a refusal stays a refusal.
        return service_unavailable() if accepted else response
    return response


# The first use of a token, and a legacy key's first use each day, write the credential's row and
# an event: the lookup read last_used_at, which the request path sets only then (the summariser
# moves it forward later), and the UPDATE that still finds it unset is the one that writes the event.
def _marks_use(credential, now):
    if credential.method == Method.BEARER:
        return credential.first_use
    return credential.last_used_at is None or credential.last_used_at.date() < now.date()


def _mark_use(credential, now, ip):
    if credential.method == Method.BEARER:
        return Token.objects.mark_first_use(credential.id, at=now, ip=ip)
    return LegacyApiKey.objects.mark_first_use_of_day(credential.id, at=now, ip=ip)


def _use_event(credential, now, ip):
    first_use = credential.method == Method.BEARER
    event = TokenEvent(
        user_id=credential.user.pk,
        token_id=credential.token_id,
        legacy_key_id=credential.legacy_key_id,
        kind=TokenEvent.Kind.FIRST_USED if first_use else TokenEvent.Kind.LEGACY_USED,
        at=now,
        ip=ip,
        # A legacy key's use is an event once a day: the day is part of the event's unique key.
        detail="" if first_use else now.date().isoformat(),
    )
    TokenEvent.objects.bulk_create([event], ignore_conflicts=True)


def _rotation_headers(response, credential):
    # A token in its rotation overlap: the client learns from any response that its value was
    # replaced (RFC 9745 Deprecation: when), that it stops (RFC 8594 Sunset: when) and where to look.
    response["Deprecation"] = f"@{int(credential.rotated_at.timestamp())}"
    response["Sunset"] = http_date(credential.rotation_ends_at.timestamp())
    page = reverse("tokens:detail", args=[credential.id])
    response["Link"] = f'<{page}>; rel="deprecation"; type="text/html"'


def _deprecation_headers(response, credential):
    # RFC 9745: Deprecation is "@" + Unix time; RFC 8594: Sunset is an HTTP date.
    if credential.deprecated_at is not None:
        response["Deprecation"] = f"@{int(credential.deprecated_at.timestamp())}"
    if credential.sunset_at is not None:
        response["Sunset"] = http_date(credential.sunset_at.timestamp())
    response["Link"] = MIGRATION_LINK
