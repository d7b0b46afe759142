"""Middleware: API authentication (over ``uses.py``), fail-closed database errors, the CSP header."""

import logging

from django.conf import settings
from django.db import DatabaseError
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from . import metrics
from .constants import API_PREFIX, FORWARD_AUTH_PATH
from .errors import api_error, service_unavailable, unauthorized
from .identity import provider as identity_provider
from .models import RehearsedSessionRequest, SitePolicy
from .uses import Use, authenticate_use, record_use

log = logging.getLogger(__name__)

# Open to anyone, and no credential sent along is ever looked at (a read-only, revoked or made-up one
# changes nothing: no 401, 403 or 429 from here, no use recorded): the document, the two ways to report
# a leaked credential (whoever finds one must be able to kill it; GitHub's requests are signed instead),
# and the token exchange, whose proof is the job's own token in the body (tokens/api/federation.py).
PUBLIC_API_PATHS = frozenset(
    {"/api/openapi.json", "/api/credentials/revoke", "/api/secret-scanning/github", "/api/token-exchange"}
)


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
        use = Use.of(request)
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
                session_verdict = SitePolicy.session_verdict()
            except DatabaseError:
                return service_unavailable()
            if session_verdict.refusal is not None:
                return unauthorized(session_verdict.refusal)

        response = self._as_json_error(self.get_response(request))
        if credential is None:
            if session_verdict is not None and session_verdict.would_refuse:
                return self._record_rehearsed_session(request, use, response)
            return response
        # A view's 403 for a permission the token lacks is a refused use, like the refusals above.
        accepted = not getattr(response, "refused_use", False)
        return record_use(use, credential, response, accepted=accepted)

    @staticmethod
    def _record_rehearsed_session(request, use, response):
        """Record a session request the rehearsed ``bearer_only`` would refuse; return the response."""
        try:
            RehearsedSessionRequest.objects.record(
                user_id=request.user.pk,
                at=timezone.now(),
                method=use.method,
                path=use.path,
                ip=use.ip,
                user_agent=use.user_agent or "",
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
