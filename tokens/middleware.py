"""Middleware: API authentication and usage recording, fail-closed database errors, the CSP header."""

import logging
import time
from functools import partial

from django.db import DatabaseError
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from django.utils.http import http_date
from django.utils.translation import gettext as _

from .api.errors import api_error, service_unavailable, unauthorized
from .auth import AuthError, authenticate
from .constants import API_PREFIX, MIGRATION_GUIDE_PATH
from .http import client_ip
from .models import LegacyApiKey, Token, TokenEvent, UsageRecord

log = logging.getLogger(__name__)

PUBLIC_API_PATHS = frozenset({"/api/openapi.json"})
MIGRATION_LINK = f'<{MIGRATION_GUIDE_PATH}>; rel="deprecation"; type="text/plain"'

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

    Sets ``request.user`` to the credential's owner and ``request.auth`` to the Authentication (None for
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
        return self._finish(request, credential, response, started, accepted=True)

    def _finish(self, request, credential, response, started, *, accepted):
        """Record the use, mark legacy-key responses deprecated; return the response to send."""
        if credential.method == "legacy_key":
            self._deprecation_headers(response, credential)
        now = timezone.now()
        ip = client_ip(request)
        try:
            fields = {
                "token_id": credential.id if credential.method == "bearer" else None,
                "legacy_key_id": credential.id if credential.method == "legacy_key" else None,
                "user_id": credential.user.pk,
                "at": now,
                "accepted": accepted,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "ip": ip,
                "user_agent": request.META.get("HTTP_USER_AGENT", ""),
                "duration_ms": (time.perf_counter() - started) * 1000,
            }
            if accepted and self._marks_use(credential, now):
                # The rare request that writes the credential's row (its first use; a key's first use
                # of the day) writes it and the record together, or neither.
                if UsageRecord.objects.record_with(partial(self._mark_use, credential, now), **fields):
                    self._use_event(credential, now, ip)
            else:
                UsageRecord.objects.record(**fields)
        except DatabaseError:
            log.error("usage record could not be written")
            # An accepted request that cannot be recorded is not served; a refusal stays a refusal.
            return service_unavailable() if accepted else response
        return response

    # The first use of a token, and a legacy key's first use each day, write the credential's row and
    # an event: the lookup read last_used_at, which the request path sets only then (the summariser
    # moves it forward later), and the UPDATE that still finds it unset is the one that writes the event.
    @staticmethod
    def _marks_use(credential, now):
        if credential.method == "bearer":
            return credential.first_use
        return credential.last_used_at is None or credential.last_used_at.date() < now.date()

    @staticmethod
    def _mark_use(credential, now):
        if credential.method == "bearer":
            return Token.objects.mark_first_use(credential.id, at=now)
        return LegacyApiKey.objects.mark_first_use_of_day(credential.id, at=now)

    @staticmethod
    def _use_event(credential, now, ip):
        if credential.method == "bearer":
            event = TokenEvent(
                user_id=credential.user.pk, token_id=credential.id, kind=TokenEvent.Kind.FIRST_USED, at=now,
                ip=ip,
            )
        else:
            event = TokenEvent(
                user_id=credential.user.pk, legacy_key_id=credential.id, kind=TokenEvent.Kind.LEGACY_USED,
                at=now, ip=ip, detail=now.date().isoformat(),
            )
        TokenEvent.objects.bulk_create([event], ignore_conflicts=True)

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
