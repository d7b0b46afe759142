"""Middleware: API authentication and usage recording, fail-closed database errors, the CSP header."""

import logging
import time

from django.db import DatabaseError
from django.http import JsonResponse
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from django.utils.http import http_date
from django.utils.translation import gettext as _

from .auth import AuthError, Refused, authenticate, client_ip
from .constants import API_REALM, MIGRATION_GUIDE_PATH
from .models import TokenEvent, UsageRecord

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
PUBLIC_API_PATHS = frozenset({"/api/openapi.json"})
MIGRATION_LINK = f'<{MIGRATION_GUIDE_PATH}>; rel="deprecation"; type="text/plain"'

ERROR_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "insufficient_scope",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "server_error",
    503: "service_unavailable",
}


def api_error(status, detail, *, error=None, **extra):
    """Return the JSON error body every /api/ error uses: {"error", "detail"} (+ "fields" on 400)."""
    body = {"error": error or ERROR_CODES.get(status, "error"), "detail": str(detail), **extra}
    return JsonResponse(body, status=status)


def _challenge(error=None, description=None):
    parts = [f'Bearer realm="{API_REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        # RFC 6750 limits the description to printable ASCII without quotes or backslashes.
        safe = "".join(c for c in str(description) if 0x20 <= ord(c) < 0x7F and c not in '"\\')
        parts.append(f'error_description="{safe}"')
    return ", ".join(parts)


def unauthorized(detail, *, error=None):
    response = api_error(401, detail, error=error or "unauthorized")
    response["WWW-Authenticate"] = _challenge(error, detail if error else None)
    return response


def refused(refusal):
    """Return the 403 for a valid token asked to do more than it may (access, permission or address)."""
    response = api_error(403, refusal.description, error=refusal.error)
    if refusal.error == "insufficient_scope":
        challenge = f'Bearer realm="{API_REALM}", error="insufficient_scope"'
        if refusal.scope:
            challenge += f', scope="{refusal.scope}"'
        response["WWW-Authenticate"] = challenge
    return response


def service_unavailable():
    response = api_error(503, _("The service cannot reach its database. Try again shortly."))
    response["Retry-After"] = "5"
    return response


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
        if request.path_info.startswith(API_PREFIX) or request.path_info == "/healthz":
            return service_unavailable()
        response = SimpleTemplateResponse("503.html", status=503)
        response["Retry-After"] = "5"
        return response


class ApiAuthenticationMiddleware:
    """Authenticate every request under /api/ and record every use of a token or legacy key.

    Sets ``request.user`` to the credential's owner and ``request.auth`` to the Credential (None for
    a browser session). Must come after AuthenticationMiddleware, whose session user it replaces.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        started = time.perf_counter()
        request.auth = None
        try:
            credential = authenticate(request)
        except AuthError as refusal:
            response = unauthorized(refusal.description, error=refusal.error)
            if refusal.credential is not None:
                self._finish(request, refusal.credential, response, started, accepted=False)
            elif refusal.legacy:
                response["Link"] = MIGRATION_LINK
            return response
        except Refused as refusal:
            # A read-only token writing, or a token used from outside its allow-list: refused and recorded.
            return self._finish(request, refusal.credential, refused(refusal), started, accepted=False)
        except DatabaseError:
            # Fail closed: without the database nobody is authenticated, nor treated as anonymous.
            log.error("database unavailable during authentication")
            return service_unavailable()

        if credential is not None:
            request.user = credential.user
            request.auth = credential
            # A bearer token or key is not a cookie a browser sends on its own: CSRF does not apply.
            request._dont_enforce_csrf_checks = True
        elif request.path_info not in PUBLIC_API_PATHS:
            try:
                signed_in = request.user.is_authenticated
            except DatabaseError:
                return service_unavailable()
            if not signed_in:
                return unauthorized(_("Authentication credentials were not provided."))

        response = self._as_json_error(self.get_response(request))
        if credential is None:
            return response
        # A view's 403 for a permission the token lacks is a refused use, like the refusals above.
        accepted = not getattr(response, "refused_use", False)
        return self._finish(request, credential, response, started, accepted=accepted)

    def _finish(self, request, credential, response, started, *, accepted):
        """Record the use, mark legacy-key responses deprecated; return the response to send."""
        if credential.method == "legacy_key":
            self._deprecation_headers(response, credential)
        now = timezone.now()
        ip = client_ip(request)
        try:
            UsageRecord.objects.record(
                token_id=credential.id if credential.method == "bearer" else None,
                legacy_key_id=credential.id if credential.method == "legacy_key" else None,
                user_id=credential.user.pk,
                at=now,
                accepted=accepted,
                method=request.method,
                path=request.path,
                status=response.status_code,
                ip=ip,
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
            if accepted:
                self._first_events(credential, now, ip)
        except DatabaseError:
            log.error("usage record could not be written")
            # An accepted request that cannot be recorded is not served; a refusal stays a refusal.
            return service_unavailable() if accepted else response
        return response

    @staticmethod
    def _first_events(credential, now, ip):
        # Rare writes: the first use of a token, and a legacy key's first use each day.
        if credential.method == "bearer" and credential.first_use:
            TokenEvent.objects.bulk_create(
                [TokenEvent(user_id=credential.user.pk, token_id=credential.id, kind="first_used", at=now, ip=ip)],
                ignore_conflicts=True,
            )
        elif credential.method == "legacy_key" and (
            credential.last_used_at is None or credential.last_used_at.date() < now.date()
        ):
            TokenEvent.objects.bulk_create(
                [
                    TokenEvent(
                        user_id=credential.user.pk, legacy_key_id=credential.id, kind="legacy_used", at=now, ip=ip,
                        detail=now.date().isoformat(),
                    )
                ],
                ignore_conflicts=True,
            )

    @staticmethod
    def _deprecation_headers(response, credential):
        # RFC 9745: Deprecation is "@" + Unix time; RFC 8594: Sunset is an HTTP date.
        if credential.deprecated_at is not None:
            response["Deprecation"] = f"@{int(credential.deprecated_at.timestamp())}"
        if credential.sunset_at is not None:
            response["Sunset"] = http_date(credential.sunset_at.timestamp())
        response["Link"] = MIGRATION_LINK

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
        response.setdefault("Content-Security-Policy", self.POLICY)
        return response
