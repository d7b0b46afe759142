"""Middleware: API authentication and usage recording, fail-closed database errors, the CSP header."""

import logging
import time
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.template.response import SimpleTemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date
from django.utils.translation import gettext as _

from . import metrics
from .api.errors import api_error, refused, service_unavailable, too_many_requests, unauthorized
from .auth import AuthError, Refused, authenticate
from .constants import API_PREFIX, FORWARD_AUTH_PATH, LEGACY_KEY_HEADER, MIGRATION_GUIDE_PATH
from .http import client_ip
from .identity import provider as identity_provider
from .models import (
    ExpirationPolicy,
    LegacyApiKey,
    RefusedClient,
    RehearsedSessionRequest,
    Token,
    TokenEvent,
)
from .models.alerts import is_new_address, record_new_address
from .models.legacy import clean_legacy_key
from .throttle import api_client_locked, count_api_failure
from .usage.record import record, record_with

log = logging.getLogger(__name__)

# Open to anyone, and no credential sent along is ever looked at (a read-only, revoked or made-up one
# changes nothing: no 401, 403 or 429 from here, no use recorded): the document, the two ways to report
# a leaked credential (whoever finds one must be able to kill it; GitHub's requests are signed instead),
# and the token exchange, whose proof is the job's own token in the body (tokens/api/federation.py).
PUBLIC_API_PATHS = frozenset(
    {"/api/openapi.json", "/api/credentials/revoke", "/api/secret-scanning/github", "/api/token-exchange"}
)
MIGRATION_LINK = f'<{MIGRATION_GUIDE_PATH}>; rel="deprecation"; type="text/plain"'


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


class DatabaseUnavailableMiddleware:
    """Fail closed: a database error anywhere becomes a 503, never a 500 or an anonymous success."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DatabaseError):
            return None
        log.error("database unavailable: %s", type(exception).__name__)
        if request.path_info.startswith((API_PREFIX, FORWARD_AUTH_PATH)) or request.path_info in (
            "/healthz",
            "/metrics",
        ):
            return service_unavailable()
        response = SimpleTemplateResponse("503.html", status=503)
        response["Retry-After"] = "5"
        return response


@dataclass(frozen=True)
class Use:
    """What a credential is used for: the method and path recorded with the use, and when the check began.

    For the API these are the request's own. Behind forward authentication (tokens/gateway.py) they are
    the guarded request's, as a trusted proxy states them.
    """

    method: str
    path: str
    started: float
    entry: str = "api"  # where the check is asked, for the metrics: api, forward_auth, introspection…


def authenticate_use(request, use):
    """Run the API's credential checks on *request* for *use*; the API and forward authentication share them.

    Return ``(credential, None)`` for an accepted credential, ``(None, None)`` when the request carries
    none, and ``(None, response)`` for a refusal (401, 403, 429 or 503), already recorded as a use.
    """
    try:
        # A legacy key has no signature, so any value of the right shape reaches the lookup and may be
        # a guess: a client that has failed too often is stopped before it (one indexed read). Bearer
        # tokens skip this read: a guessed one fails its signature before any query.
        if _carries_a_legacy_key(request) and (wait := api_client_locked(request)):
            metrics.count_check(use.entry, "legacy_key", "limit")
            return None, too_many_requests(wait)
        credential = authenticate(request, method=use.method)
        metrics.observe_check(use.entry, use.started)
        return credential, None
    except AuthError as refusal:
        metrics.observe_check(use.entry, use.started)
        return None, refuse(request, use, refusal)
    except Refused as refusal:
        metrics.observe_check(use.entry, use.started)
        # A read-only token writing, or a token used from outside its allow-list: refused and recorded.
        response = refused(refusal)
        return None, record_use(
            request, use, refusal.credential, response, accepted=False, reason=refusal.reason
        )
    except DatabaseError:
        # Fail closed: without the database nobody is authenticated, nor treated as anonymous.
        log.error("database unavailable during authentication")
        metrics.count_check(use.entry, _kind(request), "unavailable")
        return None, service_unavailable()


def _kind(request):
    return "bearer" if request.META.get("HTTP_AUTHORIZATION") else "legacy_key"


def refuse(request, use, refusal):
    """Answer a refused credential: 401, or 429 once the client has failed too often; record it.

    Only failures write here, so a client with a valid credential never pays for the limit.
    """
    wait = None
    if refusal.looked_up:
        try:
            # Counted atomically with the attempt itself, so parallel guesses cannot pass the limit.
            wait = count_api_failure(request)
            if refusal.credential is None:
                RefusedClient.objects.record(
                    ip=client_ip(request), user_agent=request.META.get("HTTP_USER_AGENT")
                )
        except DatabaseError:
            log.error("failed authentication could not be counted")
            metrics.count_check(use.entry, "legacy_key" if refusal.legacy else "bearer", "unavailable")
            return service_unavailable()
    response = too_many_requests(wait) if wait else unauthorized(refusal.description, error=refusal.error)
    reason = "limit" if wait else refusal.reason
    if refusal.credential is not None:
        record_use(
            request,
            use,
            refusal.credential,
            response,
            accepted=False,
            deprecation=not refusal.like_unknown,
            reason=reason,
        )
    else:
        metrics.count_check(use.entry, "legacy_key" if refusal.legacy else "bearer", reason)
    if refusal.legacy:
        response["Link"] = MIGRATION_LINK
    return response


def record_use(
    request, use, credential, response, *, accepted, deprecation=True, reason="insufficient_scope"
):
    """Record the use, mark legacy-key and rotating-token responses deprecated; return the response.

    A refused use is counted with its *reason* (by default: a permission the token lacks).
    """
    metrics.count_check(use.entry, credential.method, metrics.ACCEPTED if accepted else reason)
    now = timezone.now()
    if credential.method == "legacy_key" and deprecation:
        _deprecation_headers(response, credential)
    elif credential.rotation_ends_at is not None and credential.rotation_ends_at > now:
        _rotation_headers(response, credential)
    ip = client_ip(request)
    token_id = credential.id if credential.method == "bearer" else None
    legacy_key_id = credential.id if credential.method == "legacy_key" else None
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    fields = {
        "token_id": token_id,
        "legacy_key_id": legacy_key_id,
        "user_id": credential.user.pk,
        "at": now,
        "accepted": accepted,
        "method": use.method,
        "path": use.path,
        "status": response.status_code,
        "ip": ip,
        "user_agent": user_agent,
        "duration_ms": (time.perf_counter() - use.started) * 1000,
        "would_refuse": accepted and credential.would_refuse,
    }
    try:
        # Asked before the record is written, so that this request's own record is not "seen" yet;
        # two first requests at once both find the address new and write one event (its unique key).
        new_address = accepted and is_new_address(
            token_id=token_id, legacy_key_id=legacy_key_id, ip=ip, last_ip=credential.last_used_ip
        )
        if accepted and _marks_use(credential, now):
            # The rare request that writes the credential's row (its first use; a key's first use
            # of the day) writes it and the record together, or neither.
            if record_with(partial(_mark_use, credential, now, ip), **fields):
                _use_event(credential, now, ip)
        else:
            record(**fields)
        if new_address:
            # The mail goes out later, from manage.py send_alerts.
            record_new_address(
                token_id=token_id,
                legacy_key_id=legacy_key_id,
                user_id=credential.user.pk,
                ip=ip,
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
    if credential.method == "bearer":
        return credential.first_use
    return credential.last_used_at is None or credential.last_used_at.date() < now.date()


def _mark_use(credential, now, ip):
    if credential.method == "bearer":
        return Token.objects.mark_first_use(credential.id, at=now, ip=ip)
    return LegacyApiKey.objects.mark_first_use_of_day(credential.id, at=now, ip=ip)


def _use_event(credential, now, ip):
    if credential.method == "bearer":
        event = TokenEvent(
            user_id=credential.user.pk,
            token_id=credential.id,
            kind=TokenEvent.Kind.FIRST_USED,
            at=now,
            ip=ip,
        )
    else:
        event = TokenEvent(
            user_id=credential.user.pk,
            legacy_key_id=credential.id,
            kind=TokenEvent.Kind.LEGACY_USED,
            at=now,
            ip=ip,
            detail=now.date().isoformat(),
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


class ApiAuthenticationMiddleware:
    """Authenticate every request under /api/ and record every use of a token or legacy key.

    Sets ``request.user`` to the credential's owner and ``request.auth`` to the Authentication (None for
    a browser session). Must come after AuthenticationMiddleware, whose session user it replaces
    (the system check ``tokens.E011`` refuses any other order).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        request.auth = None
        if request.path_info in PUBLIC_API_PATHS:
            return self._as_json_error(self.get_response(request))
        use = Use(method=request.method, path=request.path, started=time.perf_counter())
        session_verdict = None
        credential, refusal = authenticate_use(request, use)
        if refusal is not None:
            return refusal

        if credential is not None:
            request.user = credential.user
            request.auth = credential
            # A bearer token or key is not a cookie a browser sends on its own: CSRF does not apply.
            request._dont_enforce_csrf_checks = True
        else:
            try:
                signed_in = request.user.is_authenticated
            except DatabaseError:
                return service_unavailable()
            if not signed_in:
                metrics.count_check(use.entry, "none", "missing")
                return unauthorized(_("Authentication credentials were not provided."))
            # A browser session: the security level decides (one query, for session requests only).
            try:
                session_verdict = ExpirationPolicy.session_verdict()
            except DatabaseError:
                return service_unavailable()
            if session_verdict.refusal is not None:
                return unauthorized(session_verdict.refusal)

        response = self._as_json_error(self.get_response(request))
        if credential is None:
            if session_verdict is not None and session_verdict.would_refuse:
                return self._record_rehearsed_session(request, response)
            return response
        # A view's 403 for a permission the token lacks is a refused use, like the refusals above.
        accepted = not getattr(response, "refused_use", False)
        return record_use(request, use, credential, response, accepted=accepted)

    @staticmethod
    def _record_rehearsed_session(request, response):
        """Record a session request the rehearsed ``bearer_only`` would refuse; return the response."""
        try:
            RehearsedSessionRequest.objects.record(
                user_id=request.user.pk,
                at=timezone.now(),
                method=request.method,
                path=request.path,
                ip=client_ip(request),
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
        except DatabaseError:
            log.error("rehearsal record could not be written")
            return service_unavailable()
        return response

    @staticmethod
    def _as_json_error(response):
        """Give error responses that Django rendered as HTML (unknown URL…) the API's JSON shape."""
        if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        detail = {404: _("Not found."), 405: _("Method not allowed.")}.get(status, _("The request failed."))
        replacement = api_error(status, detail)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in response:
                replacement[header] = response[header]
        return replacement


class ContentSecurityPolicyMiddleware:
    """Send a strict Content-Security-Policy: our own scripts and styles only, no inline code."""

    POLICY = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", self.policy())
        return response

    def policy(self):
        # A form whose answer redirects to the organisation's provider (sign-out ending the provider's
        # session too) is a form-action to its origin: that origin, and no other, is allowed as well.
        if settings.OIDC_ISSUER:
            return f"{self.POLICY} {identity_provider.origin(settings.OIDC_ISSUER)}"
        return self.POLICY
